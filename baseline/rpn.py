"""Heads, targets and loss of the multi-level RPN (the paper's "Training loss and inference").

Each level m has a head: a 3x3 conv, then per anchor K+1 = 3 logits
(0 background, 1 object, 2 gray) and 4 box deltas (torchvision's BoxCoder,
weights 1). Targets: an anchor is *object* when its IoU with a box is at least
``pos_iou`` (0.7), or it is a box's best anchor; *background* below
``neg_iou`` (0.3); *gray* in between (remark (c); ``gray=False`` ignores those
anchors instead). Per image, ``batch_per_image`` anchors are sampled: objects
up to half, backgrounds at most ``neg_ratio`` times the objects (remark (b); without that
control, ``neg_ratio=None``, backgrounds fill the rest of the batch as in Faster R-CNN), grays up to
``gray_fraction`` of the batch. The loss of level m is
cross-entropy over its sampled anchors / N1^m plus smooth-L1 over its object
anchors / N2^m (``reg_loss="giou"``: 1 - GIoU of the decoded and the matched box instead), weighted by
``reg_weight``; the total is the sum over levels.

The quality head (``TrainConfig.score = "object-x-iou"``; ours, not the paper's) adds per anchor one logit
of the IoU between the box the anchor regresses to and its matched box, trained with binary cross-entropy
against that IoU (the decoded box detached) on every sampled anchor (``quality_anchors="sampled"``; with
``"object-gray"`` on the sampled object and gray anchors only), / N3^m, weighted by ``quality_weight``.
Proposals are then ranked by object probability x predicted IoU (IoU-Net, IoU-aware RPNs), so that the NMS
keeps the tight box of a cluster rather than the best-scored loose one.

Targets, sampling and the loss are computed for the whole batch and all levels at once (the anchors of
every level concatenated, one tensor op per step rather than one per image and level).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's own idiom
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import generalized_box_iou_loss

from baseline.hourglass import conv_relu

BACKGROUND, OBJECT, GRAY, IGNORE = 0, 1, 2, -1


class LevelHead(nn.Module):
    """(B, C, H, W) -> logits (B, H*W*A, 3), deltas (B, H*W*A, 4) and, with ``quality``, IoU logits
    (B, H*W*A) (else None); anchors ordered (y, x, a). The shared 3x3 conv is batch-normalised with
    ``norm="bn"`` (as the encoder and decoder are)."""

    def __init__(self, in_channels: int, num_anchors: int, mid_channels: int | None = None, norm: str = "none",
                 quality: bool = False) -> None:
        super().__init__()
        mid = mid_channels or in_channels
        self.conv = conv_relu(in_channels, mid, norm)
        self.cls = nn.Conv2d(mid, num_anchors * 3, 1)
        self.reg = nn.Conv2d(mid, num_anchors * 4, 1)
        self.quality = nn.Conv2d(mid, num_anchors, 1) if quality else None
        for layer in (self.cls, self.reg, self.quality):
            if layer is not None:
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)
        self.num_anchors = num_anchors

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        t = self.conv(x)
        b, _, h, w = t.shape
        logits = self.cls(t).view(b, self.num_anchors, 3, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 3)
        deltas = self.reg(t).view(b, self.num_anchors, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
        quality = None if self.quality is None else self.quality(t).permute(0, 2, 3, 1).reshape(b, -1)
        return logits, deltas, quality


@dataclass(frozen=True)
class TargetConfig:
    """Matching and sampling settings (see the module doc)."""

    pos_iou: float = 0.7
    neg_iou: float = 0.3
    gray: bool = True
    batch_per_image: int = 256
    neg_ratio: float | None = 3.0  # None: no ratio control, negatives fill the batch
    gray_fraction: float = 0.1
    min_negatives: int = 16
    reg_loss: str = "smooth-l1"  # smooth-l1 on the deltas | giou on the decoded boxes
    reg_weight: float = 1.0
    quality_weight: float = 1.0  # the IoU term's weight (models with a quality head)
    quality_anchors: str = "sampled"  # which sampled anchors train the IoU: all of them | object-gray


def assign(anchors: torch.Tensor, boxes: torch.Tensor, cfg: TargetConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Label N anchors (N, 4) against G boxes (G, 4): (labels (N,) in {0, 1, 2} (-1 for gray anchors with
    ``gray=False``), matched box (N, 4)); one image of :func:`assign_batch`."""
    labels, matched = assign_batch(anchors, [boxes], cfg)
    return labels[0], matched[0]


