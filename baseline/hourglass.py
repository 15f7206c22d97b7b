"""The conv-deconv ("hourglass") backbone of the paper's RPN.

Encoder (``baseline.encoders``): VGG-16 by default, VGG-11 or GoogLeNet; it gives F^1, F^2, F^3 at
strides 8, 16, 32.

Decoder: starting from F^3, each step up doubles the resolution with a
transposed convolution, H^3 = conv(F^3), H^2 = deconv(H^3), H^1 = deconv(H^2).
At every level the two merge in the paper's form ``G^m = sigma(w_F * F^m + w_H * H^m + b^m)``
(1x1 convolutions, one bias) with sigma read as ReLU (the slide's sigma names no function; a
sigmoid would squash the merged features into (0, 1); see FIDELITY.md), and G^m feeds that level's head.

The component table's other structures: ``arch="downsample"`` ("Down-sample + splitAnc"): the heads
see F^1..F^3 directly; ``arch="downsample-single"`` ("Down-sample alone"): one head on F^3 only.
"""

from __future__ import annotations

import torch
from torch import nn

from baseline.encoders import Encoder, build_encoder
from eic_builder.choices import ARCHS


def conv_relu(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    """3x3 conv (padding 1), batch norm when ``norm="bn"`` (the conv then has no bias), ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm != "bn")]
    if norm == "bn":
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


class ChannelShift(nn.Module):
    """x + b, one learnt shift per channel (the merge's bias when it has no norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, 1, 1)


class Merge(nn.Module):
    """G = ReLU(w_F * F + w_H * H + b): two 1x1 convolutions sharing one bias. With ``norm="bn"`` the sum
    is batch-normalised before the ReLU and b is the norm's shift: without it, a network trained from
    scratch loses most of its merged channels to ReLUs that never fire again, and a head over a few live
    channels cannot learn to regress boxes (issue 25)."""

    def __init__(self, f_channels: int, h_channels: int, out_channels: int, norm: str = "none") -> None:
        super().__init__()
        self.w_f = nn.Conv2d(f_channels, out_channels, 1, bias=False)
        self.w_h = nn.Conv2d(h_channels, out_channels, 1, bias=False)
        self.shift = nn.BatchNorm2d(out_channels) if norm == "bn" else ChannelShift(out_channels)

    def forward(self, f: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.shift(self.w_f(f) + self.w_h(h)))


def levels_of(arch: str) -> int:
    """How many resolution levels (heads) the structure ``arch`` has."""
    return 1 if arch == "downsample-single" else 3


class Hourglass(nn.Module):
    """Images (B, 3, H, W) -> the maps the heads see: G^1..G^3 (strides 8, 16, 32), each
    (B, C, H/s, W/s); F^1..F^3 for ``downsample``; [F^3] for ``downsample-single``."""

    def __init__(self, arch: str = "hourglass", width: float = 1.0, norm: str = "bn", encoder: str = "vgg16",
                 out_channels: int | None = None) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r}; choose one of {', '.join(ARCHS)}")
        self.arch = arch
        self.encoder: Encoder = build_encoder(encoder, width, norm)
        tap_channels = self.encoder.out_channels
        channels = out_channels or max(8, round(256 * width))
        if arch == "hourglass":
            self.out_channels = [channels] * 3
            self.top = conv_relu(tap_channels[2], channels, norm)
            self.up = nn.ModuleList([nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
                                     for _ in range(2)])
            self.merge = nn.ModuleList([Merge(tc, channels, channels, norm) for tc in tap_channels])
        else:
            self.out_channels = list(tap_channels)[-levels_of(arch):]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.encoder(x)
        if self.arch != "hourglass":
            return f[-levels_of(self.arch):]
        h3 = self.top(f[2])
        h2 = self.up[0](h3)[..., : f[1].shape[-2], : f[1].shape[-1]]
        h1 = self.up[1](h2)[..., : f[0].shape[-2], : f[0].shape[-1]]
        return [m(fm, hm) for m, fm, hm in zip(self.merge, f, (h1, h2, h3))]
