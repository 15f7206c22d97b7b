"""Anchors: different sizes on different resolutions (the paper's "Anchor candidates").

Level m of the network (stride 8, 16, 32 by default) carries anchors of the
scales ``SCALES[m]`` ({16, 32}, {64, 128}, {256, 512} pixels) at every aspect
ratio of ``RATIOS`` ([0.15, 0.5, 1, 2, 6.7], ratio = height / width): 10 anchor
shapes per level, 30 in all. An anchor of scale s and ratio r has area s^2:
``w = s / sqrt(r)``, ``h = s * sqrt(r)``, centred on the cell centre.
Boxes are ``x1, y1, x2, y2`` float pixels of the network input.

``--anchors 9`` (the component table's "9 anchors") is Faster R-CNN's set instead: scales 128, 256,
512 at ratios 0.5, 1, 2, one scale per level. A single-level network (``--arch downsample-single``,
"Down-sample alone") carries every shape of the set on its one stride-32 map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SCALES: tuple[tuple[float, ...], ...] = ((16.0, 32.0), (64.0, 128.0), (256.0, 512.0))
RATIOS: tuple[float, ...] = (0.15, 0.5, 1.0, 2.0, 6.7)
STRIDES: tuple[int, ...] = (8, 16, 32)
FASTER_RCNN_SCALES: tuple[tuple[float, ...], ...] = ((128.0,), (256.0,), (512.0,))
FASTER_RCNN_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)


def anchor_layout(anchors: int = 30, levels: int = 3) -> tuple[tuple[tuple[float, ...], ...], tuple[float, ...],
                                                               tuple[int, ...]]:
    """(scales per level, ratios, strides) of the anchor set with ``anchors`` shapes (30: the paper's;
    9: Faster R-CNN's) on 3 levels (strides 8, 16, 32) or on 1 (stride 32, every shape there)."""
    if anchors not in (9, 30):
        raise ValueError(f"anchors={anchors}; choose 9 or 30")
    if levels not in (1, 3):
        raise ValueError(f"levels={levels}; choose 1 or 3")
    scales, ratios = (SCALES, RATIOS) if anchors == 30 else (FASTER_RCNN_SCALES, FASTER_RCNN_RATIOS)
    if levels == 1:
        return (tuple(s for group in scales for s in group),), ratios, (STRIDES[-1],)
    return scales, ratios, STRIDES


def cell_anchors(scales: Sequence[float], ratios: Sequence[float]) -> torch.Tensor:
    """The (A, 4) anchor shapes of one level, centred on (0, 0); A = len(scales) * len(ratios)."""
    shapes = []
    for s in scales:
        for r in ratios:
            w, h = s / r**0.5, s * r**0.5
            shapes.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(shapes, dtype=torch.float32)


def grid_anchors(shapes: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """All anchors of a (height, width) feature map: (height * width * A, 4), ordered (y, x, a)
    to match a head's (A, H, W) output permuted to (H, W, A)."""
    ys = (torch.arange(height, dtype=torch.float32, device=shapes.device) + 0.5) * stride
    xs = (torch.arange(width, dtype=torch.float32, device=shapes.device) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
    return (centres + shapes.view(1, -1, 4)).reshape(-1, 4)


class AnchorGenerator:
    """Anchors for each level of a feature pyramid, cached by feature-map size."""

    def __init__(self, scales: Sequence[Sequence[float]] = SCALES, ratios: Sequence[float] = RATIOS,
                 strides: Sequence[int] = STRIDES) -> None:
        if len(scales) != len(strides):
            raise ValueError(f"{len(scales)} scale groups for {len(strides)} levels")
        self.strides = tuple(strides)
        self.shapes = [cell_anchors(s, ratios) for s in scales]
        self._cache: dict[tuple, list[torch.Tensor]] = {}

    @property
    def num_anchors(self) -> list[int]:
        """Anchor shapes per level (10 each by default)."""
        return [len(s) for s in self.shapes]

    def __call__(self, sizes: Sequence[tuple[int, int]], device: torch.device) -> list[torch.Tensor]:
        """Anchors of each level for feature maps of the given (H, W) sizes."""
        key = (tuple(sizes), str(device))
        if key not in self._cache:
            self._cache[key] = [grid_anchors(sh.to(device), h, w, st)
                                for sh, (h, w), st in zip(self.shapes, sizes, self.strides)]
        return self._cache[key]
