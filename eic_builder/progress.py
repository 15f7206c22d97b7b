"""The one progress-bar helper: tqdm on stderr, off with ``EIC_NO_PROGRESS=1`` or ``enabled=False``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_ENABLED = True


def set_progress(enabled: bool) -> None:
    """Turn progress bars on or off for this process (the CLI's ``--no-progress``)."""
    global _ENABLED
    _ENABLED = enabled


def progress_enabled() -> bool:
    """Whether bars are shown: not when disabled, nor when ``EIC_NO_PROGRESS=1``."""
    return _ENABLED and os.environ.get("EIC_NO_PROGRESS", "") not in ("1", "true", "yes")


def progress(iterable: Iterable[T] | None = None, *, total: float | None = None, desc: str = "",
             unit: str = "it") -> Iterator[T] | tqdm:
    """Wrap ``iterable`` in a progress bar (or return a manual bar when ``iterable`` is None)."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress_enabled(),
                dynamic_ncols=True, leave=False)
