"""Every box operation of the toolkit, in one place.

The toolkit's one convention: float pixels ``x1, y1, x2, y2``, 0-based, ``x2``/``y2`` exclusive,
so ``w = x2 - x1`` (``data_manifests/SCHEMA.md``). Formats convert at the edges, here:

=================  ======================================  =================================
format             its corners                             to / from the toolkit
=================  ======================================  =================================
ILSVRC XML, LOC    0-based, inclusive ``xmin..xmax``       ``x2 = xmax + 1``
PASCAL VOC XML     1-based, inclusive                      ``x1 = xmin - 1``, ``x2 = xmax``
COCO               ``[x, y, w, h]``                        ``x2 = x + w``
=================  ======================================  =================================

Every conversion is exact in float64 for float32 corners (a float32 difference fits a float64),
so a manifest exported and scanned back gives its boxes to the bit. Flags follow the paper: a box is
*small* when both sides are under 32 px of the *original* image, *twisted* when its aspect ``w / h`` is
above 4 or below 1/4 (scale-free).

Boxes are always in the pixels of the image as stored. A box source that states another size (an XML
``<size>``, a COCO image size, the original size a Hub shard records for a resized copy) measured its
boxes on that image: they are scaled per axis by stored / stated when the two aspect ratios agree to
within a pixel of rounding (:func:`resize_scale`), and refused otherwise; the stated size is kept
(``ann_width``, ``ann_height``), so the small flag stays in original pixels (:func:`original_scales`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eic_builder.errors import OptionError

SMALL_PX = 32.0
TWISTED_RATIO = 4.0
CLIP_TOLERANCE_PX = 1.0  # boxes may overshoot their image by this much (rounding in the source): clipped

Corners = tuple[float, float, float, float]


def from_inclusive(xmin: float, ymin: float, xmax: float, ymax: float) -> Corners:
    """ILSVRC XML / Kaggle LOC CSV corners (0-based, inclusive) -> the toolkit's."""
    return xmin, ymin, xmax + 1.0, ymax + 1.0


def to_inclusive(x1: float, y1: float, x2: float, y2: float) -> Corners:
    """The toolkit's corners -> ILSVRC XML / LOC's (0-based, inclusive); :func:`from_inclusive` undoes it."""
    return x1, y1, x2 - 1.0, y2 - 1.0


def from_one_based(xmin: float, ymin: float, xmax: float, ymax: float) -> Corners:
    """PASCAL VOC corners (1-based, inclusive) -> the toolkit's."""
    return xmin - 1.0, ymin - 1.0, xmax, ymax


def to_one_based(x1: float, y1: float, x2: float, y2: float) -> Corners:
    """The toolkit's corners -> PASCAL VOC's (1-based, inclusive); :func:`from_one_based` undoes it."""
    return x1 + 1.0, y1 + 1.0, x2, y2


def from_xywh(x: float, y: float, w: float, h: float) -> Corners:
    """COCO ``[x, y, w, h]`` -> the toolkit's corners."""
    return x, y, x + w, y + h


def to_xywh(x1: float, y1: float, x2: float, y2: float) -> Corners:
    """The toolkit's corners -> COCO ``[x, y, w, h]``; :func:`from_xywh` undoes it exactly."""
    return x1, y1, x2 - x1, y2 - y1


def scale_boxes(boxes, fx: float, fy: float):
    """(N, 4) corners (a torch tensor or a numpy array) scaled per axis: x by ``fx``, y by ``fy``.

    An image resized to ``round(w * f) x round(h * f)`` is scaled by ``round(w * f) / w`` across and
    ``round(h * f) / h`` down, which differ: boxes must follow each axis, not ``f``.
    """
    if hasattr(boxes, "new_tensor"):
        return boxes * boxes.new_tensor([fx, fy, fx, fy])
    return boxes * np.asarray([fx, fy, fx, fy], dtype=np.asarray(boxes).dtype)


