from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from baseline.evaluation import coco_ground_truth, coco_results, proposal_metrics, recall_table


def test_hand_computed_recall() -> None:
    gts = {"a": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])}
    # the first proposal covers box 0 exactly; the second overlaps box 1 with IoU 0.5
    props = {"a": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 25.0]])}
    table = recall_table(gts, props, [1, 2])
    assert table[:, 0].tolist() == [0.5] * 10  # top 1: box 0 at every threshold
    assert table[0, 1] == 1.0 and table[1, 1] == 0.5  # top 2: box 1 only at IoU 0.50
    m = proposal_metrics(gts, props, max_dets=(1, 2), recall_k=2)
    assert m["Rec@0.5@2"] == 1.0 and m["AR@2"] == pytest.approx(0.55)
    # a proposal is matched to one box only: one big box cannot recall two boxes
    assert recall_table({"a": torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10]])},
                        {"a": torch.tensor([[0.0, 0, 10, 10]])}, [1])[0, 0] == 0.5


def test_no_proposals_and_no_boxes() -> None:
    gts = {"a": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "b": torch.zeros(0, 4)}
    assert recall_table(gts, {}, [10])[0, 0] == 0.0
    assert np.isnan(recall_table({"b": torch.zeros(0, 4)}, {}, [10])).all()


def _random_case(seed: int, max_boxes: int = 6, ties: bool = False) -> tuple[dict, dict]:
    """40 images of random boxes and proposals; with ``ties``, repeated boxes and proposals equal to
    boxes, so that several boxes share the highest IoU (the matching's tie rule is then tested)."""
    g = torch.Generator().manual_seed(seed)
    gts, props = {}, {}
    for i in range(40):
        n = int(torch.randint(0, max_boxes, (1,), generator=g))
        xy, wh = torch.rand(n, 2, generator=g) * 300, torch.rand(n, 2, generator=g) * 150 + 2
        gt = torch.cat([xy, xy + wh], 1)
        if ties and n > 1:
            gt[n // 2:] = gt[0]  # the same box several times
        gts[f"im{i}"] = gt
        m = int(torch.randint(0, 400, (1,), generator=g))
        xy, wh = torch.rand(m, 2, generator=g) * 300, torch.rand(m, 2, generator=g) * 150 + 2
        det = torch.cat([xy, xy + wh], 1)
        if ties and n and m:
            det[: m // 5] = gt[torch.randint(0, n, (m // 5,), generator=g)]
        scores = torch.rand(m, generator=g)
        order = scores.argsort(descending=True)
        props[f"im{i}"] = (det[order], scores[order])
    return gts, props


@pytest.mark.parametrize(("seed", "max_boxes", "ties"), [(0, 6, False), (1, 6, False), (2, 20, True), (3, 12, True)])
def test_matches_pycocotools(seed: int, max_boxes: int, ties: bool) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gts, props = _random_case(seed, max_boxes, ties)
    gt_json, ids = coco_ground_truth(gts)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt_json
        coco.createIndex()
        dets = coco.loadRes(coco_results(props, ids))
        ev = COCOeval(coco, dets, "bbox")
        ev.params.useCats = 0
        ev.params.maxDets = [10, 100, 300]
        ev.evaluate()
        ev.accumulate()
    recall = ev.eval["recall"]  # (T, K, A, M)
    for a, area in enumerate(["all", "small", "medium", "large"]):
        ours = recall_table(gts, {k: v[0] for k, v in props.items()}, [10, 100, 300], area)
        np.testing.assert_allclose(ours, recall[:, 0, a, :], atol=1e-12)
