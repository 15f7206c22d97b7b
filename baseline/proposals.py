"""Proposals from a trained RPN: multi-scale inference with two NMS stages.

For every test scale (shorter side, default 200..1400 step 200) the image is
resized and run through the network. Inside each level the object
probabilities (softmax over background / object / gray) rank the anchors: the
best ``pre_nms`` are decoded, clipped, tiny boxes dropped, and NMS at 0.7
keeps ``post_nms``. The survivors of all levels and scales, mapped back to
original pixels, go through NMS at 0.5 ("across scales"), and the best
``top_k`` remain. Boxes: x1, y1, x2, y2 float pixels of the original image.

:func:`propose_sets` also gives, from the same forward pass, the proposals of the anchors alone (each
ranked anchor as its own box, its deltas taken as zero, through the same NMS): what the box regressor
adds is the difference between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import clip_boxes_to_image, nms, remove_small_boxes

from baseline.data import pad_batch, prepare
from baseline.model import HourglassRPN
from baseline.rpn import BACKGROUND, box_coder
from eic_builder.boxes import scale_boxes
from eic_builder.errors import OptionError

TEST_SCALES = (200, 400, 600, 800, 1000, 1200, 1400)


@dataclass(frozen=True)
class ProposalConfig:
    """Inference settings."""

    scales: tuple[int, ...] = TEST_SCALES
    max_size: int = 2000
    pre_nms: int = 2000
    post_nms: int = 500
    level_nms: float = 0.7
    scale_nms: float = 0.5
    top_k: int = 1000
    min_size: float = 1.0

    def validate(self) -> None:
        """Refuse values that make no sense (they would give empty or meaningless proposals)."""
        if not self.scales or min(self.scales) < 16:
            raise OptionError(f"`scales` {','.join(map(str, self.scales))}: each test scale must be >= 16 pixels")
        if self.top_k < 1:
            raise OptionError(f"`top_k`={self.top_k} must be >= 1")
        for name in ("level_nms", "scale_nms"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise OptionError(f"`{name}`={value} must be in (0, 1]")


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


@torch.inference_mode()
def propose_sets(model: HourglassRPN, image: torch.Tensor, cfg: ProposalConfig = ProposalConfig(),
                 device: torch.device | None = None, amp: bool = False,
                 anchors_only: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Proposals for one uint8 (3, H, W) image: ``{"rpn": (boxes (k, 4), scores (k,))}``, best first, on the
    CPU; with ``anchors_only`` also ``"rpn-anchors"``: the same ranked anchors with their deltas at zero."""
    device = device or next(model.parameters()).device
    coder = box_coder()
    _, height, width = image.shape
    found: dict[str, tuple[list, list]] = {REGRESSED: ([], [])}
    if anchors_only:
        found[ANCHORS_ONLY] = ([], [])
    for scale in cfg.scales:
        x, (fx, fy) = prepare(image.to(device), scale, cfg.max_size)
        h, w = x.shape[-2:]
        batch = pad_batch([x])
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, deltas, anchors = model(batch)
        for lg, dl, an in zip(logits, deltas, anchors):
            prob = 1 - torch.softmax(lg[0].float(), dim=-1)[:, BACKGROUND]
            score, idx = prob.topk(min(cfg.pre_nms, len(prob)))
            ranked = {REGRESSED: coder.decode_single(dl[0][idx].float(), an[idx])}
            if anchors_only:
                ranked[ANCHORS_ONLY] = an[idx].float()
            for kind, boxes in ranked.items():
                level_boxes, level_scores = _level_survivors(boxes, score, (h, w), cfg, fx, fy)
                found[kind][0].append(level_boxes)
                found[kind][1].append(level_scores)
    out = {}
    for kind, (all_boxes, all_scores) in found.items():
        boxes = clip_boxes_to_image(torch.cat(all_boxes), (height, width))
        scores = torch.cat(all_scores)
        keep = nms(boxes, scores, cfg.scale_nms)[: cfg.top_k]  # across levels and scales: one NMS over all
        out[kind] = (boxes[keep].cpu(), scores[keep].cpu())
    return out


def propose(model: HourglassRPN, image: torch.Tensor, cfg: ProposalConfig = ProposalConfig(),
            device: torch.device | None = None, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposals for one uint8 (3, H, W) image: boxes (k, 4) and scores (k,), best first, on the CPU."""
    return propose_sets(model, image, cfg, device, amp)[REGRESSED]
