from __future__ import annotations

import pytest
import torch

from baseline.model import HourglassRPN, ModelConfig
from baseline.proposals import ProposalConfig, box_vote, propose_sets, ranking_score
from eic_builder.errors import OptionError


def test_box_vote_hand_computed() -> None:
    """The kept box (0,0,10,10), score 3, and a candidate (2,0,12,10), score 1, at IoU 8/12 = 0.67: at 0.6
    both vote, x = (3*0 + 1*2) / 4 = 0.5 and (3*10 + 1*12) / 4 = 10.5; at 0.7 the kept box stands alone.
    The far box (50,50,60,60) votes for nothing but itself."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([3.0, 1.0, 2.0])
    kept = boxes[[0, 2]]
    voted = box_vote(kept, boxes, scores, 0.6)
    torch.testing.assert_close(voted, torch.tensor([[0.5, 0.0, 10.5, 10.0], [50.0, 50.0, 60.0, 60.0]]))
    torch.testing.assert_close(box_vote(kept, boxes, scores, 0.7), kept)


def test_scales_for_an_image() -> None:
    assert ProposalConfig(scales=(200, 400)).scales_for(227, 500) == (200, 400)
    auto = ProposalConfig(scale_range=(224, 448))
    assert [auto.scales_for(h, w) for h, w in ((227, 227), (375, 500), (1200, 900), (100, 80))] == [
        (227,), (375,), (448,), (224,)]


@pytest.mark.parametrize(("field", "value", "words"), [
    ("scale_range", (300, 200), r"scale_range 300,200: needs 16 <= lo <= hi"),
    ("score", "iou", r"score='iou' is not allowed; choose one of 'object', 'object-x-iou'"),
    ("quality_exponent", float("nan"), r"quality_exponent=nan must be a finite number >= 0"),
    ("box_voting", 0.0, r"box_voting=0.0 must be an IoU in \(0, 1\]"),
])
def test_bad_proposal_settings(field: str, value: object, words: str) -> None:
    with pytest.raises(OptionError, match=words):
        ProposalConfig(**{field: value}).validate()


def test_the_quality_score_ranks_by_object_times_iou() -> None:
    """With a quality head that predicts IoU 1 everywhere (a large bias), object x IoU is the object
    probability; at IoU sigmoid(0) = 0.5 and exponent 2 it is a quarter of it: the ranking's scores follow."""
    torch.manual_seed(0)
    model = HourglassRPN(ModelConfig(width=0.125, quality=True)).eval()
    image = torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)
    cfg = ProposalConfig(scales=(64,), top_k=20, score="object")
    plain = propose_sets(model, image, cfg)["rpn"][1]
    for head in model.heads:
        torch.nn.init.zeros_(head.quality.weight)
        torch.nn.init.constant_(head.quality.bias, 30.0)
    same = propose_sets(model, image, ProposalConfig(scales=(64,), top_k=20))["rpn"][1]
    torch.testing.assert_close(same, plain)
    for head in model.heads:
        torch.nn.init.zeros_(head.quality.bias)
    quarter = propose_sets(model, image, ProposalConfig(scales=(64,), top_k=20, quality_exponent=2.0))["rpn"][1]
    torch.testing.assert_close(quarter, plain / 4)
    assert ranking_score(model, ProposalConfig()) == "object-x-iou"
    with pytest.raises(OptionError, match="object-x-iou needs a checkpoint trained with it"):
        ranking_score(HourglassRPN(ModelConfig(width=0.125)), ProposalConfig(score="object-x-iou"))


def test_soft_nms_hand_computed() -> None:
    """Boxes A (0,0,10,10) score 0.9, B (0,0,10,20) score 0.8 (IoU 0.5 with A), C far, score 0.5; sigma 0.5:
    A is kept first, B decays to 0.8 exp(-0.25 / 0.5) = 0.485 and so ranks after C; nothing is dropped."""
    import math

    from baseline.proposals import soft_nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 20.0], [50.0, 50.0, 60.0, 60.0]])
    keep, scores = soft_nms(boxes, torch.tensor([0.9, 0.8, 0.5]), 0.5, 10)
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.5, 0.8 * math.exp(-0.5)]))
    assert soft_nms(boxes, torch.tensor([0.9, 0.8, 0.5]), 0.5, 2)[0].tolist() == [0, 2]
    assert soft_nms(torch.zeros(0, 4), torch.zeros(0), 0.5, 10)[0].tolist() == []
