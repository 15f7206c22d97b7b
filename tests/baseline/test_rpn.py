from __future__ import annotations

import torch

from baseline.rpn import (
    BACKGROUND,
    GRAY,
    IGNORE,
    OBJECT,
    TargetConfig,
    aligned_box_iou,
    assign,
    assign_batch,
    box_coder,
    rpn_loss,
    sample,
    sample_batch,
)


def test_assign_hand_computed() -> None:
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],  # IoU 1
        [0.0, 0.0, 10.0, 7.5],  # IoU 0.75
        [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 -> gray
        [0.0, 0.0, 10.0, 2.0],  # IoU 0.2 -> background
        [50.0, 50.0, 60.0, 60.0],  # IoU 0
    ])
    labels, matched = assign(anchors, box, TargetConfig())
    assert labels.tolist() == [OBJECT, OBJECT, GRAY, BACKGROUND, BACKGROUND]
    assert torch.equal(matched[0], box[0])
    labels, _ = assign(anchors, box, TargetConfig(gray=False))
    assert labels.tolist() == [OBJECT, OBJECT, IGNORE, BACKGROUND, BACKGROUND]
    # a box whose best anchor is poor still gets that anchor as an object
    labels, _ = assign(anchors[3:], box, TargetConfig())
    assert labels.tolist() == [OBJECT, BACKGROUND]
    assert assign(anchors, torch.zeros(0, 4), TargetConfig())[0].tolist() == [BACKGROUND] * 5


def test_sample_controls_the_negative_ratio() -> None:
    labels = torch.tensor([OBJECT] * 5 + [BACKGROUND] * 500 + [GRAY] * 100)
    cfg = TargetConfig(batch_per_image=300, neg_ratio=3.0, gray_fraction=0.1, min_negatives=16)
    idx = sample(labels, cfg, torch.Generator().manual_seed(0))
    picked = labels[idx]
    assert (picked == OBJECT).sum() == 5 and (picked == BACKGROUND).sum() == 16 and (picked == GRAY).sum() == 30
    labels = torch.tensor([OBJECT] * 40 + [BACKGROUND] * 500)
    picked = labels[sample(labels, cfg, torch.Generator().manual_seed(0))]
    assert (picked == BACKGROUND).sum() == 120  # 3 x 40


def test_without_negative_ratio_control_negatives_fill_the_batch() -> None:
    labels = torch.tensor([OBJECT] * 5 + [BACKGROUND] * 500 + [GRAY] * 100)
    cfg = TargetConfig(batch_per_image=300, neg_ratio=None, gray_fraction=0.1)
    picked = labels[sample(labels, cfg, torch.Generator().manual_seed(0))]
    assert (picked == OBJECT).sum() == 5 and (picked == GRAY).sum() == 30 and (picked == BACKGROUND).sum() == 265
    few = torch.tensor([OBJECT] * 2 + [BACKGROUND] * 7)
    assert (few[sample(few, cfg, torch.Generator().manual_seed(0))] == BACKGROUND).sum() == 7  # all there are


def test_loss_is_finite_and_trains() -> None:
    from baseline.model import HourglassRPN, ModelConfig

    torch.manual_seed(0)
    model = HourglassRPN(ModelConfig(width=0.125))
    x = torch.randn(2, 3, 64, 64)
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.zeros(0, 4)]
    coder = box_coder()
    logits, deltas, anchors, _ = model(x)
    loss, terms = rpn_loss(logits, deltas, anchors, boxes, TargetConfig(), coder, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and len(terms) == 3
    assert sum(t.n_positive for t in terms) >= 1
    loss.backward()
    assert model.heads[0].cls.weight.grad is not None


def test_one_box_coder_for_training_and_inference() -> None:
    """Targets encoded for training decode back to the boxes with the coder inference uses."""
    import baseline.proposals as proposals

    anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0], [10.0, 20.0, 74.0, 52.0]])
    boxes = torch.tensor([[2.0, 3.0, 30.0, 40.0], [0.0, 18.0, 80.0, 60.0]])
    targets = box_coder().encode_single(boxes, anchors)
    assert proposals.box_coder is box_coder  # inference imports this very function
    torch.testing.assert_close(proposals.box_coder().decode_single(targets, anchors), boxes, atol=1e-4, rtol=0)


def _one_level(delta: list[float]) -> tuple[list, list, list]:
    """One level, one image: an anchor that is the box's only (so best) anchor, and a far background one."""
    anchors = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])]
    logits = [torch.zeros(1, 2, 3)]
    deltas = [torch.tensor([[delta, [0.0, 0.0, 0.0, 0.0]]])]
    return logits, deltas, anchors


