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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's own idiom
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou, generalized_box_iou_loss

from baseline.hourglass import conv_relu

BACKGROUND, OBJECT, GRAY, IGNORE = 0, 1, 2, -1


class LevelHead(nn.Module):
    """(B, C, H, W) -> logits (B, H*W*A, 3) and deltas (B, H*W*A, 4), anchors ordered (y, x, a). The shared
    3x3 conv is batch-normalised with ``norm="bn"`` (as the encoder and decoder are)."""

    def __init__(self, in_channels: int, num_anchors: int, mid_channels: int | None = None, norm: str = "none") -> None:
        super().__init__()
        mid = mid_channels or in_channels
        self.conv = conv_relu(in_channels, mid, norm)
        self.cls = nn.Conv2d(mid, num_anchors * 3, 1)
        self.reg = nn.Conv2d(mid, num_anchors * 4, 1)
        for layer in (self.cls, self.reg):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        self.num_anchors = num_anchors

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.conv(x)
        b, _, h, w = t.shape
        logits = self.cls(t).view(b, self.num_anchors, 3, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 3)
        deltas = self.reg(t).view(b, self.num_anchors, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
        return logits, deltas


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


def assign(anchors: torch.Tensor, boxes: torch.Tensor, cfg: TargetConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Label N anchors (N, 4) against G boxes (G, 4): (labels (N,) in {0, 1, 2}, matched box (N, 4))."""
    n = len(anchors)
    if len(boxes) == 0:
        return torch.zeros(n, dtype=torch.long, device=anchors.device), torch.zeros_like(anchors)
    iou = box_iou(boxes, anchors)  # (G, N)
    best, match = iou.max(dim=0)
    labels = torch.full((n,), GRAY if cfg.gray else IGNORE, dtype=torch.long, device=anchors.device)
    labels[best < cfg.neg_iou] = BACKGROUND
    labels[best >= cfg.pos_iou] = OBJECT
    # every box's best anchors (ties included) are objects, however low their IoU
    per_box = iou.max(dim=1, keepdim=True).values
    g, a = torch.nonzero((iou == per_box) & (per_box > 0), as_tuple=True)
    labels[a] = OBJECT
    match[a] = g
    return labels, boxes[match]


def sample(labels: torch.Tensor, cfg: TargetConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the anchors that enter the loss for one image (controlled negative ratio)."""
    def pick(mask: torch.Tensor, k: int) -> torch.Tensor:
        idx = torch.nonzero(mask, as_tuple=True)[0]
        if len(idx) <= k:
            return idx
        perm = torch.randperm(len(idx), generator=generator, device="cpu")[:k].to(idx.device)
        return idx[perm]

    pos = pick(labels == OBJECT, cfg.batch_per_image // 2)
    n_neg = cfg.batch_per_image if cfg.neg_ratio is None else max(cfg.min_negatives, int(cfg.neg_ratio * len(pos)))
    n_gray = int(cfg.gray_fraction * cfg.batch_per_image) if cfg.gray else 0
    gray = pick(labels == GRAY, n_gray)
    neg = pick(labels == BACKGROUND, min(n_neg, cfg.batch_per_image - len(pos) - len(gray)))
    return torch.cat([pos, neg, gray])


# The one definition of how box deltas are encoded: training (targets) and inference (decoding)
# both take their coder from here, so that the two cannot drift apart.
BOX_CODER_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def box_coder() -> BoxCoder:
    """torchvision's ``BoxCoder`` with :data:`BOX_CODER_WEIGHTS` (dx, dy, dw, dh)."""
    return BoxCoder(weights=BOX_CODER_WEIGHTS)


def _box_term(deltas: torch.Tensor, matched: torch.Tensor, anchors: torch.Tensor, kind: str,
              coder: BoxCoder) -> torch.Tensor:
    """The summed box loss of (P, 4) predicted deltas of P object anchors (P, 4) matched to the boxes
    (P, 4): smooth-L1 (beta 1/9) against the encoded boxes, or 1 - GIoU between the decoded and the
    matched boxes. One call per level, however many images the batch holds."""
    if kind == "giou":
        return generalized_box_iou_loss(coder.decode_single(deltas, anchors), matched, reduction="sum")
    return F.smooth_l1_loss(deltas, coder.encode_single(matched, anchors), beta=1 / 9, reduction="sum")


@dataclass
class LevelLoss:
    """One level's loss terms (for logging) and their sum."""

    cls: torch.Tensor
    reg: torch.Tensor
    n_positive: int


def rpn_loss(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
             boxes: list[torch.Tensor], cfg: TargetConfig, coder: BoxCoder,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[LevelLoss]]:
    """Total loss over levels for a batch.

    ``logits[m]`` (B, N_m, 3), ``deltas[m]`` (B, N_m, 4), ``anchors[m]`` (N_m, 4), ``boxes[b]`` (G_b, 4):
    input-image pixels. Matching is over the anchors of all levels together.
    """
    sizes = [len(a) for a in anchors]
    all_anchors = torch.cat(anchors)
    per_level = [[[], [], [], [], []] for _ in anchors]  # logits, labels; deltas, matched boxes, anchors of objects
    for b, gt in enumerate(boxes):
        labels, matched = assign(all_anchors, gt, cfg)
        chosen = torch.zeros_like(labels, dtype=torch.bool)
        chosen[sample(labels, cfg, generator)] = True
        start = 0
        for m, n in enumerate(sizes):
            sl = slice(start, start + n)
            sel = chosen[sl]
            lab = labels[sl][sel]
            per_level[m][0].append(logits[m][b][sel])
            per_level[m][1].append(lab)
            pos = sel & (labels[sl] == OBJECT)
            per_level[m][2].append(deltas[m][b][pos])
            per_level[m][3].append(matched[sl][pos])
            per_level[m][4].append(anchors[m][pos])
            start += n
    total = logits[0].new_zeros(())
    terms = []
    for m, (lg, lb, dl, gt, an) in enumerate(per_level):
        lg, lb, dl, gt, an = torch.cat(lg), torch.cat(lb), torch.cat(dl), torch.cat(gt), torch.cat(an)
        # "* 0" terms keep every head in the graph when a level has nothing to learn from
        # (DistributedDataParallel needs a gradient for every parameter)
        cls = F.cross_entropy(lg.float(), lb, reduction="sum") / len(lb) if len(lb) else logits[m].sum() * 0
        reg = cfg.reg_weight * _box_term(dl.float(), gt, an, cfg.reg_loss, coder) / len(dl) if len(dl) \
            else deltas[m].sum() * 0
        total = total + cls + reg
        terms.append(LevelLoss(cls.detach(), reg.detach(), len(dl)))
    return total, terms
