from __future__ import annotations

import pytest
import torch

from baseline.hourglass import Hourglass, Merge
from baseline.model import HourglassRPN, ModelConfig


@pytest.mark.parametrize("arch", ["hourglass", "downsample"])
def test_three_levels_at_strides_8_16_32(arch: str) -> None:
    net = Hourglass(arch, width=0.125)
    maps = net(torch.zeros(2, 3, 96, 160))
    assert [tuple(m.shape[-2:]) for m in maps] == [(12, 20), (6, 10), (3, 5)]
    assert [m.shape[1] for m in maps] == net.out_channels


def test_merge_is_the_papers_formula() -> None:
    m = Merge(3, 5, 4)
    f, h = torch.randn(1, 3, 2, 2), torch.randn(1, 5, 2, 2)
    with torch.no_grad():
        m.bias.fill_(0.3)
    expect = torch.relu(m.w_f(f) + m.w_h(h) + 0.3)
    assert torch.allclose(m(f, h), expect)


def test_rpn_outputs_match_anchors() -> None:
    model = HourglassRPN(ModelConfig(width=0.125))
    logits, deltas, anchors = model(torch.zeros(1, 3, 64, 96))
    for lg, dl, an in zip(logits, deltas, anchors):
        assert lg.shape == (1, len(an), 3) and dl.shape == (1, len(an), 4)
    assert [len(a) for a in anchors] == [8 * 12 * 10, 4 * 6 * 10, 2 * 3 * 10]


def test_load_vgg16_weights() -> None:
    from torchvision.models import vgg16, vgg16_bn

    torch.manual_seed(0)
    plain, bn = vgg16(weights=None).state_dict(), vgg16_bn(weights=None).state_dict()
    net = Hourglass("hourglass", width=1.0, norm="none")
    assert net.load_vgg16(plain) == 26  # 13 convolutions, weight and bias
    assert torch.equal(net.features[0].weight, plain["features.0.weight"])
    assert Hourglass("hourglass", width=1.0, norm="bn").load_vgg16(bn) == 13 * 2 + 13 * 5
    with pytest.raises(ValueError, match="not a VGG-16 features state dict for this width"):
        Hourglass("hourglass", width=0.5, norm="none").load_vgg16(plain)
