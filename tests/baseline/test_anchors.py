from __future__ import annotations

import math

import torch

from baseline.anchors import RATIOS, SCALES, AnchorGenerator, cell_anchors, grid_anchors


def test_thirty_anchor_shapes_of_the_paper() -> None:
    gen = AnchorGenerator()
    assert gen.num_anchors == [10, 10, 10] and sum(gen.num_anchors) == 30
    shapes = cell_anchors(SCALES[0], RATIOS)
    w = shapes[:, 2] - shapes[:, 0]
    h = shapes[:, 3] - shapes[:, 1]
    assert torch.allclose(w * h, torch.tensor([16.0**2] * 5 + [32.0**2] * 5))
    assert torch.allclose(h / w, torch.tensor(list(RATIOS) * 2))
    assert math.isclose(float(w[0]), 16 / math.sqrt(0.15), rel_tol=1e-6)


def test_grid_order_is_y_x_anchor() -> None:
    shapes = cell_anchors((8.0,), (1.0,))  # one 8x8 anchor
    a = grid_anchors(shapes, height=2, width=3, stride=8)
    centres = ((a[:, :2] + a[:, 2:]) / 2).tolist()
    assert centres == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
