"""Loading and preprocessing images (or box crops) for VGG-16, two ways.

* ``pil`` (the reference, torchvision's classic ImageNet recipe): Pillow decodes,
  ``Resize(256)`` (shorter side, bilinear, antialiased), ``CenterCrop(224)``,
  ``ToTensor``, ``Normalize`` with the ImageNet mean/std, all on the CPU in
  DataLoader workers.
* ``tensor`` (the fast path): workers only read the file bytes;
  ``torchvision.io.decode_jpeg`` decodes a whole batch on the target device
  (nvJPEG on a GPU), and resize / crop / normalise run as tensor ops there. On
  the CPU the same code decodes in the workers. Files nvJPEG cannot take (PNG,
  CMYK) fall back to a CPU decode.

Box crops (``on="box"``) take the box (toolkit convention, pixels) from the
decoded image and warp it to ``crop x crop`` (R-CNN style), in both ways.
Output tensors are float32, shape (3, crop, crop), normalised.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from eic_builder.errors import FormatError
from eic_builder.image_source import ImageReader, ImageRef
from eic_builder.imagesize import image_header_of_bytes
from eic_builder.rejects import Rejected

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FeatureItem:
    """One thing to embed: an image (``box`` None) or a box of it (x1, y1, x2, y2 pixels)."""

    image_id: str
    box_index: int
    label: str | None
    ref: ImageRef  # where its bytes are: a file, or a member of an archive
    box: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class Preprocess:
    """Sizes of the recipe: shorter side resized to ``resize``, centre crop ``crop`` (box crops: warped to crop)."""

    resize: int = 256
    crop: int = 224


def box_pixels(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Whole-pixel bounds (left, top, right, bottom; right/bottom exclusive) covering a box."""
    import math

    x1, y1, x2, y2 = box
    left, top = math.floor(x1), math.floor(y1)
    return left, top, max(left + 1, math.ceil(x2)), max(top + 1, math.ceil(y2))


def normalise(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) floats in [0, 1] -> ImageNet mean/std normalised, on the same device."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def preprocess_uint8(image: torch.Tensor, box: tuple[float, float, float, float] | None,
                     pp: Preprocess) -> torch.Tensor:
    """(3, H, W) uint8 on any device -> (3, crop, crop) float32 normalised, on the same device."""
    from torchvision.transforms.v2 import functional as F  # noqa: N812 - torchvision's own idiom

    if box is not None:
        left, top, right, bottom = box_pixels(box)
        image = F.crop(image, top, left, bottom - top, right - left)
        image = F.resize(image, [pp.crop, pp.crop], antialias=True)
    else:
        image = F.resize(image, pp.resize, antialias=True)
        image = F.center_crop(image, [pp.crop, pp.crop])
    return normalise(image.float() / 255.0)


def decode_cpu(data: torch.Tensor) -> torch.Tensor:
    """Decode JPEG/PNG bytes (uint8 1-D tensor) to (3, H, W) uint8 RGB on the CPU.

    A 16-bit PNG decodes to uint16: it is scaled to uint8 (by 255/65535), so that it gives the
    same pixels as its 8-bit copy rather than values 256 times too large.
    """
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as F  # noqa: N812 - torchvision's own idiom

    try:  # the header first: an image too large to decode (a decompression bomb) is refused, not decoded
        image_header_of_bytes(data[:65536].numpy().tobytes(), "", check_end=False)
    except Rejected as exc:
        if exc.reason == "image_too_large":
            raise FormatError(f"refused to decode an image: {exc.detail}") from exc
    image = decode_image(data, mode=ImageReadMode.RGB)
    return image if image.dtype == torch.uint8 else F.to_dtype(image, torch.uint8, scale=True)


