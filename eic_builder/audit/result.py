"""What ``audit`` returns (its report is written from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eic_builder.audit.neighbours import CosineCut


@dataclass
class AuditResult:
    """What an audit found: images compared, pairs per method, groups, and the files written."""

    out: Path
    names: list[str]
    n_images: int
    without_file: int
    pairs: dict[str, int] = field(default_factory=dict)
    n_groups: int = 0
    n_grouped: int = 0
    sha1_computed: int = 0
    undecodable: int = 0
    without_features: int = 0
    mirror_features: dict[str, bool] = field(default_factory=dict)  # manifest -> made with features --mirror
    likely: dict[str, dict[str, int]] = field(default_factory=dict)  # method -> likely transformation -> pairs
    leaks: dict[tuple[str, str], int] = field(default_factory=dict)  # (split, held-out split) -> images
    files: list[Path] = field(default_factory=list)
    cosine_cut: CosineCut | None = None  # the features method's cut, derived or given
    aligned: tuple[int, int] | None = None  # features pairs checked on their pixels, and kept (None: not checked)
