"""boxes: the one home of box conversions, checks and flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eic_builder.boxes import (
    box_flags,
    clip_to_image,
    from_inclusive,
    from_one_based,
    from_xywh,
    geometry_problem,
    to_inclusive,
    to_one_based,
    to_xywh,
)


def test_conversions_by_hand() -> None:
    # one 10x20 px box whose top-left pixel is (5, 7): ILSVRC 5..14 x 7..26, VOC 6..15 x 8..27, COCO [5, 7, 10, 20]
    assert from_inclusive(5, 7, 14, 26) == (5, 7, 15, 27) == from_one_based(6, 8, 15, 27) == from_xywh(5, 7, 10, 20)
    assert to_inclusive(5, 7, 15, 27) == (5, 7, 14, 26)
    assert to_one_based(5, 7, 15, 27) == (6, 8, 15, 27)
    assert to_xywh(5, 7, 15, 27) == (5, 7, 10, 20)


def test_round_trips_are_exact_for_float32_corners() -> None:
    rng = np.random.default_rng(0)
    corners = np.sort(rng.uniform(0, 5000, (2000, 2, 2)).astype(np.float32), axis=1).transpose(0, 2, 1).reshape(-1, 4)
    for x1, y1, x2, y2 in corners.tolist():
        box = (x1, y1, x2, y2)
        assert from_xywh(*to_xywh(*box)) == box
        assert from_one_based(*to_one_based(*box)) == box
        assert from_inclusive(*to_inclusive(*box)) == box


@pytest.mark.parametrize(("box", "problem"), [
    ((0, 0, 10, 10), None),
    ((-1, -1, 101, 51), None),  # within the 1 px tolerance: kept, clipped
    ((5, 5, 5, 9), "degenerate_box"),
    ((-1.5, 0, 10, 10), "box_outside_image"),
    ((100.5, 0, 101, 10), "degenerate_box"),  # inside the tolerance, but nothing is left after clipping
])
def test_geometry_problem(box: tuple, problem: str | None) -> None:
    found = geometry_problem(*box, width=100, height=50)
    assert (found[0] if found else None) == problem


def test_clip_and_flags() -> None:
    assert clip_to_image(-1, -0.5, 101, 50.5, 100, 50) == (0.0, 0.0, 100, 50)
    flags = box_flags(np.array([0, 0, 0]), np.array([0, 0, 0]), np.array([31, 200, 40]), np.array([31, 40, 10]),
                      np.array([100, 400, 100]), np.array([100, 400, 100]))
    assert flags.is_small.tolist() == [True, False, False]
    assert flags.is_twisted.tolist() == [False, True, False]  # 200/40 = 5 > 4; 40/10 = 4 is not above 4
    np.testing.assert_allclose(flags.area_ratio, [31 * 31 / 1e4, 200 * 40 / 16e4, 400 / 1e4])


def test_scaling_follows_each_axis_of_a_resized_image() -> None:
    import torch

    from baseline.data import prepare
    from eic_builder.boxes import scale_boxes

    image = torch.zeros(3, 33, 100, dtype=torch.uint8)
    x, (fx, fy) = prepare(image, 50, 1000)
    whole = torch.tensor([[0.0, 0.0, 100.0, 33.0]])
    # the image's own box lands on the resized image's edges exactly (one factor, 50 / 33, would give 151.5)
    assert scale_boxes(whole, fx, fy).tolist() == [[0.0, 0.0, float(x.shape[2]), float(x.shape[1])]]
    assert x.shape[1:] == (50, 152)
    np.testing.assert_allclose(scale_boxes(np.array([[10.0, 3.0, 20.0, 6.0]]), 2.0, 0.5), [[20.0, 1.5, 40.0, 3.0]])


def test_flip_horizontally_by_hand() -> None:
    from eic_builder.boxes import flip_horizontally

    boxes = torch.tensor([[0.0, 1.0, 10.0, 5.0], [90.0, 2.0, 100.0, 3.0]])
    assert flip_horizontally(boxes, 100).tolist() == [[90.0, 1.0, 100.0, 5.0], [0.0, 2.0, 10.0, 3.0]]
    assert boxes[0, 0] == 0.0  # the input is left as it was
    assert np.array_equal(flip_horizontally(np.array([[1.0, 0, 3, 4]]), 10), np.array([[7.0, 0, 9, 4]]))


def test_batched_iou_and_areas_match_torchvision() -> None:
    import torch
    from torchvision.ops import box_area, box_iou

    from eic_builder.boxes import batched_iou, box_areas

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3, 7, 2, generator=g, dtype=torch.float64) * 100
    dets = torch.cat([xy, xy + 1 + torch.rand(3, 7, 2, generator=g, dtype=torch.float64) * 80], 2)
    xy = torch.rand(3, 4, 2, generator=g, dtype=torch.float64) * 100
    gts = torch.cat([xy, xy + 1 + torch.rand(3, 4, 2, generator=g, dtype=torch.float64) * 80], 2)
    gts[2, 3] = 0  # a padding box: IoU 0 with everything, not nan
    got = batched_iou(dets, gts)
    assert got.shape == (3, 7, 4) and not got.isnan().any() and (got[2, :, 3] == 0).all()
    for n in range(3):
        torch.testing.assert_close(got[n, :, :3], box_iou(dets[n], gts[n, :3]))
        torch.testing.assert_close(box_areas(dets[n]), box_area(dets[n]))
    assert box_areas(np.array([[1.0, 2.0, 4.0, 7.0]])).tolist() == [15.0]  # numpy too: 3 x 5


def test_resize_scale_by_hand() -> None:
    from eic_builder.boxes import resize_scale

    assert resize_scale(500, 375, 250, 188) == (0.5, 188 / 375)  # halved, 187.5 rounded up
    assert resize_scale(800, 600, 600, 450) == (0.75, 0.75)
    assert resize_scale(455, 453, 227, 227) == (227 / 455, 227 / 453)  # within a pixel a side
    assert resize_scale(500, 375, 227, 227) is None  # another aspect: another image, or a crop
    assert resize_scale(375, 500, 500, 375) is None  # the sides swapped
    assert resize_scale(1000, 10, 600, 6) == (0.6, 0.6)
    assert resize_scale(1000, 10, 600, 8) is None  # 8 px where 6 is expected: more than a pixel off
