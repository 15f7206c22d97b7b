"""The options of ``assemble``, what it returns, and the paper's figures its report sets beside ours."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eic_builder.audit.perceptual import DEFAULT_THRESHOLD as PHASH_THRESHOLD
from eic_builder.choices import SHORT_POLICIES
from eic_builder.errors import OptionError, check_at_least_one, check_choice

ILSVRC_SPLITS = ("train", "val")
# The paper's "Extended ImageNet" columns (dataset table slide).
PAPER = {"classes": 2686, "train_images": 2_456_727, "val_images": 273_140, "train_per_class": (251, 1300),
         "val_per_class": (34, 50)}


@dataclass(frozen=True)
class AssembleOptions:
    """The knobs of ``assemble`` (see the module docstring for the rules they drive)."""

    val_per_class: int = 50
    max_train_per_class: int = 1300
    min_train_per_class: int = 1
    seed: int = 0
    short: str = "skip"
    hash_workers: int = 8
    perceptual: bool = True  # also keep out pool images that are resized/re-encoded/mirrored copies of val
    max_hamming: int = PHASH_THRESHOLD  # pHash bits, the audit's default

    def validate(self) -> None:
        check_choice("short", self.short, SHORT_POLICIES)
        check_at_least_one(self, "val_per_class", "max_train_per_class")
        if not 0 <= self.min_train_per_class <= self.max_train_per_class:
            raise OptionError(f"`min_train_per_class`={self.min_train_per_class} must be in "
                              f"[0, `max_train_per_class`={self.max_train_per_class}]")
        check_at_least_one(self, "hash_workers")
        if not 0 <= self.max_hamming < 64:
            raise OptionError(f"`max_hamming`={self.max_hamming} must be in [0, 63]")


@dataclass
class AssembleResult:
    """What ``assemble`` wrote and every rule's effect (image counts unless named otherwise)."""

    out: Path
    classes_listed: int
    classes: dict[str, int]  # split -> classes with images
    images: dict[str, int]
    boxes: dict[str, int]
    per_class: dict[str, tuple[int, int]]  # split -> (min, max) images per class
    effects: dict[str, int] = field(default_factory=dict)
    short_classes: list[tuple[str, int]] = field(default_factory=list)  # (wnid, train images)
    missing_classes: list[str] = field(default_factory=list)
    absent_classes: list[str] = field(default_factory=list)  # listed, but no image with a file in any input
