"""One manifest as ``export`` reads it: its images that have a file, their boxes, and where the bytes are.

Boxes stay in the manifests' convention here (float pixels, ``x1, y1`` inclusive, ``x2, y2``
exclusive); each writer converts to its format's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eic_builder.dataset.manifest import Manifest
from eic_builder.image_source import ImageRef


@dataclass(frozen=True)
class ExportImage:
    """An image to export: its id, size in pixels, class (or None) and where its bytes are."""

    image_id: str
    width: int
    height: int
    label: str | None
    ref: ImageRef

    @property
    def extension(self) -> str:
        """The image file's extension as the source has it (``.JPEG``, ``.jpg``, ``.png``)."""
        return os.path.splitext(self.ref.path)[1]

    @property
    def in_archive(self) -> bool:
        return self.ref.archive is not None


@dataclass(frozen=True)
class ExportBox:
    """One box: label, corners in pixels (``x1, y1`` inclusive, ``x2, y2`` exclusive), its index in the
    image's annotation."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    box_index: int


@dataclass
class ExportSplit:
    """A manifest to export, named ``name`` (its split, or its folder's name): the images with a file and
    their boxes grouped by image id, in box order."""

    name: str
    manifest: Manifest
    images: list[ExportImage]
    boxes: dict[str, list[ExportBox]] = field(default_factory=dict)
    without_file: int = 0  # annotation-only images (no image file): not exported
    boxes_without_file: int = 0
    fingerprint: str = ""  # manifest_fingerprint of the manifest read

    @property
    def directory(self) -> Path:
        return self.manifest.directory

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest.meta

    @property
    def n_boxes(self) -> int:
        return sum(len(b) for b in self.boxes.values())

    @property
    def root(self) -> str:
        """The folder the images' paths are relative to (``--root`` or the manifest's source root)."""
        return self.manifest.image_root()

    def labels(self) -> set[str]:
        """Every box label and image label of the split."""
        found = {b.label for boxes in self.boxes.values() for b in boxes}
        return found | {i.label for i in self.images if i.label is not None}


def load_split(directory: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> ExportSplit:
    """Read the manifest ``directory`` for export; images without a file are counted, not kept."""
    manifest = Manifest.open(directory, root=root,
                             box_columns=["image_id", "box_index", "label", "x1", "y1", "x2", "y2"])
    cols = manifest.images.select(["image_id", "label", "width", "height", "has_image"]).to_pydict()
    refs = manifest.refs
    images, kept = [], set()
    for image_id, label, width, height, has_image, ref in zip(cols["image_id"], cols["label"], cols["width"],
                                                             cols["height"], cols["has_image"], refs):
        if has_image and ref.path is not None:
            images.append(ExportImage(image_id, int(width), int(height), label, ref))
            kept.add(image_id)
    split = ExportSplit(manifest.name, manifest, images, without_file=len(cols["image_id"]) - len(images),
                        fingerprint=manifest.fingerprint())
    box_table = manifest.boxes
    corners = [box_table[c].to_numpy().astype(np.float32) for c in ("x1", "y1", "x2", "y2")]
    # float32 -> Python float is exact: every writer gets the manifest's values to the last bit
    columns = [box_table[name].to_pylist() for name in ("image_id", "box_index", "label")]
    for image_id, box_index, label, x1, y1, x2, y2 in zip(*columns, *(c.tolist() for c in corners)):
        if image_id in kept:
            split.boxes.setdefault(image_id, []).append(ExportBox(label, x1, y1, x2, y2, box_index))
        else:
            split.boxes_without_file += 1
    for boxes in split.boxes.values():
        boxes.sort(key=lambda box: box.box_index)
    return split