def test_box_term_smooth_l1_giou_and_weight_hand_computed() -> None:
    box = [torch.tensor([[0.0, 0.0, 10.0, 20.0]])]  # the anchor (0,0,10,10) overlaps it at IoU 0.5
    cfg = TargetConfig(pos_iou=0.7, neg_iou=0.3)
    coder = box_coder()
    logits, deltas, anchors = _one_level([0.0, 0.0, 0.0, 0.0])
    _, (smooth,) = rpn_loss(logits, deltas, anchors, box, cfg, coder, torch.Generator().manual_seed(0))
    # targets: dy = (10 - 5) / 10 = 0.5 (box centre minus anchor centre, over its height), dh = log(20 / 10);
    # smooth-L1 (beta 1/9: |d| - 1/18 above 1/9) of each, summed, over 1 object
    want = (0.5 - 1 / 18) + (torch.log(torch.tensor(2.0)).item() - 1 / 18)
    assert smooth.n_positive == 1 and abs(smooth.reg.item() - want) < 1e-5
    _, (giou,) = rpn_loss(logits, deltas, anchors, box, TargetConfig(pos_iou=0.7, reg_loss="giou"), coder,
                          torch.Generator().manual_seed(0))
    assert abs(giou.reg.item() - 0.5) < 1e-6  # IoU 0.5, the enclosing box is the box itself: 1 - GIoU = 0.5
    _, (heavy,) = rpn_loss(logits, deltas, anchors, box, TargetConfig(pos_iou=0.7, reg_loss="giou", reg_weight=3.0),
                           coder, torch.Generator().manual_seed(0))
    assert abs(heavy.reg.item() - 1.5) < 1e-6
    exact = coder.encode_single(box[0], anchors[0][:1])[0].tolist()
    logits, deltas, anchors = _one_level(exact)  # deltas that land on the box: no box loss either way
    for kind in ("smooth-l1", "giou"):
        _, (term,) = rpn_loss(logits, deltas, anchors, box, TargetConfig(pos_iou=0.7, reg_loss=kind), coder,
                              torch.Generator().manual_seed(0))
        assert abs(term.reg.item()) < 1e-5, kind


def test_regression_options_are_checked() -> None:
    import pytest

    from baseline.config import TrainConfig
    from eic_builder.errors import OptionError

    with pytest.raises(OptionError, match=r"reg_weight=0.0 must be a finite number > 0"):
        TrainConfig.tiny(reg_weight=0.0).validate()
    with pytest.raises(OptionError, match=r"iou.*smooth-l1.*giou"):
        TrainConfig.tiny(reg_loss="iou").validate()
    assert TrainConfig.tiny(reg_loss="giou", reg_weight=2.0).command_options(tiny=True) == [
        "--tiny", "--reg-loss", "giou", "--reg-weight", "2.0"]


def test_anchors_alone_are_the_proposals_of_a_regressor_at_zero() -> None:
    """propose_sets' ``rpn-anchors`` set is what ``rpn`` gives when every delta is zero, from the same pass."""
    from baseline.model import HourglassRPN, ModelConfig
    from baseline.proposals import ProposalConfig, propose_sets

    torch.manual_seed(0)
    model = HourglassRPN(ModelConfig(width=0.125)).eval()
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    cfg = ProposalConfig(scales=(96,), top_k=50)
    sets = propose_sets(model, image, cfg, anchors_only=True)
    assert set(sets) == {"rpn", "rpn-anchors"}
    assert not torch.equal(sets["rpn"][0], sets["rpn-anchors"][0])  # random deltas move the boxes
    for head in model.heads:
        torch.nn.init.zeros_(head.reg.weight)
        torch.nn.init.zeros_(head.reg.bias)
    zero = propose_sets(model, image, cfg, anchors_only=True)
    torch.testing.assert_close(zero["rpn"][0], zero["rpn-anchors"][0])
    torch.testing.assert_close(zero["rpn"][1], zero["rpn-anchors"][1])
    assert set(propose_sets(model, image, cfg)) == {"rpn"}


