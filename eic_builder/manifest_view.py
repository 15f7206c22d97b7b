"""The notebook API: ``eic_builder.open_manifest(DIR)``, one object for a manifest and its images.

>>> import eic_builder
>>> m = eic_builder.open_manifest("manifests/val1300")
>>> m.boxes.to_pandas().head()          # pyarrow tables; .to_pandas() for a DataFrame
>>> m.read_image(m.image_ids[0])         # a PIL image, from a loose file or an archive member alike

Boxes are in original-image pixels, ``x1, y1`` inclusive and ``x2, y2`` exclusive (the
manifests' convention, ``data_manifests/SCHEMA.md``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from eic_builder.errors import ManifestError
from eic_builder.image_source import ImageReader, ImageRef, decoding, image_refs, image_root
from eic_builder.manifest import read_manifest


class ManifestView:
    """A manifest directory opened for reading: its tables, its provenance and its images.

    ``images``, ``boxes``, ``rejects``: pyarrow tables (schemas in ``data_manifests/SCHEMA.md``);
    ``meta``: the provenance record (source root, how it was made, lineage); ``root``: the folder
    image paths are relative to (``root=`` or the one the scan recorded), checked when an image is
    first read, so a manifest whose images are elsewhere still opens for its tables.
    """

    def __init__(self, directory: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> None:
        manifest = read_manifest(directory)
        self.directory = Path(directory)
        self.images: pa.Table = manifest.images
        self.boxes: pa.Table = manifest.boxes
        self.rejects: pa.Table = manifest.rejects
        self.meta: dict[str, Any] = manifest.meta
        self._root_override = root
        self._reader: ImageReader | None = None
        self._refs: dict[str, tuple[ImageRef, bool]] | None = None

    def __repr__(self) -> str:
        return (f"ManifestView({str(self.directory)!r}: {self.images.num_rows:,} images, "
                f"{self.boxes.num_rows:,} boxes, {self.rejects.num_rows:,} rejects)")

    def __len__(self) -> int:
        return self.images.num_rows

    @property
    def image_ids(self) -> list[str]:
        """Every image id, in the manifest's order."""
        return self.images["image_id"].to_pylist()

    @property
    def root(self) -> str:
        """The image root; raises :class:`~eic_builder.errors.OptionError` when that folder is missing."""
        return image_root(self.meta, self._root_override,
                          "pass `root`=DIR (the folder the image paths are relative to)")

    def read_bytes(self, image_id: str) -> bytes:
        """The file bytes of one image (a loose file, or an archive member read at its offset)."""
        if self._refs is None:
            refs = image_refs(self.images)
            has = self.images["has_image"].to_pylist()
            self._refs = dict(zip(self.image_ids, zip(refs, has)))
        if image_id not in self._refs:
            raise ManifestError(f"image {image_id!r} is not in manifest {self.directory} "
                                f"({len(self._refs):,} images; see .image_ids)")
        ref, has_image = self._refs[image_id]
        if not has_image:
            raise ManifestError(f"image {image_id!r} of manifest {self.directory} has annotations but no image "
                                "file (has_image is false)")
        if self._reader is None:
            self._reader = ImageReader(self.root)
        return self._reader.read(ref)

    def read_image(self, image_id: str):
        """One image as a loaded RGB ``PIL.Image.Image`` (its size is the manifest's width x height)."""
        from PIL import Image

        data = self.read_bytes(image_id)
        ref = self._refs[image_id][0] if self._refs else None
        what = f"image {image_id!r} ({ref.path if ref else '?'}) of manifest {self.directory}"
        with decoding(what), Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")

    def close(self) -> None:
        """Close the archives kept open for reading."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> ManifestView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_manifest(directory: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> ManifestView:
    """Open the manifest directory ``directory`` (see :class:`ManifestView`); ``root`` overrides the image root."""
    return ManifestView(directory, root)
