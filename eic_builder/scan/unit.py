"""Scan one unit of work (a class folder, or a chunk of a flat folder) into manifest rows.

Runs in worker processes. A unit's result is written as a small manifest
directory of its own, so an interrupted scan resumes without redoing the units
that finished.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eic_builder.boxes import box_flags, clip_to_image, geometry_problem
from eic_builder.errors import EICError
from eic_builder.imagesize import (
    image_header_of_bytes,
    read_image_header,
    verify_image,
    verify_image_bytes,
)
from eic_builder.manifest import to_table, write_manifest
from eic_builder.rejects import Rejected
from eic_builder.scan.annotations import RawAnnotation, is_wnid, parse_xml
from eic_builder.scan.archives import ImageProbe, strip_archive_suffix
from eic_builder.scan.layout import WNID_FORMATS


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


IMAGE_COLUMNS = ("image_id", "split", "label", "wnid", "path", "annotation", "width", "height", "has_image",
                 "n_boxes", "archive", "offset", "size", "sha1", "ann_width", "ann_height")
BOX_COLUMNS = ("image_id", "box_index", "label", "wnid", "x1", "y1", "x2", "y2", "image_width", "image_height")
REJECT_COLUMNS = ("path", "image_id", "level", "reason", "detail")


@dataclass
class _Rows:
    """Rows as tuples (one append per row), turned into columns once per unit."""

    images: list[tuple] = field(default_factory=list)
    boxes: list[tuple] = field(default_factory=list)
    rejects: list[tuple] = field(default_factory=list)

    def reject(self, path: str, image_id: str | None, level: str, reason: str, detail: str) -> None:
        self.rejects.append((path, image_id, level, reason, detail))


def _columns(rows: list[tuple], names: tuple[str, ...]) -> dict[str, list]:
    if not rows:
        return {name: [] for name in names}
    return dict(zip(names, map(list, zip(*rows))))


def _folder_label(rel: str | None) -> str | None:
    """The wnid of the folder (or per-synset archive, ``n01440764.tar``) that holds ``rel``."""
    if rel is None or "/" not in rel:
        return None
    parent = strip_archive_suffix(rel.rsplit("/", 2)[-2])
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


MAX_STATED_SIDE = 2**31 - 1  # pixels: the most an image header (PNG) can state, and the int32 columns hold


def _box_text(index: int, box: tuple, width: int, height: int) -> str:
    label, x1, y1, x2, y2 = box
    return f"box {index} {label} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) in {width}x{height}"


def _scan_item(item: ScanItem, cfg: ScanConfig, rows: _Rows) -> None:
    root = cfg.root
    ann = item.pre
    ann_path = item.ann_rel
    xml = cfg.fmt in ("ilsvrc-xml", "voc-xml")
    if xml and ann_path is not None:
        try:
            data = item.ann_bytes if item.ann_bytes is not None else _read_file(f"{root}/{ann_path}")
            ann = parse_xml(data, "voc" if cfg.fmt == "voc-xml" else "ilsvrc")
        except Rejected as exc:
            rows.reject(ann_path, item.image_id, "file", exc.reason, exc.detail)
            ann, ann_path = None, None
        except OSError as exc:
            rows.reject(ann_path, item.image_id, "file", "unreadable", str(exc))
            ann, ann_path = None, None

    if ann is not None and not all(v is None or 0 < v <= MAX_STATED_SIDE for v in (ann.width, ann.height)):
        # a size no image has (and no int32 column holds): one reject row, the annotation's boxes kept
        rows.reject(ann_path or "", item.image_id, "file", "malformed_size",
                    f"stated size {ann.width}x{ann.height} is beyond {MAX_STATED_SIDE:,} pixels a side; "
                    "it is left out")
        ann = RawAnnotation(None, None, ann.boxes, ann.bad_rows)

    location: tuple = (None, None, None, None)  # archive, offset, size, sha1
    if item.image_rel is not None:
        try:
            if item.probe is not None:
                probe = item.probe
                location = (probe.archive, probe.offset, probe.size, probe.sha1)
                if probe.reason is not None:
                    raise Rejected(probe.reason, probe.detail or probe.reason)
                width, height = probe.width, probe.height
                if cfg.verify_images:
                    width, height = verify_image_bytes(_read_member(root, item.image_rel, probe))
            elif cfg.hash_files:
                data = _read_file(f"{root}/{item.image_rel}")
                location = (None, None, len(data), hashlib.sha1(data).hexdigest())
                header = image_header_of_bytes(data, item.image_rel)
                width, height = header.width, header.height
                if cfg.verify_images:
                    width, height = verify_image_bytes(data)
            else:
                header = read_image_header(f"{root}/{item.image_rel}")
                width, height = header.width, header.height
                if cfg.verify_images:
                    width, height = verify_image(f"{root}/{item.image_rel}")
        except (Rejected, OSError) as exc:
            reason = exc.reason if isinstance(exc, Rejected) else "unreadable"
            rows.reject(item.image_rel, item.image_id, "file", reason, str(exc))
            if ann_path is not None and xml:
                rows.reject(ann_path, item.image_id, "file", "image_rejected", f"its image {item.image_rel}: {reason}")
            elif ann is not None and ann.boxes:
                rows.reject(ann_path or "", item.image_id, "box", "image_rejected",
                            f"{len(ann.boxes)} boxes of rejected image {item.image_rel}")
            return
    else:
        if cfg.images_expected:
            rows.reject(ann_path or "", item.image_id, "file", "image_missing",
                        "annotation without an image file in the tree")
            return
        if ann is None or ann.width is None or ann.height is None:
            rows.reject(ann_path or "", item.image_id, "file", "no_image_size",
                        "annotation-only image whose annotation states no <size>")
            return
        width, height = ann.width, ann.height

    n_kept = 0
    first_label = None
    if ann is not None:
        source = ann_path or ""
        for detail in ann.bad_rows:
            rows.reject(source, item.image_id, "box", "malformed_box", detail)
        check_wnid = cfg.fmt in WNID_FORMATS
        for index, box in enumerate(ann.boxes):
            problem = _box_problem(box, width, height, check_wnid, cfg.known_wnids)
            if problem is not None:
                reason, why = problem
                rows.reject(source, item.image_id, "box", reason, f"{_box_text(index, box, width, height)}: {why}")
                continue
            label, x1, y1, x2, y2 = box
            rows.boxes.append((item.image_id, index, label, label if check_wnid else None,
                               *clip_to_image(x1, y1, x2, y2, width, height), width, height))
            n_kept += 1
            if first_label is None:
                first_label = label

    label = _folder_label(item.image_rel) or _folder_label(ann_path) or first_label
    rows.images.append((item.image_id, cfg.split, label, label if label is not None and is_wnid(label) else None,
                        item.image_rel, ann_path, width, height, item.image_rel is not None, n_kept, *location,
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
    b = _columns(rows.boxes, BOX_COLUMNS)
    coords = {k: np.asarray(b[k], dtype=np.float32) for k in ("x1", "y1", "x2", "y2")}
    flags = box_flags(coords["x1"], coords["y1"], coords["x2"], coords["y2"],
                      np.asarray(b.pop("image_width")), np.asarray(b.pop("image_height")))
    boxes = dict(b, **coords, area_ratio=flags.area_ratio, is_small=flags.is_small, is_twisted=flags.is_twisted)
    return (to_table("images", _columns(rows.images, IMAGE_COLUMNS)), to_table("boxes", boxes),
            to_table("rejects", _columns(rows.rejects, REJECT_COLUMNS)))


def inputs_digest(items: list[ScanItem], root: str) -> str:
    """A digest of what a unit's rows are made from: each loose file's size and modification time, each
    archive member's location and hash, each in-memory annotation's bytes. One stat per file."""
    h = hashlib.sha1()
    for item in items:
        for rel in (item.image_rel, item.ann_rel):
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
    return h.hexdigest()


def scan_unit(part_dir: str, items: list[ScanItem], cfg: ScanConfig) -> tuple:
    """Scan a unit, keep its rows as a manifest directory at ``part_dir`` (for resuming, with the digest
    of its inputs), and return them: (images, boxes, rejects) tables."""
    digest = inputs_digest(items, cfg.root)  # before reading: a file changed meanwhile is not taken as done
    tables = scan_items(items, cfg)
    write_manifest(Path(part_dir), *tables, {"unit_items": len(items), "inputs": digest})
    return tables
