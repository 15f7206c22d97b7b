"""The hourglass RPN: backbone, one head per level, and the anchors they score."""

from __future__ import annotations

from dataclasses import dataclass

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


class HourglassRPN(nn.Module):
    """Normalised images (B, 3, H, W), H and W multiples of 32 ->
    per level: logits (B, N_m, 3), deltas (B, N_m, 4), anchors (N_m, 4)."""

    def __init__(self, cfg: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Hourglass(cfg.arch, cfg.width, cfg.norm, cfg.encoder)
        self.anchor_gen = AnchorGenerator(*anchor_layout(cfg.anchors, levels_of(cfg.arch)))
        self.heads = nn.ModuleList([LevelHead(c, a, norm=cfg.norm) for c, a in zip(self.backbone.out_channels,
                                                                     self.anchor_gen.num_anchors)])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        maps = self.backbone(x)
        outs = [head(m) for head, m in zip(self.heads, maps)]
        anchors = self.anchor_gen([tuple(m.shape[-2:]) for m in maps], x.device)
        return [o[0] for o in outs], [o[1] for o in outs], anchors
