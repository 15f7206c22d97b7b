"""The images an audit compares: every image with a file, of every manifest, in one numbered list.

Image ``i`` of the catalog is row ``i`` of each per-image array; manifests keep the order given,
images their manifest's order, so ``i < j`` orders each pair the same way on every run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from eic_builder.dataset.manifest import Manifest, check_distinct_names
from eic_builder.errors import OptionError
from eic_builder.image_source import ImageReader, ImageRef

T = TypeVar("T")
_readers: dict[str, ImageReader] = {}  # in a worker process: one reader per image root, kept across tasks


@dataclass
class Catalog:
    """Images of several manifests: ``names[k]``/``directories[k]`` name manifest ``k``; per image ``i``:
    ``manifest[i]`` (its manifest's number), ``split``, ``image_id``, ``label``, ``ref``, ``sha1`` and
    ``sizes[i]`` (width, height in pixels, as scanned)."""

    names: list[str] = field(default_factory=list)
    directories: list[Path] = field(default_factory=list)
    manifests: list[Manifest] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)  # manifest_fingerprint of each manifest, as read
    manifest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    split: list[str] = field(default_factory=list)
    image_id: list[str] = field(default_factory=list)
    label: list[str | None] = field(default_factory=list)
    ref: list[ImageRef] = field(default_factory=list)
    sha1: list[str | None] = field(default_factory=list)
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    without_file: int = 0

    def __len__(self) -> int:
        return len(self.image_id)

    def root_of(self, k: int) -> str:
        """The image root of manifest ``k`` (raises a one-line error when it is missing)."""
        return self.manifests[k].image_root()

    def open_readers(self, rows) -> None:
        """Open the readers of the manifests of catalog ``rows`` before :meth:`read_bytes` is called from
        threads, so that threads share one reader per manifest instead of racing to open one."""
        for k in sorted({int(self.manifest[i]) for i in rows}):
            self.manifests[k].reader()

    def read_bytes(self, i: int) -> bytes:
        """The file bytes of catalog image ``i`` (a loose file or an archive member)."""
        return self.manifests[int(self.manifest[i])].reader().read(self.ref[i])

    def close(self) -> None:
        """Close the archives :meth:`read_bytes` kept open."""
        for manifest in self.manifests:
            manifest.close()

    def rows_by_root(self, rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Catalog ``rows`` (sorted) grouped by manifest, in manifest order, each with its image root."""
        return [(self.root_of(k), mine) for k in range(len(self.names)) if len(mine := rows[self.manifest[rows] == k])]

    def index_of(self, k: int) -> dict[str, int]:
        """Image id -> catalog index, for the images of manifest ``k``."""
        rows = np.flatnonzero(self.manifest == k)
        return {self.image_id[i]: int(i) for i in rows}


def load_catalog(directories: Sequence[str | os.PathLike[str]],
                 root: str | os.PathLike[str] | None = None) -> Catalog:
    """Read the manifests ``directories`` (each named by :func:`manifest_name`; names must differ)."""
    if not directories:
        raise OptionError("give at least one MANIFEST directory to audit")
    cat = Catalog()
    manifests, sizes = [], []
    for k, directory in enumerate(directories):
        manifest = Manifest.open(directory, root=root, box_columns=["image_id"])
        cat.names.append(manifest.name)
        cat.directories.append(Path(directory).resolve())
        check_distinct_names(list(zip(cat.names, directories)), "audit manifests of different names")
        cat.manifests.append(manifest)
        cat.fingerprints.append(manifest.fingerprint())
        cols = manifest.images.select(["image_id", "split", "label", "sha1", "has_image", "width",
                                       "height"]).to_pydict()
        refs = manifest.refs
        keep = [i for i, has in enumerate(cols["has_image"]) if has and refs[i].path is not None]
        cat.without_file += len(refs) - len(keep)
        manifests.append(np.full(len(keep), k, dtype=np.int32))
        cat.split += [cols["split"][i] for i in keep]
        cat.image_id += [cols["image_id"][i] for i in keep]
        cat.label += [cols["label"][i] for i in keep]
        cat.sha1 += [cols["sha1"][i] for i in keep]
        cat.ref += [refs[i] for i in keep]
        rows = np.asarray(keep, dtype=np.int64)
        sizes.append(np.stack([np.asarray(cols["width"], dtype=np.int64)[rows],
                               np.asarray(cols["height"], dtype=np.int64)[rows]], axis=1).reshape(-1, 2))
    cat.manifest = np.concatenate(manifests) if manifests else cat.manifest
    cat.sizes = np.concatenate(sizes) if sizes else cat.sizes
    return cat


def decode_refs(root: str, refs: list[ImageRef], decode: Callable[[bytes], T]) -> list[T | None]:
    """``decode`` of the bytes of each image ``refs`` under ``root`` (a worker process's task; its reader of
    ``root`` is kept for the next task); None where Pillow cannot decode the bytes. A missing image or
    archive is the user's to fix: raised, one line."""
    reader = _readers.get(root)
    if reader is None:
        reader = _readers[root] = ImageReader(root)
    out: list[T | None] = []
    for ref in refs:
        data = reader.read(ref)
        try:
            out.append(decode(data))
        except (OSError, ValueError, SyntaxError):  # bytes Pillow cannot decode: counted by the caller
            out.append(None)
    return out
