"""Proposals from a trained RPN: multi-scale inference with two NMS stages.

For every test scale (shorter side, default 200..1400 step 200; or, with ``scale_range``, one scale an
image: its own shorter side clamped into that range) the image is resized and run through the network.
Inside each level the object probabilities (softmax over background / object / gray; with ``score``
``object-x-iou``, times the predicted IoU of the regressed box to the power ``quality_exponent``) rank the anchors: the
best ``pre_nms`` are decoded, clipped, tiny boxes dropped, and NMS at 0.7
keeps ``post_nms``. The survivors of all levels and scales, mapped back to
original pixels, go through NMS at 0.5 ("across scales"), and the best
``top_k`` remain. With ``box_voting`` (an IoU), each kept box is then replaced by the score-weighted mean of
the candidates that overlap it at least that much (those it suppressed and itself; Gidaris and Komodakis'
box voting). With ``soft_nms`` (a sigma), a Gaussian soft-NMS across levels and scales replaces the NMS at
``scale_nms``. Boxes: x1, y1, x2, y2 float pixels of the original image.

:func:`propose_sets` also gives, from the same forward pass, the proposals of the anchors alone (each
ranked anchor as its own box, its deltas taken as zero, through the same NMS): what the box regressor
adds is the difference between the two.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou, clip_boxes_to_image, nms, remove_small_boxes

from baseline.config import TEST_SCALES, ProposalConfig  # noqa: F401 - re-exported: their old home
from baseline.data import pad_batch, prepare
from baseline.model import HourglassRPN
from baseline.rpn import BACKGROUND, box_coder
from eic_builder.boxes import scale_boxes
from eic_builder.errors import OptionError

REGRESSED, ANCHORS_ONLY = "rpn", "rpn-anchors"


def _level_survivors(boxes: torch.Tensor, score: torch.Tensor, size: tuple[int, int], cfg: ProposalConfig,
                     fx: float, fy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One level's ranked boxes (input pixels) clipped, tiny ones dropped, NMS at ``level_nms``, the best
    ``post_nms`` kept, mapped back to original pixels."""
    boxes = clip_boxes_to_image(boxes, size)
    keep = remove_small_boxes(boxes, cfg.min_size * min(fx, fy))
    boxes, score = boxes[keep], score[keep]
    keep = nms(boxes, score, cfg.level_nms)[: cfg.post_nms]
    return scale_boxes(boxes[keep], 1 / fx, 1 / fy), score[keep]


