"""The manifest, the toolkit's one dataset object: ``eic_builder.open_manifest(DIR)``.

A manifest directory (one per split) holds three tables:

* ``images.parquet``  one row per accepted image (or annotation-only image),
* ``boxes.parquet``   one row per accepted box,
* ``rejects.parquet`` one row per refused file or box, with a reason,

each carrying the provenance record (toolkit version, command, ``source_root``, lineage). A
:class:`Manifest` holds those tables (read when first used), resolves the image root once, hands out the
one image reader and the boxes grouped by image, and derives new manifests that carry their lineage
(``filter``, ``hold-out``, ``assemble`` and the audit's exclusion make theirs with :meth:`Manifest.derive`).

>>> import eic_builder
>>> m = eic_builder.open_manifest("manifests/val1300")
>>> m.boxes.to_pandas().head()          # pyarrow tables; .to_pandas() for a DataFrame
>>> m.read_image(m.image_ids[0])         # a PIL image, from a loose file or an archive member alike

Boxes are in original-image pixels, ``x1, y1`` inclusive and ``x2, y2`` exclusive (the
manifests' convention, ``data_manifests/SCHEMA.md``).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from eic_builder.dataset.tables import derived_metadata, read_metadata, read_rows, read_table, write_table
from eic_builder.errors import ManifestError, OptionError
from eic_builder.image_source import ImageReader, ImageRef, decoding, image_refs
from eic_builder.rejects import REJECT_REASONS

ROOT_REMEDY = "give `root` DIR (the folder the manifest's image paths are relative to)"


class Manifest:
    """One manifest: its tables, its provenance, its image root and its images.

    ``images``, ``boxes``, ``rejects``: pyarrow tables (schemas in ``data_manifests/SCHEMA.md``), read from
    ``directory`` when first used; ``meta``: the provenance record (source root, how it was made,
    lineage); ``directory``: the folder it was read from (``None`` for a derived manifest not yet
    written). The image root (``root`` when given, else the ``source_root`` the scan recorded) is checked
    when first asked for, so a manifest whose images are elsewhere still opens for its tables.
    """

    def __init__(self, images: pa.Table | None, boxes: pa.Table | None, rejects: pa.Table | None,
                 meta: Mapping[str, Any], directory: str | os.PathLike[str] | None = None,
                 root: str | os.PathLike[str] | None = None, box_columns: list[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.meta: dict[str, Any] = dict(meta)
        self._tables: dict[str, pa.Table | None] = {"images": images, "boxes": boxes, "rejects": rejects}
        self._box_columns = box_columns
        self._root_override = os.fspath(root) if root else None
        self._root: str | None = None
        self._reader: ImageReader | None = None
        self._refs: list[ImageRef] | None = None
        self._index: dict[str, int] | None = None

    @classmethod
    def open(cls, directory: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
             box_columns: list[str] | None = None) -> Manifest:
        """The manifest in ``directory``, checked to be one written whole; its tables are read when first
        used (``box_columns``: only these box columns)."""
        return cls(None, None, None, manifest_meta(directory), directory, root, box_columns)

    # --- tables -------------------------------------------------------------------------------

    def _table(self, kind: str) -> pa.Table:
        table = self._tables[kind]
        if table is None:
            if self.directory is None:
                raise ManifestError(f"this manifest has no {kind} table")
            columns = self._box_columns if kind == "boxes" else None
            table = self._tables[kind] = read_table(self.directory / MANIFEST_FILES[kind], kind, columns=columns)
        return table

    @property
    def images(self) -> pa.Table:
        return self._table("images")

    @property
    def boxes(self) -> pa.Table:
        return self._table("boxes")

    @property
    def rejects(self) -> pa.Table:
        return self._table("rejects")

    def load(self) -> Manifest:
        """Read every table now (a manifest read whole, as :func:`read_manifest` gives)."""
        for kind in self._tables:
            self._table(kind)
        return self

    def read_rows(self, kind: str, keep: Callable[[pa.RecordBatch], pa.Array]) -> pa.Table:
        """The rows of table ``kind`` for which ``keep(batch)`` is true, streamed from the file (see
        :func:`~eic_builder.dataset.tables.read_rows`): a 14-million-row manifest costs the rows kept."""
        if self._tables[kind] is not None or self.directory is None:
            table = self._table(kind)
            return table.filter(keep(table))
        return read_rows(self.directory / MANIFEST_FILES[kind], kind, keep)

    def __repr__(self) -> str:
        where = str(self.directory) if self.directory is not None else "derived"
        return (f"Manifest({where!r}: {self.images.num_rows:,} images, "
                f"{self.boxes.num_rows:,} boxes, {self.rejects.num_rows:,} rejects)")

    def __len__(self) -> int:
        return self.images.num_rows

    @property
    def image_ids(self) -> list[str]:
        """Every image id, in the manifest's order."""
        return self.images["image_id"].to_pylist()

    @property
    def name(self) -> str:
        """The name it goes by in ``export`` and ``audit``: its one split, else its folder's name."""
        return manifest_name(self.directory or Path.cwd(), self.images)

    def fingerprint(self) -> str:
        """:func:`manifest_fingerprint` of its images."""
        return manifest_fingerprint(self.images)

    def boxes_by_image(self) -> dict[str, np.ndarray]:
        """Each image id with boxes -> its (N, 4) float32 array of ``x1, y1, x2, y2`` (original-image pixels,
        ``x2``/``y2`` exclusive), in the boxes table's order."""
        boxes = self.boxes
        if not boxes.num_rows:
            return {}
        ids = boxes["image_id"].to_numpy(zero_copy_only=False)
        xyxy = np.stack([boxes[c].to_numpy(zero_copy_only=False) for c in ("x1", "y1", "x2", "y2")], 1)
        order = np.argsort(ids, kind="stable")
        unique, starts = np.unique(ids[order], return_index=True)
        groups = np.split(xyxy[order].astype(np.float32), starts[1:])
        return dict(zip(unique.tolist(), groups))

    # --- images -------------------------------------------------------------------------------

    def image_root(self, remedy: str = ROOT_REMEDY) -> str:
        """The folder image paths are relative to: ``root`` or the recorded ``source_root``, resolved once.
        Raises :class:`OptionError` ending in ``remedy`` when that folder does not exist."""
        if self._root is None:
            self._root = resolve_image_root(self.meta, self._root_override, remedy)
        return self._root

    @property
    def root(self) -> str:
        """:meth:`image_root` (the name the notebook API has used)."""
        return self.image_root("pass `root`=DIR (the folder the image paths are relative to)")

    @property
    def refs(self) -> list[ImageRef]:
        """The :class:`ImageRef` of every image, in order (where its bytes lie)."""
        if self._refs is None:
            self._refs = image_refs(self.images)
        return self._refs

    def reader(self) -> ImageReader:
        """The one :class:`ImageReader` of this manifest's images (archives kept open until :meth:`close`)."""
        return self._reader_under(self.image_root())

    def _reader_under(self, root: str) -> ImageReader:
        # the root is resolved by the caller, whose wording a missing one is reported in (a stage's option,
        # or the notebook's keyword)
        if self._reader is None:
            self._reader = ImageReader(root)
        return self._reader

    def _ref_of(self, image_id: str) -> ImageRef:
        if self._index is None:
            self._index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        if image_id not in self._index:
            raise ManifestError(f"image {image_id!r} is not in manifest {self.directory} "
                                f"({len(self._index):,} images; see .image_ids)")
        i = self._index[image_id]
        if not self.images["has_image"][i].as_py():
            raise ManifestError(f"image {image_id!r} of manifest {self.directory} has annotations but no image "
                                "file (has_image is false)")
        return self.refs[i]

    def read_bytes(self, image_id: str) -> bytes:
        """The file bytes of one image (a loose file, or an archive member read at its offset)."""
        return self._reader_under(self.root).read(self._ref_of(image_id))

    def read_image(self, image_id: str):
        """One image as a loaded RGB ``PIL.Image.Image`` (its size is the manifest's width x height)."""
        from PIL import Image

        ref = self._ref_of(image_id)
        data = self._reader_under(self.root).read(ref)
        with decoding(f"image {image_id!r} ({ref.path}) of manifest {self.directory}"), \
                Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")

    def close(self) -> None:
        """Close the archives kept open for reading."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- new manifests ------------------------------------------------------------------------

    def derive(self, images: pa.Table | None = None, boxes: pa.Table | None = None, rejects: pa.Table | None = None,
               parents: Sequence[Manifest] = (), **record: Any) -> Manifest:
        """A new manifest made from this one (and ``parents``): the tables given (this one's where not),
        and a provenance record naming this command and the lineage (see
        :func:`~eic_builder.dataset.tables.derived_metadata`); ``record`` adds what the step was (its
        options). Written by :meth:`write`."""
        sources = [self, *parents]
        meta = derived_metadata({str(m.directory): m.meta for m in sources}, **record)
        return Manifest(self.images if images is None else images, self.boxes if boxes is None else boxes,
                        self.rejects if rejects is None else rejects, meta, root=self._root_override)

    def write(self, directory: str | os.PathLike[str], **record: Any) -> Path:
        """Write it to ``directory`` (see :func:`write_manifest`), ``record`` added to its provenance."""
        return write_manifest(directory, self.images, self.boxes, self.rejects, {**self.meta, **record})


def resolve_image_root(meta: Mapping[str, Any], override: str | os.PathLike[str] | None = None,
                       remedy: str = ROOT_REMEDY) -> str:
    """The folder image paths are relative to: ``override`` (``--root``) or the manifest's ``source_root``.
    ``remedy`` ends the error raised when that folder does not exist. (The one place a root is resolved:
    stages ask :meth:`Manifest.image_root`.)"""
    root = os.fspath(override) if override else str(meta.get("source_root", ""))
    if not root or not Path(root).is_dir():
        where = "given with `root`" if override else "recorded in the manifest"
        raise OptionError(f"image root {root!r} ({where}) does not exist; {remedy}")
    return root


MANIFEST_FILES = {"images": "images.parquet", "boxes": "boxes.parquet", "rejects": "rejects.parquet"}


def manifest_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record of a manifest directory, after checking it is one, written whole (its three
    files from one write); the tables are read by :func:`read_manifest` or :func:`read_rows`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ManifestError(f"manifest directory {directory} does not exist")
    missing = [name for name in MANIFEST_FILES.values() if not (directory / name).is_file()]
    if missing:
        raise ManifestError(f"{directory} is not a manifest directory: missing {', '.join(missing)}")
    meta = read_metadata(directory / MANIFEST_FILES["images"])
    for name, size in meta.get("written_with", {}).items():
        found = (directory / name).stat().st_size
        if found != size:
            raise ManifestError(f"{directory} is a mix of two writes: its {name} ({found} bytes) is not the one "
                                f"its images.parquet was written with ({size} bytes); write the manifest again")
    return meta


def read_manifest(directory: str | os.PathLike[str], box_columns: list[str] | None = None,
                  root: str | os.PathLike[str] | None = None) -> Manifest:
    """The manifest in ``directory`` with its three tables read (``box_columns``: only these box columns);
    ``root`` overrides the image root it recorded."""
    manifest = Manifest.open(directory, root=root, box_columns=box_columns)
    manifest.load()
    return manifest


def open_manifest(directory: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Manifest:
    """Open the manifest directory ``directory`` (see :class:`Manifest`); ``root`` overrides the image root.
    Its tables are read when first used."""
    return Manifest.open(directory, root=root)


FINGERPRINT_COLUMNS = ("image_id", "split", "label", "path", "archive", "offset", "size", "has_image")


def manifest_fingerprint(images: pa.Table) -> str:
    """A digest of what a manifest holds: each image's id, split, label and where its bytes lie, in order
    (16 hex digits). Two scans of the same files give the same fingerprint whatever their metadata; a
    rescan that changed any image gives another, so a stage can refuse results computed on other inputs."""
    frame = images.select(list(FINGERPRINT_COLUMNS)).to_pandas()
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha1(rows.tobytes() + str(len(frame)).encode()).hexdigest()[:16]


def manifest_name(directory: str | os.PathLike[str], images: pa.Table) -> str:
    """The name a manifest goes by in ``export`` and ``audit``: its one split, else its folder's name."""
    splits = sorted(set(images["split"].to_pylist()))
    return splits[0] if len(splits) == 1 else Path(directory).resolve().name


def check_distinct_names(named: Sequence[tuple[str, str | os.PathLike[str]]], remedy: str) -> None:
    """Raise :class:`OptionError` when two manifests of ``named`` ((name, directory) pairs) share a name;
    ``remedy`` ends the message."""
    seen: dict[str, str | os.PathLike[str]] = {}
    for name, directory in named:
        if name in seen:
            raise OptionError(f"manifests {seen[name]} and {directory} are both named {name!r} (their split); "
                              f"{remedy}")
        seen[name] = directory


def write_manifest(
    directory: str | os.PathLike[str],
    images: pa.Table,
    boxes: pa.Table,
    rejects: pa.Table,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write the three tables of a manifest directory as a whole or not at all.

    All three are written under temporary names first, so that a full disk or a kill leaves the old
    manifest as it was; then they are renamed into place, images.parquet last (its presence marks a
    complete manifest). images.parquet records the sizes of the other two, and :func:`read_manifest`
    refuses a directory whose files come from two different writes.
    """
    directory = Path(directory)
    unknown = sorted(set(rejects["reason"].to_pylist()) - REJECT_REASONS) if rejects.num_rows else []
    if unknown:  # a code nobody documented: a bug, caught before it reaches a user's table
        raise ManifestError(f"reject reason(s) {', '.join(unknown)} are not in eic_builder.rejects.REJECT_REASONS")
    meta = {k: v for k, v in (meta or {}).items() if k != "written_with"}  # a read manifest's own record
    staged = {name: directory / f".{name}.new-{os.getpid()}" for name in MANIFEST_FILES.values()}
    try:
        write_table(boxes, staged["boxes.parquet"], "boxes", meta)
        write_table(rejects, staged["rejects.parquet"], "rejects", meta)
        sizes = {name: staged[name].stat().st_size for name in ("boxes.parquet", "rejects.parquet")}
        write_table(images, staged["images.parquet"], "images", {**meta, "written_with": sizes})
        for name in ("boxes.parquet", "rejects.parquet", "images.parquet"):
            os.replace(staged[name], directory / name)
    except OSError as exc:
        raise ManifestError(f"cannot write the manifest {directory}: {exc.strerror or exc}") from exc
    finally:
        for path in staged.values():
            if path.exists():
                path.unlink()
    return directory
