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
        m.shift.bias.fill_(0.3)
    expect = torch.relu(m.w_f(f) + m.w_h(h) + 0.3)
    assert torch.allclose(m(f, h), expect)


def test_batch_norm_merge_normalises_the_sum_and_shifts_by_its_bias() -> None:
    m = Merge(3, 5, 4, norm="bn").train()
    f, h = torch.randn(6, 3, 4, 4), torch.randn(6, 5, 4, 4)
    with torch.no_grad():
        m.shift.weight.fill_(2.0)
        m.shift.bias.fill_(0.3)
    s = m.w_f(f) + m.w_h(h)
    mean, var = s.mean(dim=(0, 2, 3), keepdim=True), s.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    expect = torch.relu(2.0 * (s - mean) / torch.sqrt(var + 1e-5) + 0.3)
    assert torch.allclose(m(f, h), expect, atol=1e-5)


@pytest.mark.parametrize(("norm", "norms"), [("bn", 3 + 1 + 3), ("none", 0)])
def test_decoder_and_heads_are_normalised_as_the_encoder_is(norm: str, norms: int) -> None:
    """With batch norm, the merges, the top conv and every head's conv are normalised too: trained from
    scratch without it, most merged channels die (issue 25)."""
    model = HourglassRPN(ModelConfig(width=0.125, norm=norm))
    outside_encoder = [m for name, m in model.named_modules()
                       if isinstance(m, torch.nn.BatchNorm2d) and not name.startswith("backbone.encoder")]
    assert len(outside_encoder) == norms


def test_rpn_outputs_match_anchors() -> None:
    model = HourglassRPN(ModelConfig(width=0.125))
    logits, deltas, anchors, _ = model(torch.zeros(1, 3, 64, 96))
    for lg, dl, an in zip(logits, deltas, anchors):
        assert lg.shape == (1, len(an), 3) and dl.shape == (1, len(an), 4)
    assert [len(a) for a in anchors] == [8 * 12 * 10, 4 * 6 * 10, 2 * 3 * 10]


def test_single_level_downsample_carries_every_anchor_on_its_one_map() -> None:
    model = HourglassRPN(ModelConfig(arch="downsample-single", width=0.125))
    logits, _, anchors, _ = model(torch.zeros(1, 3, 64, 96))
    assert len(logits) == len(anchors) == 1
    assert len(anchors[0]) == 2 * 3 * 30  # stride 32: a 2 x 3 map, all 30 shapes
    sides = (anchors[0][:, 2:] - anchors[0][:, :2]).prod(dim=1).sqrt()
    assert sorted({round(float(s)) for s in sides}) == [16, 32, 64, 128, 256, 512]


def test_nine_anchors_are_faster_rcnns_one_scale_per_level() -> None:
    model = HourglassRPN(ModelConfig(anchors=9, width=0.125))
    _, _, anchors, _ = model(torch.zeros(1, 3, 64, 96))
    assert [len(a) for a in anchors] == [8 * 12 * 3, 4 * 6 * 3, 2 * 3 * 3]
    for level, scale in zip(anchors, (128, 256, 512)):
        wh = level[:3, 2:] - level[:3, :2]
        assert torch.allclose(wh.prod(dim=1).sqrt(), torch.tensor(float(scale)))
        assert torch.allclose(wh[:, 1] / wh[:, 0], torch.tensor([0.5, 1.0, 2.0]))


@pytest.mark.parametrize("encoder, channels", [("vgg11", [32, 64, 64]), ("googlenet", [480, 832, 1024])])
def test_other_encoders_give_three_maps_at_strides_8_16_32(encoder: str, channels: list[int]) -> None:
    net = Hourglass("downsample", width=0.125 if encoder == "vgg11" else 1.0, encoder=encoder)
    maps = net(torch.zeros(1, 3, 64, 96))
    assert [tuple(m.shape[-3:]) for m in maps] == [(c, 64 // s, 96 // s) for c, s in zip(channels, (8, 16, 32))]


def test_load_torchvision_vgg_weights() -> None:
    from torchvision.models import vgg11_bn, vgg16, vgg16_bn

    torch.manual_seed(0)
    plain, bn = vgg16(weights=None).state_dict(), vgg16_bn(weights=None).state_dict()
    net = Hourglass("hourglass", width=1.0, norm="none")
    assert net.encoder.load_torchvision(plain) == 26  # 13 convolutions, weight and bias
    assert torch.equal(net.encoder.features[0].weight, plain["features.0.weight"])
    assert Hourglass("hourglass", width=1.0, norm="bn").encoder.load_torchvision(bn) == 13 * 2 + 13 * 5
    assert Hourglass(encoder="vgg11").encoder.load_torchvision(vgg11_bn(weights=None).state_dict()) == 8 * 2 + 8 * 5
    with pytest.raises(ValueError, match=r"not a torchvision vgg16 state dict .*features\.0\.weight"):
        Hourglass("hourglass", width=0.5, norm="none").encoder.load_torchvision(plain)
    with pytest.raises(ValueError, match="not a torchvision vgg16_bn state dict"):
        Hourglass("hourglass", norm="bn").encoder.load_torchvision(plain)


def test_load_torchvision_googlenet_weights_and_its_settings() -> None:
    from torchvision.models import googlenet

    state = googlenet(weights=None, aux_logits=True, init_weights=True).state_dict()  # aux heads and fc ignored
    net = Hourglass(encoder="googlenet")
    copied = net.encoder.load_torchvision(state)
    assert copied == len(net.encoder.state_dict())
    assert torch.equal(net.encoder.inception5b.branch1.conv.weight, state["inception5b.branch1.conv.weight"])
    with pytest.raises(ValueError, match="googlenet encoder is width 1 with batch norm"):
        Hourglass(encoder="googlenet", width=0.5)
    with pytest.raises(ValueError, match="encoder='resnet'; choose one of vgg16, vgg11, googlenet"):
        Hourglass(encoder="resnet")
