"""The encoders of the RPN (and of ``pretrain``): images -> F^1, F^2, F^3 at strides 8, 16, 32.

* ``vgg16``: the VGG-16 convolution stack (13 conv layers, 5 max-pools), our default.
* ``vgg11``: VGG-11's stack (8 conv layers), the shallower network of the paper's component table
  ("Down-sample" against "Deeper down-sample").
* ``googlenet``: torchvision's GoogLeNet (Inception v1 with batch norm), the family of the paper's
  Inception-BN encoder; F^1..F^3 are the outputs of inception3b, 4e and 5b (480, 832, 1024 channels).

The VGG stacks take ``width`` (a channel multiplier: 1.0 is VGG's, 0.125 a tiny net for CPU tests) and
``norm`` (``bn``: the ``vgg*_bn`` layout, batch norm after every convolution, which lets the stack train
from scratch; ``none``: the plain layout). GoogLeNet is width 1.0 with batch norm only.

Every encoder names its parameters as torchvision does (``features.N.*`` for VGG, ``conv1.*``,
``inception3a.*``... for GoogLeNet), so :meth:`Encoder.load_torchvision` takes a torchvision state dict
(or what ``eic-build pretrain`` writes) directly, and ``state_dict()`` is one.
"""

from __future__ import annotations

import torch
from torch import nn

from eic_builder.choices import ENCODERS, NORMS

VGG_CFGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class Encoder(nn.Module):
    """Images (B, 3, H, W), H and W multiples of 32 -> [F^1, F^2, F^3] of strides 8, 16, 32;
    ``out_channels`` lists their channel counts."""

    out_channels: list[int]

    def load_torchvision(self, state: dict[str, torch.Tensor]) -> int:
        """Copy every tensor of this encoder from a torchvision-format state dict (other keys, such as a
        classifier's, are ignored); returns the number of tensors copied. Raises ``ValueError`` naming the
        first missing or differently shaped keys."""
        own = self.state_dict()
        bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"not a torchvision {self.name} state dict for this encoder: {', '.join(bad[:3])} "
                             f"missing or of another shape ({len(bad)} of {len(own)} tensors)")
        self.load_state_dict({k: state[k] for k in own})
        return len(own)

    @property
    def name(self) -> str:
        raise NotImplementedError


class VGGEncoder(Encoder):
    """A VGG convolution stack; F^m is taken after its 3rd, 4th and 5th max-pools."""

    def __init__(self, depth: str = "vgg16", width: float = 1.0, norm: str = "bn") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r}; choose one of {', '.join(NORMS)}")
        self._name = f"{depth}{'_bn' if norm == 'bn' else ''}"
        layers: list[nn.Module] = []
        channels, pools, self.taps, self.out_channels = 3, 0, [], []
        for v in VGG_CFGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                pools += 1
                if pools >= 3:
                    self.taps.append(len(layers) - 1)
                    self.out_channels.append(channels)
            else:
                out = max(4, round(v * width))
                layers.append(nn.Conv2d(channels, out, 3, padding=1))
                if norm == "bn":
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU(inplace=True))
                channels = out
        self.features = nn.Sequential(*layers)

    @property
    def name(self) -> str:
        return self._name

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                maps.append(x)
        return maps


class GoogLeNetEncoder(Encoder):
    """torchvision's GoogLeNet up to inception5b (no auxiliary heads, no classifier)."""

    STAGES = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
              "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
              "inception5a", "inception5b")
    TAPS = ("inception3b", "inception4e", "inception5b")

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import googlenet

        net = googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=False)
        for stage in self.STAGES:
            self.add_module(stage, getattr(net, stage))
        self.out_channels = [480, 832, 1024]

    @property
    def name(self) -> str:
        return "googlenet"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for stage in self.STAGES:
            x = getattr(self, stage)(x)
            if stage in self.TAPS:
                maps.append(x)
        return maps


def build_encoder(name: str = "vgg16", width: float = 1.0, norm: str = "bn") -> Encoder:
    """The encoder ``name`` (one of :data:`eic_builder.choices.ENCODERS`); ``ValueError`` for a setting
    it does not take."""
    if name not in ENCODERS:
        raise ValueError(f"encoder={name!r}; choose one of {', '.join(ENCODERS)}")
    if name == "googlenet":
        if width != 1.0 or norm != "bn":
            raise ValueError(f"the googlenet encoder is width 1 with batch norm (got width {width:g}, norm {norm})")
        return GoogLeNetEncoder()
    return VGGEncoder(name, width, norm)
