"""Scan one unit of work (a class folder, or a chunk of a flat folder) into manifest rows.

Runs in worker processes. A unit's result is written as a small manifest
directory of its own, so an interrupted scan resumes without redoing the units
that finished.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eic_builder.boxes import box_flags, clip_to_image, geometry_problem, resize_scale
from eic_builder.dataset.manifest import write_manifest
from eic_builder.dataset.rows import BoxRow, ImageRow, RejectRow, columns, rows_table
from eic_builder.dataset.tables import to_table
from eic_builder.errors import EICError
from eic_builder.imagesize import (
    image_header_of_bytes,
    read_image_header,
    verify_image,
    verify_image_bytes,
)
from eic_builder.rejects import Rejected
from eic_builder.scan.annotations import RawAnnotation, is_wnid, parse_xml
from eic_builder.scan.archives import ImageProbe, strip_archive_suffix
from eic_builder.scan.hub import image_id_of
from eic_builder.scan.layout import WNID_FORMATS
from eic_builder.scan.samples import SampleFacts, class_of


@dataclass(frozen=True)
class ScanConfig:
    """Settings shared by every unit of one scan."""

    root: str
    fmt: str  # resolved format: ilsvrc-xml | voc-xml | loc-csv | coco
    split: str
    verify_images: bool
    images_expected: bool
    known_wnids: frozenset[str] | None = None  # when set, box wnids must be among these
    hash_files: bool = False  # read loose image files whole and record their SHA-1
    synsets: tuple[str, ...] | None = None  # a webdataset .cls index -> wnid, in index order


@dataclass
class ScanItem:
    """One image to scan: its file and/or its annotation (an XML to parse, or pre-parsed).

    Archive members come with their image already probed (``probe``) and their XML as bytes (``ann_bytes``).
    """

    image_id: str
    image_rel: str | None
    ann_rel: str | None
    pre: RawAnnotation | None = None
    probe: ImageProbe | None = None
    ann_bytes: bytes | None = None
    sample: SampleFacts | None = None  # a webdataset shard's .json/.cls of this image


@dataclass
class _Rows:
    """The rows of one unit, made one at a time, turned into columns once per unit."""

    images: list[ImageRow] = field(default_factory=list)
    boxes: list[BoxRow] = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)

    def reject(self, path: str, image_id: str | None, level: str, reason: str, detail: str) -> None:
        self.rejects.append(RejectRow(path, image_id, level, reason, detail))


def _folder_label(rel: str | None) -> str | None:
    """The wnid of the folder (or per-synset archive, ``n01440764.tar``) that holds ``rel``."""
    if rel is None or "/" not in rel:
        return None
    return _wnid_of_folder(rel.rsplit("/", 2)[-2])


@functools.lru_cache(maxsize=4096)
def _wnid_of_folder(name: str) -> str | None:
    parent = strip_archive_suffix(name)
    return parent if is_wnid(parent) else None


def _read_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    finally:
        os.close(fd)


XML_FORMATS = ("ilsvrc-xml", "voc-xml")
MAX_STATED_SIDE = 2**31 - 1  # pixels: the most an image header (PNG) can state, and the int32 columns hold


def _box_text(index: int, box: tuple, width: int, height: int) -> str:
    label, x1, y1, x2, y2 = box
    return f"box {index} {label} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) in {width}x{height}"


def _annotation(item: ScanItem, cfg: ScanConfig, rows: _Rows) -> tuple[RawAnnotation | None, str | None]:
    """The item's annotation and its path: the one parsed by the layout, or its XML parsed here (a
    malformed or unreadable one becomes a reject row and no annotation); a stated size beyond what an
    image header can state is dropped (one reject row), its boxes kept."""
    ann, ann_path = item.pre, item.ann_rel
    if cfg.fmt in XML_FORMATS and ann_path is not None:
        try:
            data = item.ann_bytes if item.ann_bytes is not None else _read_file(f"{cfg.root}/{ann_path}")
            ann = parse_xml(data, "voc" if cfg.fmt == "voc-xml" else "ilsvrc")
        except Rejected as exc:
            rows.reject(ann_path, item.image_id, "file", exc.reason, exc.detail)
            return None, None
        except OSError as exc:
            rows.reject(ann_path, item.image_id, "file", "unreadable", str(exc))
            return None, None
    if ann is not None and not all(v is None or 0 < v <= MAX_STATED_SIDE for v in (ann.width, ann.height)):
        rows.reject(ann_path or "", item.image_id, "file", "malformed_size",
                    f"stated size {ann.width}x{ann.height} is beyond {MAX_STATED_SIDE:,} pixels a side; "
                    "it is left out")
        ann = RawAnnotation(None, None, ann.boxes, ann.bad_rows)
    return ann, ann_path


def _measure_image(item: ScanItem, cfg: ScanConfig) -> tuple[int, int, tuple]:
    """(width, height, (archive, offset, size, sha1)) of the item's image, from its archive probe, its
    bytes (``hash_files``) or its header; decoded whole with ``verify_images``. Raises :class:`Rejected`
    or ``OSError`` for an image that cannot be kept."""
    root, rel = cfg.root, item.image_rel
    if item.probe is not None:
        probe = item.probe
        location = (probe.archive, probe.offset, probe.size, probe.sha1)
        if probe.reason is not None:
            raise Rejected(probe.reason, probe.detail or probe.reason)
        width, height = probe.width, probe.height
        if cfg.verify_images:
            width, height = verify_image_bytes(_read_member(root, rel, probe))
        return width, height, location
    if cfg.hash_files:
        data = _read_file(f"{root}/{rel}")
        header = image_header_of_bytes(data, rel)
        size = verify_image_bytes(data) if cfg.verify_images else (header.width, header.height)
        return *size, (None, None, len(data), hashlib.sha1(data).hexdigest())
    header = read_image_header(f"{root}/{rel}")
    size = verify_image(f"{root}/{rel}") if cfg.verify_images else (header.width, header.height)
    return *size, (None, None, None, None)


def _reject_image(item: ScanItem, cfg: ScanConfig, ann: RawAnnotation | None, ann_path: str | None,
                  exc: Exception, rows: _Rows) -> None:
    """The reject rows of an image that cannot be kept: the image, and its annotation file or boxes."""
    reason = exc.reason if isinstance(exc, Rejected) else "unreadable"
    rows.reject(item.image_rel, item.image_id, "file", reason, str(exc))
    if ann_path is not None and cfg.fmt in XML_FORMATS:
        rows.reject(ann_path, item.image_id, "file", "image_rejected", f"its image {item.image_rel}: {reason}")
    elif ann is not None and ann.boxes:
        rows.reject(ann_path or "", item.image_id, "box", "image_rejected",
                    f"{len(ann.boxes)} boxes of rejected image {item.image_rel}")


def _stated_size(item: ScanItem, cfg: ScanConfig, ann: RawAnnotation | None, ann_path: str | None,
                 rows: _Rows) -> tuple[int, int] | None:
    """The size of an annotation-only image (no image file), as its annotation states it; None (and a
    reject row) when the tree should have held the image or the annotation states no size."""
    if cfg.images_expected:
        rows.reject(ann_path or "", item.image_id, "file", "image_missing",
                    "annotation without an image file in the tree")
        return None
    if ann is None or ann.width is None or ann.height is None:
        rows.reject(ann_path or "", item.image_id, "file", "no_image_size",
                    "annotation-only image whose annotation states no <size>")
        return None
    return ann.width, ann.height


def _keep_boxes(item: ScanItem, cfg: ScanConfig, ann: RawAnnotation, ann_path: str | None, width: int,
                height: int, rows: _Rows) -> tuple[int, str | None]:
    """Add the annotation's valid boxes (scaled to the stored image when the annotation states another size
    of the same picture, :func:`~eic_builder.boxes.resize_scale`; clipped to the image) and a reject row for
    each other one; returns (boxes kept, the first kept box's label)."""
    source = ann_path or ""
    for detail in ann.bad_rows:
        rows.reject(source, item.image_id, "box", "malformed_box", detail)
    sx = sy = 1.0
    if ann.width and ann.height and (ann.width, ann.height) != (width, height) and ann.boxes:
        scale = resize_scale(ann.width, ann.height, width, height)
        if scale is None:  # measured on another image: never kept, wherever it would land
            for index, box in enumerate(ann.boxes):
                rows.reject(source, item.image_id, "box", "size_mismatch",
                            f"{_box_text(index, box, ann.width, ann.height)}: the stored image is {width}x{height}, "
                            "not a resized copy of that size (aspect ratios differ by more than a pixel)")
            return 0, None
        sx, sy = scale
    check_wnid = cfg.fmt in WNID_FORMATS
    n_kept, first_label = 0, None
    for index, (label, *corners) in enumerate(ann.boxes):
        box = (label, corners[0] * sx, corners[1] * sy, corners[2] * sx, corners[3] * sy)
        problem = _box_problem(box, width, height, check_wnid, cfg.known_wnids)
        if problem is not None:
            reason, why = problem
            rows.reject(source, item.image_id, "box", reason, f"{_box_text(index, box, width, height)}: {why}")
            continue
        rows.boxes.append(BoxRow(item.image_id, index, label, label if check_wnid else None,
                                 *clip_to_image(*box[1:], width, height), width, height, sx, sy))
        n_kept += 1
        first_label = first_label if first_label is not None else label
    return n_kept, first_label


def _sample(item: ScanItem, cfg: ScanConfig, ann: RawAnnotation | None,
            rows: _Rows) -> tuple[str | None, RawAnnotation | None] | None:
    """(class, annotation) of an image of a webdataset sample: the class its metadata names, and the
    annotation given the original size the metadata states where the annotation states none (the size
    its boxes were measured on). None, with reject rows, when the metadata cannot be read."""
    facts = item.sample
    if facts is None:
        return None, ann
    if facts.boxes is not None and item.ann_rel is None and (ann is None or not (ann.boxes or ann.bad_rows)):
        # a Parquet row's own objects, where no annotation file speaks of the image
        ann = RawAnnotation(facts.box_width, facts.box_height, [(str(b[0]), *map(float, b[1:])) for b in facts.boxes],
                            list(facts.bad_boxes or ()))
    wnid, problem = class_of(facts, cfg.synsets)
    problem = facts.problem or problem
    if problem is not None:
        rows.reject(item.image_rel, item.image_id, "file", "malformed_json" if facts.problem else "unknown_class",
                    problem)
        if ann is not None and ann.boxes:
            rows.reject(item.ann_rel or "", item.image_id, "box", "image_rejected",
                        f"{len(ann.boxes)} boxes of rejected image {item.image_rel}")
        return None
    if facts.orig_width is not None and (ann is None or ann.width is None):
        boxes, bad_rows = (ann.boxes, ann.bad_rows) if ann is not None else ([], [])
        ann = RawAnnotation(facts.orig_width, facts.orig_height, boxes, bad_rows)
    return wnid, ann


def _scan_item(item: ScanItem, cfg: ScanConfig, rows: _Rows) -> None:
    """The rows of one item: its image row, its boxes, and a reject row for whatever cannot be kept."""
    ann, ann_path = _annotation(item, cfg, rows)
    sampled = _sample(item, cfg, ann, rows)
    if sampled is None:
        return
    sample_label, ann = sampled
    location: tuple = (None, None, None, None)  # archive, offset, size, sha1
    if item.image_rel is not None:
        try:
            width, height, location = _measure_image(item, cfg)
        except (Rejected, OSError) as exc:
            _reject_image(item, cfg, ann, ann_path, exc, rows)
            return
    else:
        size = _stated_size(item, cfg, ann, ann_path, rows)
        if size is None:
            return
        width, height = size
    n_kept, first_label = _keep_boxes(item, cfg, ann, ann_path, width, height, rows) if ann is not None else (0, None)
    named = image_id_of(item.image_rel)[1] if item.image_rel is not None else None  # <id>_<wnid> on the Hub
    label = sample_label or named or _folder_label(item.image_rel) or _folder_label(ann_path) or first_label
    wnid = label if label is not None and is_wnid(label) else None
    rows.images.append(ImageRow(item.image_id, cfg.split, label, wnid, item.image_rel, ann_path, width, height,
                                item.image_rel is not None, n_kept, *location,
                                ann.width if ann is not None else None, ann.height if ann is not None else None))


def _read_member(root: str, rel: str, probe: ImageProbe) -> bytes:
    from eic_builder.image_source import ImageReader, ImageRef

    reader = ImageReader(root)
    try:
        return reader.read(ImageRef(rel, probe.archive, probe.offset, probe.size))
    except EICError as exc:
        raise Rejected("unreadable", str(exc)) from exc
    finally:
        reader.close()


def _box_problem(box: tuple, width: int, height: int, check_wnid: bool,
                 known_wnids: frozenset[str] | None) -> tuple[str, str] | None:
    """Why a box (toolkit convention) cannot be kept, as (reason code, text), or None if it can."""
    label, x1, y1, x2, y2 = box
    if check_wnid:
        if not is_wnid(label):
            return "bad_wnid", f"label {label!r} is not a wnid (n + 8 digits)"
        if known_wnids is not None and label not in known_wnids:
            return "not_a_wordnet_noun", f"{label} is not a WordNet 3.0 noun"
    return geometry_problem(x1, y1, x2, y2, width, height)


def scan_items(items: list[ScanItem], cfg: ScanConfig) -> tuple:
    """Scan ``items``; return the (images, boxes, rejects) pyarrow tables."""
    rows = _Rows()
    for item in items:
        _scan_item(item, cfg, rows)
    b = columns(rows.boxes, BoxRow)
    coords = {k: np.asarray(b[k], dtype=np.float32) for k in ("x1", "y1", "x2", "y2")}
    flags = box_flags(coords["x1"], coords["y1"], coords["x2"], coords["y2"],
                      np.asarray(b.pop("image_width")), np.asarray(b.pop("image_height")),
                      scale_x=np.asarray(b.pop("scale_x")), scale_y=np.asarray(b.pop("scale_y")))
    boxes = dict(b, **coords, area_ratio=flags.area_ratio, is_small=flags.is_small, is_twisted=flags.is_twisted)
    return (rows_table("images", rows.images, ImageRow), to_table("boxes", boxes),
            rows_table("rejects", rows.rejects, RejectRow))


def inputs_digest(items: list[ScanItem], root: str) -> str:
    """A digest of what a unit's rows are made from: each loose file's size and modification time, each
    archive member's location and hash, each in-memory annotation's bytes. One stat per file."""
    h = hashlib.sha1()
    for item in items:
        # an archive member is no file: its location and hash (or its bytes) stand for it, no stat
        image_rel = item.image_rel if item.probe is None else None
        ann_rel = item.ann_rel if item.ann_bytes is None else None
        for rel in (image_rel, ann_rel):
            if rel is None:
                continue
            try:
                st = os.stat(f"{root}/{rel}")
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{rel}\0missing\n".encode())
        if item.probe is not None:
            h.update(f"{item.probe.archive}\0{item.probe.offset}\0{item.probe.size}\0{item.probe.sha1}\n".encode())
        if item.ann_bytes is not None:
            h.update(hashlib.sha1(item.ann_bytes).digest())
        if item.sample is not None:
            h.update(repr(item.sample.as_list()).encode())
    return h.hexdigest()


def scan_unit(part_dir: str, items: list[ScanItem], cfg: ScanConfig) -> tuple:
    """Scan a unit, keep its rows as a manifest directory at ``part_dir`` (for resuming, with the digest
    of its inputs), and return them: (images, boxes, rejects) tables."""
    digest = inputs_digest(items, cfg.root)  # before reading: a file changed meanwhile is not taken as done
    tables = scan_items(items, cfg)
    write_manifest(Path(part_dir), *tables, {"unit_items": len(items), "inputs": digest})
    return tables
