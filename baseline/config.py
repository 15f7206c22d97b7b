"""The one frozen configuration of a training run; every ``train-baseline`` option maps to a field."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from eic_builder.choices import (
    ANCHOR_SETS,
    ARCHS,
    DEVICES,
    DTYPES,
    ENCODERS,
    NORMS,
    OPTIMIZERS,
    PEER_METHODS,
    PROPOSAL_SCORES,
    QUALITY_ANCHORS,
    REG_LOSSES,
    SAMPLING_STRATEGIES,
)
from eic_builder.errors import OptionError, check_at_least_one, check_choice

# The fields that are train-baseline options (``--images-per-batch`` for ``images_per_batch``): what a
# command line can set, and so what ``experiment`` may vary and print as each row's command.
CLI_FIELDS = ("sampling", "iters", "images_per_batch", "lr", "lr_step", "optimizer", "pos_iou", "train_scales", "flip",
              "arch", "encoder", "anchors", "width", "norm", "gray", "neg_ratio", "neg_ratio_control",
              "anchors_per_image", "reg_loss", "reg_weight", "score", "quality_weight", "quality_anchors",
              "backbone_weights", "device", "dtype", "workers", "checkpoint_every", "seed")


def check_encoder_options(encoder: str, width: float, norm: str) -> None:
    """The encoder options of train-baseline and pretrain: a known encoder and norm, a width in (0, 4],
    and GoogLeNet only as it is (width 1, batch norm)."""
    check_choice("--encoder", encoder, ENCODERS)
    check_choice("--norm", norm, NORMS)
    if not 0 < width <= 4:
        raise OptionError(f"`width`={width} must be in (0, 4]")
    if encoder == "googlenet" and (width != 1.0 or norm != "bn"):
        raise OptionError(f"`encoder` googlenet is width 1 with batch norm; got `width` {width:g} "
                          f"`norm` {norm} (those options shape the VGG encoders)")


def learning_rate(it: int, base: float, warmup_iters: int, *, step: int | None = None, gamma: float = 0.5,
                  total: int | None = None) -> float:
    """The one learning-rate schedule of the baseline: a linear warm-up over ``warmup_iters`` (iteration
    ``it`` counted from 0), then, with ``step``, ``base * gamma ** (it // step)`` (the RPN's halvings), or
    with ``total``, a cosine decay to 0 at iteration ``total`` (the encoder's pretraining)."""
    warm = min(1.0, (it + 1) / warmup_iters) if warmup_iters else 1.0
    if step is not None:
        return base * warm * gamma ** (it // step)
    if total is None:
        return base * warm
    done = max(0.0, min(1.0, (it - warmup_iters) / max(1, total - warmup_iters)))
    return base * warm * 0.5 * (1 + math.cos(math.pi * done))


@dataclass(frozen=True)
class TrainConfig:
    """Defaults follow the paper's setup slide (lr 1e-4 halved every 7,000 iterations, momentum 0.9,
    weight decay 5e-4, batches of 300 anchors, aspect ratios 0.15..6.7), with a short-run default
    of 2,000 iterations (the paper ran 200,000). ``tiny()`` is the CPU test configuration."""

    iters: int = 2000
    images_per_batch: int = 8
    optimizer: str = "sgd"  # sgd (the paper's) | adamw
    lr: float = 1e-4
    lr_step: int = 7000  # iterations between halvings
    lr_gamma: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 100
    sampling: str = "random"
    per_class: int | None = None  # balanced: images per class per epoch (default: median)
    train_scales: tuple[int, ...] = (400, 500, 600, 700, 800)  # dynamic training scale (remark a)
    flip: bool = False  # mirror half of the training images left-right (ours; not in the paper)
    max_size: int = 1400
    arch: str = "hourglass"  # hourglass | downsample | downsample-single (the component table's structures)
    encoder: str = "vgg16"  # vgg16 | vgg11 | googlenet (baseline.encoders)
    anchors: int = 30  # 30: the paper's anchors on three levels; 9: Faster R-CNN's
    width: float = 1.0
    norm: str = "bn"  # bn: vgg*_bn layout, trains from scratch; none: plain vgg* (for its weights)
    pos_iou: float = 0.7
    neg_iou: float = 0.3
    gray: bool = True  # remark (c)
    anchors_per_image: int = 300  # the paper's "batch size 300"
    neg_ratio: float = 3.0  # remark (b)
    neg_ratio_control: bool = True  # False: negatives fill the rest of each image's batch
    gray_fraction: float = 0.1
    reg_loss: str = "smooth-l1"  # the box term: smooth-L1 on the deltas (the paper's) | giou on the boxes
    reg_weight: float = 1.0  # its weight against the classification term
    score: str = "object"  # object (the paper's) | object-x-iou: a quality head, proposals ranked by object x IoU
    quality_weight: float = 1.0  # the quality head's loss weight (score object-x-iou)
    quality_anchors: str = "sampled"  # the anchors its IoU is learnt on: sampled (all) | object-gray
    device: str = "auto"
    dtype: str = "auto"  # float32 | bfloat16 (autocast) | auto: eic_builder.hardware.resolve_dtype's rule
    workers: int = 4
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 20
    backbone_weights: str | None = None
    grad_clip: float = 10.0

    def validate(self) -> None:
        check_choice("--sampling", self.sampling, SAMPLING_STRATEGIES)
        check_choice("--arch", self.arch, ARCHS)
        check_choice("--anchors", self.anchors, ANCHOR_SETS)
        check_encoder_options(self.encoder, self.width, self.norm)
        check_choice("--optimizer", self.optimizer, OPTIMIZERS)
        check_choice("--reg-loss", self.reg_loss, REG_LOSSES)
        check_choice("--score", self.score, PROPOSAL_SCORES)
        check_choice("--quality-anchors", self.quality_anchors, QUALITY_ANCHORS)
        for name in ("reg_weight", "quality_weight"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise OptionError(f"`{name}`={getattr(self, name)} must be a finite number > 0")
        check_choice("--device", self.device, DEVICES)
        check_choice("--dtype", self.dtype, DTYPES)
        check_at_least_one(self, "iters", "images_per_batch", "lr_step", "checkpoint_every", "log_every",
                           "anchors_per_image")
        if self.lr <= 0:
            raise OptionError(f"`lr`={self.lr} must be > 0")
        if not 0 <= self.neg_iou <= self.pos_iou <= 1:
            raise OptionError(f"IoU thresholds need 0 <= neg ({self.neg_iou}) <= pos ({self.pos_iou}) <= 1")
        if not self.train_scales or min(self.train_scales) < 32:
            raise OptionError(f"`train_scales` {self.train_scales} must be sizes of at least 32 pixels")
        if not math.isfinite(self.neg_ratio) or self.neg_ratio < 0:
            raise OptionError(f"`neg_ratio`={self.neg_ratio} must be a finite number >= 0")
        if not math.isfinite(self.lr):
            raise OptionError(f"`lr`={self.lr} must be finite")

    def lr_at(self, it: int) -> float:
        """The learning rate of iteration ``it``: warm-up, then halved every ``lr_step`` (:func:`learning_rate`)."""
        return learning_rate(it, self.lr, self.warmup_iters, step=self.lr_step, gamma=self.lr_gamma)

    @classmethod
    def tiny(cls, **overrides: Any) -> TrainConfig:
        """The CPU configuration of the tests and `make demo`: about two minutes on two cores. A narrow
        VGG (width 0.125) trained from scratch learns far faster with AdamW and positives at IoU 0.5
        than with the paper's SGD at 1e-4 and 0.7, which need a GPU's iterations."""
        base = dict(iters=500, images_per_batch=4, optimizer="adamw", lr=3e-3, lr_step=400, warmup_iters=20,
                    width=0.125, pos_iou=0.5, train_scales=(224, 256, 288), max_size=512, workers=0,
                    checkpoint_every=100, log_every=10, device="cpu")
        base.update(overrides)
        return cls(**base)

    def command_options(self, tiny: bool = False) -> list[str]:
        """The train-baseline options that give this configuration: ``--tiny`` and what differs from it
        (or from the defaults); ``ValueError`` if a field that differs is not a command-line option."""
        reference = TrainConfig.tiny() if tiny else TrainConfig()
        words = ["--tiny"] if tiny else []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == getattr(reference, f.name):
                continue
            if f.name not in CLI_FIELDS:
                raise ValueError(f"{f.name}={value!r} differs from the {'--tiny' if tiny else 'default'} "
                                 "configuration and is no train-baseline option")
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                words.append(flag if value else f"--no-{f.name.replace('_', '-')}")
            else:
                words += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
        return words

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**d)


@dataclass(frozen=True)
class PretrainConfig:
    """A classification run. Defaults: SGD with momentum, linear warm-up then cosine decay, batches of
    64 crops of 224 px; ``tiny()`` is the CPU test configuration."""

    encoder: str = "vgg16"
    width: float = 1.0
    norm: str = "bn"
    iters: int = 10000
    images_per_batch: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 200
    crop: int = 224
    device: str = "auto"
    dtype: str = "auto"
    workers: int = 4
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 20

    def validate(self) -> None:
        check_choice("--optimizer", self.optimizer, OPTIMIZERS)
        check_choice("--device", self.device, DEVICES)
        check_choice("--dtype", self.dtype, DTYPES)
        check_at_least_one(self, "iters", "images_per_batch", "checkpoint_every", "log_every")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise OptionError(f"`lr`={self.lr} must be a finite number > 0")
        if self.crop < 32 or self.crop % 32:
            raise OptionError(f"`crop`={self.crop} must be a multiple of 32 (the encoder's stride), at least 32")
        check_encoder_options(self.encoder, self.width, self.norm)

    def lr_at(self, it: int) -> float:
        """The learning rate of iteration ``it``: warm-up, then a cosine to 0 at ``iters`` (:func:`learning_rate`)."""
        return learning_rate(it, self.lr, self.warmup_iters, total=self.iters)

    @classmethod
    def tiny(cls, **overrides: Any) -> PretrainConfig:
        """About a minute on two CPU cores: a 1/8-width VGG-16 on 64-px crops."""
        base = dict(width=0.125, iters=200, images_per_batch=16, optimizer="adamw", lr=3e-3, warmup_iters=10,
                    crop=64, device="cpu", workers=0, checkpoint_every=50, log_every=10)
        base.update(overrides)
        return cls(**base)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


TEST_SCALES = (200, 400, 600, 800, 1000, 1200, 1400)


@dataclass(frozen=True)
class ProposalConfig:
    """Inference settings. ``scale_range`` (lo, hi), when given, replaces ``scales``: one scale an image,
    its own shorter side clamped into [lo, hi] (``eval-baseline --scales auto``: the range the checkpoint
    was trained at). ``score`` None ranks as the checkpoint was trained to (its ``TrainConfig.score``)."""

    scales: tuple[int, ...] = TEST_SCALES
    max_size: int = 2000
    pre_nms: int = 2000
    post_nms: int = 500
    level_nms: float = 0.7
    scale_nms: float = 0.5
    top_k: int = 1000
    min_size: float = 1.0
    scale_range: tuple[int, int] | None = None
    score: str | None = None  # object | object-x-iou | None: the checkpoint's
    quality_exponent: float = 1.0
    box_voting: float | None = None  # IoU of box voting after the last NMS; None: off (the paper's)
    soft_nms: float | None = None  # sigma of a Gaussian soft-NMS across levels and scales instead of scale_nms

    def validate(self) -> None:
        """Refuse values that make no sense (they would give empty or meaningless proposals)."""
        if self.scale_range is not None:
            lo, hi = self.scale_range
            if not 16 <= lo <= hi:
                raise OptionError(f"`scale_range` {lo},{hi}: needs 16 <= lo <= hi pixels")
        elif not self.scales or min(self.scales) < 16:
            raise OptionError(f"`scales` {','.join(map(str, self.scales))}: each test scale must be >= 16 pixels")
        check_at_least_one(self, "top_k")
        for name in ("level_nms", "scale_nms"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise OptionError(f"`{name}`={value} must be in (0, 1]")
        if self.score is not None:
            check_choice("--score", self.score, PROPOSAL_SCORES)
        if not (math.isfinite(self.quality_exponent) and self.quality_exponent >= 0):
            raise OptionError(f"`quality_exponent`={self.quality_exponent} must be a finite number >= 0")
        if self.box_voting is not None and not 0 < self.box_voting <= 1:
            raise OptionError(f"`box_voting`={self.box_voting} must be an IoU in (0, 1]")
        if self.soft_nms is not None and not (math.isfinite(self.soft_nms) and self.soft_nms > 0):
            raise OptionError(f"`soft_nms`={self.soft_nms} must be a finite sigma > 0")

    def scales_for(self, height: int, width: int) -> tuple[int, ...]:
        """The test scales of an image of ``height`` x ``width`` pixels."""
        if self.scale_range is None:
            return self.scales
        lo, hi = self.scale_range
        return (min(hi, max(lo, min(height, width))),)


@dataclass(frozen=True)
class EvalOptions:
    """The knobs of ``eval-baseline``: the RPN ``checkpoint`` (scored as ``rpn`` when given) and the peer
    ``methods`` (:data:`METHODS`), the ``proposals`` settings (scales, NMS, top k), ``recall_k`` (the
    proposals Rec@0.5 counts), ``device``, ``dtype`` (float32, bfloat16 autocast, or auto: bf16 where the
    device runs it natively), ``max_images`` (the first N images only) and ``root`` (the image root,
    ``--root``; default: the manifest's). With ``anchors_only`` (the default) the RPN is also scored as
    ``rpn-anchors``: its ranked anchors with the deltas at zero, from the same forward pass, so that what the
    box regressor adds is one row of every evaluation. With ``auto_scales`` the RPN scores each image at one
    scale, its own shorter side clamped into the range the checkpoint was trained at."""

    checkpoint: str | None = None
    methods: Sequence[str] = ()
    proposals: ProposalConfig | None = None
    recall_k: int = 300
    device: str = "auto"
    dtype: str = "auto"
    max_images: int | None = None
    root: str | os.PathLike[str] | None = None
    anchors_only: bool = True
    auto_scales: bool = False

    def validate(self) -> None:
        """Refuse options that cannot be run (before any model or image is loaded)."""
        if self.auto_scales and not self.checkpoint:
            raise OptionError("`scales` auto is the range of scales a checkpoint was trained at: give `checkpoint`")
        check_at_least_one(self, "recall_k")
        for method in self.methods:
            if method not in PEER_METHODS:
                raise OptionError(f"`methods` {method!r} is not known; choose from {', '.join(PEER_METHODS)}")
        if not self.checkpoint and not self.methods:
            raise OptionError("nothing to evaluate: give `checkpoint` CKPT and/or `methods` NAME")
        if self.max_images is not None and self.max_images < 1:
            raise OptionError(f"`max_images` {self.max_images} must be >= 1")