def _bench_rpn():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_rpn.py"
    sys.path.insert(0, str(path.parent))  # its own `from results import store`
    spec = importlib.util.spec_from_file_location("bench_rpn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batched_loss_equals_the_per_image_loop_it_replaced() -> None:
    """With every anchor sampled (no random draw left), the batch-at-once loss is the per-image,
    per-level loss of before issue 32 (bench_rpn.loop_rpn_loss), term by term; boxes of 0, 1 and 3."""
    from baseline.model import HourglassRPN, ModelConfig

    torch.manual_seed(0)
    model = HourglassRPN(ModelConfig(width=0.125))
    out = model(torch.randn(3, 3, 64, 96))
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.zeros(0, 4),
             torch.tensor([[0.0, 0.0, 90.0, 60.0], [30.0, 10.0, 50.0, 30.0], [60.0, 5.0, 95.0, 63.0]])]
    everything = dict(batch_per_image=10**6, neg_ratio=None, gray_fraction=1.0)
    for kind in ("smooth-l1", "giou"):
        cfg = TargetConfig(reg_loss=kind, **everything)
        want, want_terms = _bench_rpn().loop_rpn_loss(out.logits, out.deltas, out.anchors, boxes, cfg, box_coder())
        got, got_terms = rpn_loss(out.logits, out.deltas, out.anchors, boxes, cfg, box_coder())
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for g, w in zip(got_terms, want_terms):
            assert g.n_positive == w.n_positive
            torch.testing.assert_close(g.cls, w.cls, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(g.reg, w.reg, rtol=1e-5, atol=1e-6)


def test_batched_assignment_equals_the_loop_per_image() -> None:
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 7.5], [0.0, 0.0, 10.0, 5.0],
                            [0.0, 0.0, 10.0, 2.0], [50.0, 50.0, 60.0, 60.0], [48.0, 52.0, 61.0, 60.0]])
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]), torch.zeros(0, 4),
             torch.tensor([[0.0, 0.0, 9.0, 4.0]])]
    labels, matched = assign_batch(anchors, boxes, TargetConfig())
    for b, gt in enumerate(boxes):
        want_labels, want_matched = _bench_rpn().loop_assign(anchors, gt, TargetConfig())
        assert labels[b].tolist() == want_labels.tolist()
        torch.testing.assert_close(matched[b], want_matched)


def test_sample_batch_quotas_per_image() -> None:
    """Each image of the batch gets its own quotas: 5 objects -> 16 (min) negatives, 40 -> 120."""
    few = torch.tensor([OBJECT] * 5 + [BACKGROUND] * 535 + [GRAY] * 100)
    many = torch.tensor([OBJECT] * 40 + [BACKGROUND] * 500 + [GRAY] * 100)
    cfg = TargetConfig(batch_per_image=300, neg_ratio=3.0, gray_fraction=0.1, min_negatives=16)
    chosen = sample_batch(torch.stack([few, many]), cfg, torch.Generator().manual_seed(0))
    for row, labels, negatives in ((0, few, 16), (1, many, 120)):
        picked = labels[chosen[row]]
        assert (picked == BACKGROUND).sum() == negatives and (picked == GRAY).sum() == 30
    assert sample_batch(torch.zeros(2, 0, dtype=torch.long), cfg).shape == (2, 0)


def test_quality_target_is_the_regressed_box_iou() -> None:
    """The quality term is binary cross-entropy against the IoU of the decoded box with its matched box:
    deltas at zero on the anchor (0,0,10,10) of the box (0,0,10,20) give IoU 0.5, and a logit of 0
    (prediction 0.5) costs -(0.5 log 0.5 + 0.5 log 0.5) = log 2; with every sampled anchor (the default) the
    far background one counts too."""
    import math

    box = [torch.tensor([[0.0, 0.0, 10.0, 20.0]])]
    logits, deltas, anchors = _one_level([0.0, 0.0, 0.0, 0.0])
    quality = [torch.tensor([[0.0, -2.0]])]  # the far background anchor: IoU 0, logit -2: log(1 + e^-2)
    _, (term,) = rpn_loss(logits, deltas, anchors, box, TargetConfig(pos_iou=0.7, quality_anchors="object-gray"),
                          box_coder(), torch.Generator().manual_seed(0), quality=quality)
    assert abs(term.quality.item() - math.log(2)) < 1e-6
    _, (term,) = rpn_loss(logits, deltas, anchors, box, TargetConfig(pos_iou=0.7), box_coder(),
                          torch.Generator().manual_seed(0), quality=quality)
    assert abs(term.quality.item() - (math.log(2) + math.log(1 + math.exp(-2))) / 2) < 1e-6
    assert aligned_box_iou(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), box[0]).item() == 0.5
