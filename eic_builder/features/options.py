"""The options of ``eic-build features`` (torch-free: the CLI reads its defaults from here)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from eic_builder.choices import DEVICES, DTYPES, LOADERS
from eic_builder.choices import FEATURE_LAYERS as LAYERS
from eic_builder.choices import FEATURE_TARGETS as TARGETS
from eic_builder.errors import OptionError, check_at_least_one, check_choice


@dataclass(frozen=True)
class FeatureConfig:
    """Every setting of a features run (saved in each shard's metadata)."""

    weights: str = "imagenet"  # imagenet | random | path to a state dict
    layer: str = "fc6"
    on: str = "image"
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None  # DataLoader workers; None: min(8, cores)
    dtype: str = "auto"  # auto (bf16 where the device runs it natively: eic_builder.hardware) | float32 | bfloat16
    loader: str = "tensor"  # tensor (fast path) | pil (reference)
    compile: bool = False
    shard_size: int = 4096
    seed: int = 0
    resize: int = 256
    crop: int = 224
    mirror: bool = False  # average with the left-right mirror image's features (2x the work)
    regions: bool = False  # fc6 of the mean pool5 map of the image and five 80 % regions (region_pool5)
    root: str | None = None  # image root; default: the manifest's scan root

    def validate(self) -> None:
        check_choice("--layer", self.layer, LAYERS)
        check_choice("--on", self.on, TARGETS)
        check_choice("--device", self.device, DEVICES)
        check_choice("--dtype", self.dtype, DTYPES)
        check_choice("--loader", self.loader, LOADERS)
        check_at_least_one(self, "batch_size", "shard_size", "crop", "resize")
        if self.workers is not None and self.workers < 0:
            raise OptionError(f"`workers`={self.workers} must be >= 0")
        if self.crop > self.resize:
            raise OptionError(f"`crop` {self.crop} is larger than `resize` {self.resize}")

    @property
    def loader_workers(self) -> int:
        """``workers``, None resolved: min(8, cores)."""
        return min(8, os.cpu_count() or 1) if self.workers is None else self.workers

    def weights_label(self) -> str:
        """How the weights are described in outputs (random weights say so)."""
        if self.weights == "random":
            return f"random (seed {self.seed}; NOT ImageNet features)"
        if self.weights == "imagenet":
            return "torchvision VGG16_Weights.IMAGENET1K_V1"
        return f"file {Path(self.weights).name}"