def box_vote(kept: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Each of the K kept boxes (K, 4) replaced by the mean of the M candidates (M, 4) that overlap it at
    least ``iou``, weighted by their scores (M,) (a kept box is one of its own candidates)."""
    weights = (box_iou(kept, boxes) >= iou) * scores[None, :]
    return (weights @ boxes) / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)


SOFT_NMS_CANDIDATES = 4000  # the best-scored candidates soft-NMS sees


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, sigma: float, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian soft-NMS (Bodla et al. 2017) of N boxes (N, 4) with scores (N,): repeatedly keep the best
    box and multiply every other score by exp(-IoU^2 / sigma), ``top_k`` times. Returns the indices kept
    (K,), best first, and their decayed scores (K,). A box near a kept one is ranked lower, not dropped:
    the first proposals spread over the objects, and the tight variants of each follow."""
    order = scores.argsort(descending=True)[:SOFT_NMS_CANDIDATES]
    # numpy, one IoU row per kept box: a thousand small steps, each far cheaper than a torch op's dispatch
    # and than the whole IoU matrix
    x1, y1, x2, y2 = boxes[order].double().numpy().T
    area = (x2 - x1) * (y2 - y1)
    left = scores[order].double().numpy().copy()
    kept, kept_scores = [], []
    for _ in range(min(top_k, len(order))):
        best = int(left.argmax())
        kept.append(best)
        kept_scores.append(left[best])
        inter = (np.minimum(x2, x2[best]) - np.maximum(x1, x1[best])).clip(min=0) * \
            (np.minimum(y2, y2[best]) - np.maximum(y1, y1[best])).clip(min=0)
        iou = inter / np.maximum(area + area[best] - inter, 1e-12)
        left *= np.exp(-iou * iou / sigma)
        left[best] = -1.0
    return order[torch.tensor(kept, dtype=torch.long)], torch.tensor(kept_scores, dtype=scores.dtype)


def ranking_score(model: HourglassRPN, cfg: ProposalConfig) -> str:
    """What ranks ``model``'s proposals under ``cfg``: ``cfg.score``, else the one it was trained for;
    :class:`OptionError` for ``object-x-iou`` on a model without a quality head."""
    score = cfg.score or ("object-x-iou" if model.cfg.quality else "object")
    if score == "object-x-iou" and not model.cfg.quality:
        raise OptionError("`score` object-x-iou needs a checkpoint trained with it (train-baseline --score "
                          "object-x-iou); this one has no quality head: use `score` object")
    return score


@torch.inference_mode()
def propose_sets(model: HourglassRPN, image: torch.Tensor, cfg: ProposalConfig = ProposalConfig(),
                 device: torch.device | None = None, amp: bool = False,
                 anchors_only: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Proposals for one uint8 (3, H, W) image: ``{"rpn": (boxes (k, 4), scores (k,))}``, best first, on the
    CPU; with ``anchors_only`` also ``"rpn-anchors"``: the same ranked anchors with their deltas at zero."""
    device = device or next(model.parameters()).device
    coder = box_coder()
    with_quality = ranking_score(model, cfg) == "object-x-iou"
    _, height, width = image.shape
    found: dict[str, tuple[list, list]] = {REGRESSED: ([], [])}
    if anchors_only:
        found[ANCHORS_ONLY] = ([], [])
    for scale in cfg.scales_for(height, width):
        x, (fx, fy) = prepare(image.to(device), scale, cfg.max_size)
        h, w = x.shape[-2:]
        batch = pad_batch([x]).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(batch)
        for m, (lg, dl, an) in enumerate(zip(out.logits, out.deltas, out.anchors)):
            prob = 1 - torch.softmax(lg[0].float(), dim=-1)[:, BACKGROUND]
            if with_quality:
                prob = prob * torch.sigmoid(out.quality[m][0].float()) ** cfg.quality_exponent
            score, idx = prob.topk(min(cfg.pre_nms, len(prob)))
            ranked = {REGRESSED: coder.decode_single(dl[0][idx].float(), an[idx])}
            if anchors_only:
                ranked[ANCHORS_ONLY] = an[idx].float()
            for kind, boxes in ranked.items():
                level_boxes, level_scores = _level_survivors(boxes, score, (h, w), cfg, fx, fy)
                found[kind][0].append(level_boxes)
                found[kind][1].append(level_scores)
    out_sets = {}
    for kind, (all_boxes, all_scores) in found.items():
        boxes = clip_boxes_to_image(torch.cat(all_boxes), (height, width))
        scores = torch.cat(all_scores)
        if cfg.soft_nms is None:
            keep = nms(boxes, scores, cfg.scale_nms)[: cfg.top_k]  # across levels and scales: one NMS over all
            kept_scores = scores[keep]
        else:
            keep, kept_scores = soft_nms(boxes.cpu(), scores.cpu(), cfg.soft_nms, cfg.top_k)
        kept = boxes[keep] if cfg.box_voting is None else box_vote(boxes[keep], boxes, scores, cfg.box_voting)
        out_sets[kind] = (kept.cpu(), kept_scores.cpu())
    return out_sets


def propose(model: HourglassRPN, image: torch.Tensor, cfg: ProposalConfig = ProposalConfig(),
            device: torch.device | None = None, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposals for one uint8 (3, H, W) image: boxes (k, 4) and scores (k,), best first, on the CPU."""
    return propose_sets(model, image, cfg, device, amp)[REGRESSED]
