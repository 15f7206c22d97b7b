"""Images and boxes of a manifest, resized for the RPN.

An image is resized so that its shorter side is ``scale`` pixels (its longer
side at most ``max_size``), normalised with the ImageNet mean/std, and a batch
is zero-padded to a common size that is a multiple of 32. Boxes follow the
resize; they stay in the toolkit's convention (x1, y1, x2, y2 float pixels).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from eic_builder.boxes import flip_horizontally, scale_boxes
from eic_builder.dataset.manifest import Manifest
from eic_builder.errors import OptionError
from eic_builder.image_batches import bytes_tensor, decode_cpu, normalise
from eic_builder.image_source import ImageReader, ImageRef, decoding


@dataclass(frozen=True)
class Record:
    """One image of a manifest with its boxes (G, 4) in original pixels."""

    image_id: str
    ref: ImageRef  # where the image's bytes are (a file, or an archive member)
    label: str | None
    width: int
    height: int
    boxes: torch.Tensor


def load_records(manifest_dir: str | os.PathLike[str],
                 root: str | os.PathLike[str] | None = None) -> tuple[list[Record], str]:
    """Records of the images that have files and boxes, and the image root (``root`` or the scan's)."""
    manifest = Manifest.open(manifest_dir, root=root)
    by_image = manifest.boxes_by_image()
    rows = manifest.images.select(["image_id", "label", "width", "height", "has_image"]).to_pylist()
    records = [Record(row["image_id"], ref, row["label"], row["width"], row["height"],
                      torch.from_numpy(by_image[row["image_id"]]))
               for row, ref in zip(rows, manifest.refs) if row["has_image"] and row["image_id"] in by_image]
    if not records:
        raise OptionError(f"manifest {manifest_dir} has no images with files and boxes")
    return records, manifest.image_root()


def resized_size(width: int, height: int, scale: int, max_size: int) -> tuple[int, int]:
    """(new width, new height): the shorter side ``scale`` and the longer at most ``max_size``, rounded."""
    factor = scale / min(width, height)
    if max(width, height) * factor > max_size:
        factor = max_size / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def read_rgb(reader: ImageReader, ref: ImageRef) -> torch.Tensor:
    """(3, H, W) uint8 RGB of the image ``ref`` (JPEG, PNG; grayscale and CMYK converted)."""
    data = reader.read(ref)
    with decoding(f"image {ref.path} under {reader.root}"):
        return decode_cpu(bytes_tensor(data))


def prepare(image: torch.Tensor, scale: int, max_size: int) -> tuple[torch.Tensor, tuple[float, float]]:
    """uint8 (3, H, W) -> normalised float (3, h, w) at ``scale``, and the resize factors (w / W, h / H),
    one per axis since each side is rounded on its own (:func:`eic_builder.boxes.scale_boxes`)."""
    from torchvision.transforms.v2 import functional as F  # noqa: N812 - torchvision's own idiom

    _, h, w = image.shape
    nw, nh = resized_size(w, h, scale, max_size)
    return normalise(F.resize(image, [nh, nw], antialias=True).float() / 255.0), (nw / w, nh / h)


class DetectionDataset(Dataset):
    """Indexed by (record index, scale) or (record index, scale, flip): (image (3, h, w), boxes (G, 4)
    resized, and mirrored left-right with the image when ``flip``, index)."""

    def __init__(self, records: list[Record], root: str, max_size: int = 1400) -> None:
        self.records, self.reader, self.max_size = records, ImageReader(root), max_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, scale, *flip = key
        record = self.records[index]
        image, (fx, fy) = prepare(read_rgb(self.reader, record.ref), scale, self.max_size)
        boxes = scale_boxes(record.boxes, fx, fy)
        if flip and flip[0]:
            image, boxes = image.flip(-1), flip_horizontally(boxes, image.shape[-1])
        return image, boxes, index


def pad_batch(images: list[torch.Tensor], multiple: int = 32) -> torch.Tensor:
    """Zero-pad images to a common (H, W), multiples of ``multiple``: (B, 3, H, W)."""
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    h, w = math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple
    out = images[0].new_zeros(len(images), 3, h, w)
    for k, im in enumerate(images):
        out[k, :, : im.shape[1], : im.shape[2]] = im
    return out


def collate(batch: list[tuple[torch.Tensor, torch.Tensor, int]]) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """(padded images, list of box tensors, record indices)."""
    return pad_batch([b[0] for b in batch]), [b[1] for b in batch], [b[2] for b in batch]