def bytes_tensor(data: bytes) -> torch.Tensor:
    """Encoded image bytes as a 1-D uint8 tensor (what torchvision's decoders take)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


class _ItemDataset(Dataset):
    """Items of one run, the reader of their image root and the preprocessing sizes."""

    def __init__(self, items: list[FeatureItem], root: str, pp: Preprocess | None = None) -> None:
        self.items, self.reader, self.pp = items, ImageReader(root), pp or Preprocess()

    def __len__(self) -> int:
        return len(self.items)


def rgb_8bit(image):
    """A PIL image as 8-bit RGB; 16-bit grey (modes ``I;16*``, ``I``) is scaled by 255/65535, not clipped."""
    if image.mode.startswith("I"):
        import numpy as np
        from PIL import Image

        grey = np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


class PilDataset(_ItemDataset):
    """The reference recipe on PIL images; yields (tensor (3, crop, crop), index)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image
        from torchvision import transforms as T  # noqa: N812 - torchvision's own idiom

        item = self.items[i]
        with Image.open(io.BytesIO(self.reader.read(item.ref))) as im:
            im = rgb_8bit(im)
            if item.box is not None:
                im = im.crop(box_pixels(item.box))
                im = im.resize((self.pp.crop, self.pp.crop), Image.BILINEAR)
                tf = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
            else:
                tf = T.Compose([T.Resize(self.pp.resize), T.CenterCrop(self.pp.crop), T.ToTensor(),
                                T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
            return tf(im), i


class TensorCpuDataset(_ItemDataset):
    """The tensor recipe with decoding in CPU workers; yields (tensor (3, crop, crop), index)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.items[i]
        image = decode_cpu(bytes_tensor(self.reader.read(item.ref)))
        return preprocess_uint8(image, item.box, self.pp), i


class BytesDataset(_ItemDataset):
    """File bytes only (decoding happens in batches on the GPU); yields (bytes, index).

    Plain ``bytes`` travel from the workers in the batch's one pickle; a tensor per file would cost a
    shared-memory handle each, which capped this loader at 3,600 img/s on an H100 machine.
    """

    def __getitem__(self, i: int) -> tuple[bytes, int]:
        return self.reader.read(self.items[i].ref), i


def collate_bytes(batch: list[tuple[bytes, int]]) -> tuple[list[bytes], list[int]]:
    """Keep the variable-length encoded images as a list."""
    return [b for b, _ in batch], [i for _, i in batch]


def preprocess_batch(images: list[torch.Tensor], items: list[FeatureItem], pp: Preprocess) -> torch.Tensor:
    """:func:`preprocess_uint8` for many images at once: whole images of the same size are resized,
    cropped and normalised as one batch (one kernel per step instead of one per image), box crops one
    by one. Returns (B, 3, crop, crop) float32, in the order of ``images``."""
    from torchvision.transforms.v2 import functional as F  # noqa: N812 - torchvision's own idiom

    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, (image, item) in enumerate(zip(images, items)):
        if item.box is None:
            groups.setdefault(tuple(image.shape), []).append(k)
        else:
            out[k] = preprocess_uint8(image, item.box, pp)
    for members in groups.values():
        batch = torch.stack([images[k] for k in members])
        batch = F.center_crop(F.resize(batch, pp.resize, antialias=True), [pp.crop, pp.crop])
        batch = normalise(batch.float() / 255.0)
        for k, x in zip(members, batch):
            out[k] = x
    return torch.stack(out)


def decode_batch_on_device(data: list[bytes], items: list[FeatureItem], pp: Preprocess,
                           device: torch.device) -> torch.Tensor:
    """Batched nvJPEG decode + preprocessing on ``device``; per-file CPU fallback. Returns (B, 3, crop, crop)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [bytes_tensor(tensor) if isinstance(tensor, (bytes, bytearray)) else tensor for tensor in data]
    try:
        images = decode_jpeg(tensors, device=device, mode=ImageReadMode.RGB)
    except RuntimeError:
        images = []
        for tensor in tensors:
            try:
                images.append(decode_jpeg(tensor, device=device, mode=ImageReadMode.RGB))
            except RuntimeError:  # PNG, CMYK or anything nvJPEG refuses
                images.append(decode_cpu(tensor).to(device, non_blocking=True))
    return preprocess_batch(images, items, pp)