def assign_batch(anchors: torch.Tensor, boxes: list[torch.Tensor], cfg: TargetConfig
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`assign` for B images at once: N anchors (N, 4) against ``boxes[b]`` (G_b, 4) ->
    labels (B, N) and matched boxes (B, N, 4) (zeros for an image without boxes)."""
    n, device = len(anchors), anchors.device
    g_max = max((len(b) for b in boxes), default=0)
    if g_max == 0:
        return (torch.zeros((len(boxes), n), dtype=torch.long, device=device),
                anchors.new_zeros((len(boxes), n, 4)))
    gt = anchors.new_zeros((len(boxes), g_max, 4))
    valid = torch.zeros((len(boxes), g_max), dtype=torch.bool, device=device)
    for b, given in enumerate(boxes):
        gt[b, : len(given)] = given
        valid[b, : len(given)] = True
    iou = batched_box_iou(gt, anchors).masked_fill_(~valid[:, :, None], -1.0)  # (B, G, N)
    best, match = iou.max(dim=1)
    labels = torch.full(best.shape, GRAY if cfg.gray else IGNORE, dtype=torch.long, device=device)
    labels[best < cfg.neg_iou] = BACKGROUND
    labels[best >= cfg.pos_iou] = OBJECT
    # every box's best anchors (ties included) are objects, however low their IoU
    per_box = iou.max(dim=2, keepdim=True).values
    b, g, a = torch.nonzero((iou == per_box) & (per_box > 0), as_tuple=True)
    labels[b, a] = OBJECT
    match[b, a] = g
    return labels, torch.gather(gt, 1, match[:, :, None].expand(-1, -1, 4))


def batched_box_iou(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of boxes (B, G, 4) with anchors (N, 4), both x1, y1, x2, y2: (B, G, N)."""
    lt = torch.maximum(boxes[:, :, None, :2], anchors[None, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], anchors[None, None, :, 2:])
    inter = (rb - lt).clamp_(min=0).prod(dim=-1)
    area_b = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    return inter / (area_b[:, :, None] + area_a[None, None, :] - inter).clamp_(min=1e-9)


def aligned_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of each box of a (P, 4) with the box of b (P, 4) in the same row: (P,)."""
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = ((a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1) + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1))
    return inter / (area - inter).clamp(min=1e-9)


def sample_batch(labels: torch.Tensor, cfg: TargetConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Which anchors enter the loss, for B images at once: labels (B, N) -> mask (B, N). The same rule as
    :func:`sample` (objects up to half the batch, backgrounds at most ``neg_ratio`` times the objects,
    grays up to ``gray_fraction``), drawn with one random order of each image's anchors: an anchor is kept
    when its rank among the anchors of its label is below that label's quota."""
    batch, n = labels.shape
    keys = torch.rand((batch, n), generator=generator, device="cpu").to(labels.device)
    order = keys.argsort(dim=1)
    ranked = labels.gather(1, order)

    def pick(label: int, quota: torch.Tensor) -> torch.Tensor:
        member = ranked == label
        chosen = member & (member.cumsum(dim=1) <= quota[:, None])
        return torch.zeros_like(chosen).scatter_(1, order, chosen)

    full = torch.full((batch,), cfg.batch_per_image, dtype=torch.long, device=labels.device)
    pos = pick(OBJECT, full // 2)
    n_pos = pos.sum(dim=1)
    n_neg = full if cfg.neg_ratio is None else \
        torch.clamp((cfg.neg_ratio * n_pos.double()).floor().long(), min=cfg.min_negatives)
    gray = pick(GRAY, torch.full_like(full, int(cfg.gray_fraction * cfg.batch_per_image))) if cfg.gray \
        else torch.zeros_like(pos)
    neg = pick(BACKGROUND, torch.minimum(n_neg, full - n_pos - gray.sum(dim=1)))
    return pos | gray | neg


def sample(labels: torch.Tensor, cfg: TargetConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the anchors that enter the loss for one image of labels (N,): one image of
    :func:`sample_batch`."""
    return torch.nonzero(sample_batch(labels[None], cfg, generator)[0], as_tuple=True)[0]


# The one definition of how box deltas are encoded: training (targets) and inference (decoding)
# both take their coder from here, so that the two cannot drift apart.
BOX_CODER_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def box_coder() -> BoxCoder:
    """torchvision's ``BoxCoder`` with :data:`BOX_CODER_WEIGHTS` (dx, dy, dw, dh)."""
    return BoxCoder(weights=BOX_CODER_WEIGHTS)


def _box_terms(deltas: torch.Tensor, matched: torch.Tensor, anchors: torch.Tensor, kind: str,
               coder: BoxCoder) -> torch.Tensor:
    """The box loss of each of P object anchors (P, 4), its predicted deltas (P, 4) and matched box (P, 4):
    (P,) smooth-L1 (beta 1/9) against the encoded box, summed over the 4 deltas, or 1 - GIoU between the
    decoded and the matched box."""
    if kind == "giou":
        return generalized_box_iou_loss(coder.decode_single(deltas, anchors), matched, reduction="none")
    return F.smooth_l1_loss(deltas, coder.encode_single(matched, anchors), beta=1 / 9, reduction="none").sum(dim=1)


@dataclass
class LevelLoss:
    """One level's loss terms (for logging); ``quality`` is None without a quality head."""

    cls: torch.Tensor
    reg: torch.Tensor
    n_positive: int
    quality: torch.Tensor | None = None


def _per_level(values: torch.Tensor, level: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of ``values`` (K,) by ``level`` (K,): (levels,) each."""
    sums = values.new_zeros(levels).index_add_(0, level, values)
    counts = torch.bincount(level, minlength=levels)
    return sums, counts


def rpn_loss(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
             boxes: list[torch.Tensor], cfg: TargetConfig, coder: BoxCoder,
             generator: torch.Generator | None = None,
             quality: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[LevelLoss]]:
    """Total loss over levels for a batch.

    ``logits[m]`` (B, N_m, 3), ``deltas[m]`` (B, N_m, 4), ``anchors[m]`` (N_m, 4), ``boxes[b]`` (G_b, 4),
    ``quality[m]`` (B, N_m) IoU logits or None: input-image pixels. Matching is over the anchors of all
    levels together; each level's terms are normalised by its own sampled (objects for the box term,
    the anchors ``cfg.quality_anchors`` names for the quality term) anchors.
    """
    levels = len(anchors)
    all_anchors = torch.cat(anchors)
    level_of = torch.repeat_interleave(torch.arange(levels, device=all_anchors.device),
                                       torch.tensor([len(a) for a in anchors], device=all_anchors.device))
    all_logits, all_deltas = torch.cat(logits, dim=1), torch.cat(deltas, dim=1)
    labels, matched = assign_batch(all_anchors, boxes, cfg)
    chosen = sample_batch(labels, cfg, generator)
    b, a = torch.nonzero(chosen, as_tuple=True)
    cls_sum, n_cls = _per_level(F.cross_entropy(all_logits[b, a].float(), labels[b, a], reduction="none"),
                                level_of[a], levels)
    pb, pa = torch.nonzero(chosen & (labels == OBJECT), as_tuple=True)
    reg_sum, n_pos = _per_level(_box_terms(all_deltas[pb, pa].float(), matched[pb, pa], all_anchors[pa],
                                           cfg.reg_loss, coder), level_of[pa], levels)
    # "* 0" keeps every head in the graph when a level has nothing to learn from
    # (DistributedDataParallel needs a gradient for every parameter)
    total = all_logits.sum() * 0 + all_deltas.sum() * 0
    cls = cls_sum / n_cls.clamp(min=1)
    reg = cfg.reg_weight * reg_sum / n_pos.clamp(min=1)
    total = total + cls.sum() + reg.sum()
    q_terms = None
    if quality is not None:
        all_quality = torch.cat(quality, dim=1)
        trained = chosen if cfg.quality_anchors == "sampled" else chosen & ((labels == OBJECT) | (labels == GRAY))
        qb, qa = torch.nonzero(trained, as_tuple=True)
        with torch.no_grad():
            target = aligned_box_iou(coder.decode_single(all_deltas[qb, qa].float(), all_anchors[qa]),
                                     matched[qb, qa])
        q_sum, n_q = _per_level(F.binary_cross_entropy_with_logits(all_quality[qb, qa].float(), target,
                                                                   reduction="none"), level_of[qa], levels)
        q_terms = cfg.quality_weight * q_sum / n_q.clamp(min=1)
        total = total + all_quality.sum() * 0 + q_terms.sum()
    terms = [LevelLoss(cls[m].detach(), reg[m].detach(), int(n_pos[m]),
                       None if q_terms is None else q_terms[m].detach()) for m in range(levels)]
    return total, terms
