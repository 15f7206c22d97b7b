"""The conv-deconv ("hourglass") backbone of the paper's RPN.

Encoder: the VGG-16 convolution stack (13 conv layers, 5 max-pools), so a
torchvision VGG-16 state dict loads into it (``norm="none"``, the ``vgg16``
layout) or a VGG-16-BN one (``norm="bn"``, the ``vgg16_bn`` layout, the default:
batch norm is what lets the stack train from scratch); ``width`` scales every
channel count (1.0 is VGG-16; 0.125 a tiny net for CPU tests). Encoder maps F^1, F^2,
F^3 are taken after the 3rd, 4th and 5th pools (strides 8, 16, 32).

Decoder: starting from F^3, each step up doubles the resolution with a
transposed convolution, H^3 = conv(F^3), H^2 = deconv(H^3), H^1 = deconv(H^2).
At every level the two merge as the paper writes,
``G^m = ReLU(w_F * F^m + w_H * H^m + b^m)`` (1x1 convolutions, one bias), and
G^m feeds that level's head. ``arch="downsample"`` is the paper's "Down-sample
alone" ablation: the heads see F^m directly.
"""

from __future__ import annotations

import torch
from torch import nn

from eic_builder.choices import ARCHS, NORMS

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg_features(width: float, norm: str) -> tuple[nn.Sequential, list[int], list[int]]:
    layers: list[nn.Module] = []
    channels, taps, tap_channels, pools = 3, [], [], 0
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            pools += 1
            if pools >= 3:
                taps.append(len(layers) - 1)
                tap_channels.append(channels)
        else:
            out = max(4, round(v * width))
            layers.append(nn.Conv2d(channels, out, 3, padding=1))
            if norm == "bn":
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
    return nn.Sequential(*layers), taps, tap_channels


class Merge(nn.Module):
    """G = ReLU(w_F * F + w_H * H + b): two 1x1 convolutions sharing one bias."""

    def __init__(self, f_channels: int, h_channels: int, out_channels: int) -> None:
        super().__init__()
        self.w_f = nn.Conv2d(f_channels, out_channels, 1, bias=False)
        self.w_h = nn.Conv2d(h_channels, out_channels, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, f: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.w_f(f) + self.w_h(h) + self.bias.view(1, -1, 1, 1))


class Hourglass(nn.Module):
    """Images (B, 3, H, W) -> three maps G^1..G^3 (strides 8, 16, 32), each (B, C, H/s, W/s)."""

    def __init__(self, arch: str = "hourglass", width: float = 1.0, norm: str = "bn",
                 out_channels: int | None = None) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r}; choose one of {', '.join(ARCHS)}")
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r}; choose one of {', '.join(NORMS)}")
        self.arch = arch
        self.features, self.taps, tap_channels = _vgg_features(width, norm)
        c = out_channels or max(8, round(256 * width))
        self.out_channels = [c] * 3 if arch == "hourglass" else list(tap_channels)
        if arch == "hourglass":
            self.top = nn.Sequential(nn.Conv2d(tap_channels[2], c, 3, padding=1), nn.ReLU(inplace=True))
            self.up = nn.ModuleList([nn.ConvTranspose2d(c, c, 4, stride=2, padding=1) for _ in range(2)])
            self.merge = nn.ModuleList([Merge(tc, c, c) for tc in tap_channels])

    def encoder(self, x: torch.Tensor) -> list[torch.Tensor]:
        """F^1, F^2, F^3."""
        maps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.encoder(x)
        if self.arch == "downsample":
            return f
        h3 = self.top(f[2])
        h2 = self.up[0](h3)[..., : f[1].shape[-2], : f[1].shape[-1]]
        h1 = self.up[1](h2)[..., : f[0].shape[-2], : f[0].shape[-1]]
        return [m(fm, hm) for m, fm, hm in zip(self.merge, f, (h1, h2, h3))]

    def load_vgg16(self, state: dict[str, torch.Tensor]) -> int:
        """Copy torchvision ``vgg16`` (norm none) or ``vgg16_bn`` (norm bn) ``features.*`` weights into the
        encoder (width 1.0 only); returns the number of tensors copied."""
        own = self.features.state_dict()
        picked = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        bad = [k for k in own if k not in picked or picked[k].shape != own[k].shape]
        if bad:
            raise ValueError(f"not a VGG-16 features state dict for this width: {', '.join(bad[:3])} missing or "
                             "of another shape")
        self.features.load_state_dict({k: picked[k] for k in own})
        return len(own)
