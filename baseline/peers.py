"""The proposal methods the RPN is compared with, scored by the same code.

* Selective Search, fast mode (OpenCV contrib ``cv2.ximgproc``), on the image
  at most ``max_side`` pixels on its longer side; boxes ranked in the order
  OpenCV returns them (its hierarchical grouping order), score ``1 / (1 + rank)``.
* A multi-scale sliding window: windows of side fractions 0.2..1.0 of the
  image, aspect ratios 0.5, 1, 2, stride a quarter of the window, ranked by
  distance of the window centre to the image centre (a centre prior), larger
  windows first among equals. A floor for any learnt method.

Boxes: x1, y1, x2, y2 float pixels of the original image.
"""

from __future__ import annotations

import numpy as np
import torch

from eic_builder.boxes import box_areas
from eic_builder.errors import OptionError


def selective_search(image: torch.Tensor, top_k: int = 1000, max_side: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective Search (fast) proposals of a uint8 (3, H, W) RGB image."""
    try:
        import cv2
        from cv2 import ximgproc  # noqa: F401 - present only in opencv-contrib
    except ImportError as exc:
        raise OptionError("selective-search needs opencv-contrib-python-headless (pip install it)") from exc
    _, h, w = image.shape
    f = min(1.0, max_side / max(h, w))
    bgr = image.permute(1, 2, 0).numpy()[:, :, ::-1]
    if f < 1.0:
        bgr = cv2.resize(bgr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    cv2.setNumThreads(1)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(bgr))
    ss.switchToSelectiveSearchFast()
    rects = ss.process()[:top_k].astype(np.float32)
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], 1) / f
    scores = 1.0 / (1.0 + np.arange(len(boxes), dtype=np.float32))
    return torch.from_numpy(boxes), torch.from_numpy(scores)


def sliding_window(image: torch.Tensor, top_k: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale sliding-window proposals of a (3, H, W) image, ranked by a centre prior."""
    _, h, w = image.shape
    boxes = []
    for frac in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        for ratio in (0.5, 1.0, 2.0):  # height / width
            bw = min(w, frac * min(w, h) / ratio**0.5)
            bh = min(h, frac * min(w, h) * ratio**0.5)
            xs = np.arange(0, w - bw + 1e-6, max(1.0, bw / 4))
            ys = np.arange(0, h - bh + 1e-6, max(1.0, bh / 4))
            gx, gy = np.meshgrid(xs, ys)
            boxes.append(np.stack([gx.ravel(), gy.ravel(), gx.ravel() + bw, gy.ravel() + bh], 1))
    b = np.concatenate(boxes).astype(np.float32)
    centre = np.hypot((b[:, 0] + b[:, 2]) / 2 - w / 2, (b[:, 1] + b[:, 3]) / 2 - h / 2) / np.hypot(w, h)
    area = box_areas(b) / (w * h)
    order = np.lexsort((-area, np.round(centre, 3)))[:top_k]
    return torch.from_numpy(b[order]), torch.from_numpy(1.0 / (1.0 + np.arange(len(order), dtype=np.float32)))
