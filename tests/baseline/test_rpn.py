from __future__ import annotations

import torch

from baseline.rpn import BACKGROUND, GRAY, IGNORE, OBJECT, TargetConfig, assign, box_coder, rpn_loss, sample


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
    logits, deltas, anchors = model(x)
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