def box_areas(boxes):
    """Areas ``w * h`` in square pixels of (..., 4) corners (torch or numpy): shape (...)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def batched_iou(dets, gts):
    """IoU of (N, D, 4) corners with (N, G, 4) corners, image by image, as torch tensors: (N, D, G).

    torchvision's ``box_iou`` formula, batched over the first axis; a padding box (all zeros) has IoU 0
    with everything (0 / 0 is taken as 0)."""
    import torch

    lt = torch.maximum(dets[:, :, None, :2], gts[:, None, :, :2])
    wh = (torch.minimum(dets[:, :, None, 2:], gts[:, None, :, 2:]) - lt).clamp_(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_areas(dets)[:, :, None] + box_areas(gts)[:, None, :] - inter
    return torch.nan_to_num_(inter / union, nan=0.0)


def flip_horizontally(boxes, width: float):
    """(N, 4) corners (torch or numpy) of an image of ``width`` pixels mirrored left-right:
    ``x1' = width - x2``, ``x2' = width - x1`` (corners are continuous, 0..width)."""
    flipped = boxes.clone() if hasattr(boxes, "clone") else np.array(boxes, copy=True)
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def geometry_problem(x1: float, y1: float, x2: float, y2: float, width: float, height: float,
                     tolerance: float = CLIP_TOLERANCE_PX) -> tuple[str, str] | None:
    """Why a box cannot be kept in a ``width`` x ``height`` image, as (reject reason, detail), or None."""
    if x2 <= x1 or y2 <= y1:
        return "degenerate_box", "empty box"
    if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        return "box_outside_image", f"more than {tolerance:g} px outside the image"
    if min(x2, width) <= max(x1, 0.0) or min(y2, height) <= max(y1, 0.0):
        return "degenerate_box", "empty after clipping"
    return None


def clip_to_image(x1: float, y1: float, x2: float, y2: float, width: float, height: float) -> Corners:
    """The box clipped to the image ``[0, width] x [0, height]``."""
    return max(x1, 0.0), max(y1, 0.0), min(x2, width), min(y2, height)


def resize_scale(stated_width: float, stated_height: float, width: float, height: float) -> tuple[float, float] | None:
    """(sx, sy), the stored pixels per stated pixel of each axis, when an image of ``width`` x ``height`` is the
    stated ``stated_width`` x ``stated_height`` one resized: some one factor ``s`` takes each stated side to
    the stored one within a pixel of rounding (``|width - s * stated_width| <= 1`` and likewise for the
    height). None when no factor does (another image, or a crop). Sides must be positive."""
    # the factors that reach each side within a pixel form an interval; the two intervals must meet
    low = max((width - 1) / stated_width, (height - 1) / stated_height)
    high = min((width + 1) / stated_width, (height + 1) / stated_height)
    if low > high:
        return None
    return width / stated_width, height / stated_height


def original_scales(images, row) -> tuple[np.ndarray, np.ndarray]:
    """(sx, sy) of each box: stored pixels per original pixel of its image, from the images table's
    ``width``/``height`` and the size its box source stated (``ann_width``/``ann_height``; 1 where none is
    stated). ``images``: a pyarrow images table; ``row``: each box's row in it
    (``pc.index_in(boxes["image_id"], images["image_id"])``)."""
    import pyarrow.compute as pc

    out = []
    for stored, stated in (("width", "ann_width"), ("height", "ann_height")):
        have = pc.take(images[stored], row).to_numpy(zero_copy_only=False).astype(np.float64)
        said = pc.take(pc.coalesce(images[stated], images[stored]), row).to_numpy(zero_copy_only=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(np.where(said > 0, have / said, 1.0))
    return out[0], out[1]


@dataclass(frozen=True)
class BoxFlags:
    """Per-box flags, each a numpy array of length N."""

    area_ratio: np.ndarray  # float32, box area / image area
    is_small: np.ndarray  # bool
    is_twisted: np.ndarray  # bool


def box_flags(
    x1: np.ndarray,
    y1: np.ndarray,
    x2: np.ndarray,
    y2: np.ndarray,
    image_width: np.ndarray,
    image_height: np.ndarray,
    small_px: float = SMALL_PX,
    twisted_ratio: float = TWISTED_RATIO,
    scale_x: np.ndarray | float = 1.0,
    scale_y: np.ndarray | float = 1.0,
) -> BoxFlags:
    """Flags of N boxes (arrays of shape (N,), stored pixels) in images of the given sizes.

    small:   ``w / scale_x < small_px and h / scale_y < small_px``: in the original image's pixels
             (``scale_*``: stored pixels per original pixel, :func:`original_scales`; 1 for an original);
    twisted: ``w / h > twisted_ratio or w / h < 1 / twisted_ratio`` (the same in any pixels).
    """
    if small_px <= 0:
        raise OptionError(f"`small_px`={small_px} must be > 0")
    if twisted_ratio <= 1:
        raise OptionError(f"`twisted_ratio`={twisted_ratio} must be > 1")
    w = np.asarray(x2, dtype=np.float64) - np.asarray(x1, dtype=np.float64)
    h = np.asarray(y2, dtype=np.float64) - np.asarray(y1, dtype=np.float64)
    area = np.asarray(image_width, dtype=np.float64) * np.asarray(image_height, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = w / h
        ratio = np.where(area > 0, (w * h) / area, 0.0)
    return BoxFlags(
        area_ratio=ratio.astype(np.float32),
        is_small=(w < small_px * np.asarray(scale_x)) & (h < small_px * np.asarray(scale_y)),
        is_twisted=(aspect > twisted_ratio) | (aspect < 1.0 / twisted_ratio),
    )
