"""The hourglass RPN: backbone, one head per level, and the anchors they score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from baseline.anchors import AnchorGenerator, anchor_layout
from baseline.hourglass import Hourglass, levels_of
from baseline.rpn import LevelHead


@dataclass(frozen=True)
class ModelConfig:
    """Architecture settings (saved in every checkpoint)."""

    arch: str = "hourglass"  # hourglass | downsample | downsample-single
    width: float = 1.0  # channel multiplier of a VGG encoder (1.0 = VGG's own)
    norm: str = "bn"  # bn (vgg*_bn layout) | none (vgg* layout)
    encoder: str = "vgg16"  # vgg16 | vgg11 | googlenet
    anchors: int = 30  # 30: the paper's set; 9: Faster R-CNN's (baseline.anchors)
    quality: bool = False  # a head predicting each anchor's regressed-box IoU (TrainConfig.score object-x-iou)


class RPNOutput(NamedTuple):
    """Per level m: ``logits`` (B, N_m, 3), ``deltas`` (B, N_m, 4), ``anchors`` (N_m, 4) in input pixels,
    and ``quality`` (B, N_m) IoU logits (None for a model without a quality head)."""

    logits: list[torch.Tensor]
    deltas: list[torch.Tensor]
    anchors: list[torch.Tensor]
    quality: list[torch.Tensor] | None


class HourglassRPN(nn.Module):
    """Normalised images (B, 3, H, W), H and W multiples of 32 -> :class:`RPNOutput`."""

    def __init__(self, cfg: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Hourglass(cfg.arch, cfg.width, cfg.norm, cfg.encoder)
        self.anchor_gen = AnchorGenerator(*anchor_layout(cfg.anchors, levels_of(cfg.arch)))
        self.heads = nn.ModuleList([LevelHead(c, a, norm=cfg.norm, quality=cfg.quality)
                                    for c, a in zip(self.backbone.out_channels, self.anchor_gen.num_anchors)])

    def forward(self, x: torch.Tensor) -> RPNOutput:
        maps = self.backbone(x)
        outs = [head(m) for head, m in zip(self.heads, maps)]
        anchors = self.anchor_gen([tuple(m.shape[-2:]) for m in maps], x.device)
        return RPNOutput([o[0] for o in outs], [o[1] for o in outs], anchors,
                         [o[2] for o in outs] if self.cfg.quality else None)
