"""The hourglass RPN: backbone, one head per level, and the anchors they score."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from baseline.anchors import RATIOS, SCALES, STRIDES, AnchorGenerator
from baseline.hourglass import Hourglass
from baseline.rpn import LevelHead


@dataclass(frozen=True)
class ModelConfig:
    """Architecture settings (saved in every checkpoint)."""

    arch: str = "hourglass"  # hourglass | downsample
    width: float = 1.0  # channel multiplier of the VGG-16 encoder (1.0 = VGG-16)
    norm: str = "bn"  # bn (vgg16_bn layout) | none (vgg16 layout)
    scales: tuple[tuple[float, ...], ...] = SCALES
    ratios: tuple[float, ...] = RATIOS
    strides: tuple[int, ...] = field(default=STRIDES)


class HourglassRPN(nn.Module):
    """Normalised images (B, 3, H, W), H and W multiples of 32 ->
    per level: logits (B, N_m, 3), deltas (B, N_m, 4), anchors (N_m, 4)."""

    def __init__(self, cfg: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Hourglass(cfg.arch, cfg.width, cfg.norm)
        self.anchor_gen = AnchorGenerator(cfg.scales, cfg.ratios, cfg.strides)
        self.heads = nn.ModuleList([LevelHead(c, a) for c, a in zip(self.backbone.out_channels,
                                                                     self.anchor_gen.num_anchors)])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        maps = self.backbone(x)
        outs = [head(m) for head, m in zip(self.heads, maps)]
        anchors = self.anchor_gen([tuple(m.shape[-2:]) for m in maps], x.device)
        return [o[0] for o in outs], [o[1] for o in outs], anchors
