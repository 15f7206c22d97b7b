"""The one progress-bar helper: tqdm on stderr when it is a terminal; off with ``EIC_NO_PROGRESS=1``,
``--no-progress`` or when stderr goes to a file or a pipe (a log would fill with redrawn bars)."""

from __future__ import annotations

import os
import sys
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
    """Whether bars are shown: on a terminal, unless disabled or ``EIC_NO_PROGRESS=1``."""
    if not _ENABLED or os.environ.get("EIC_NO_PROGRESS", "") in ("1", "true", "yes"):
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, total: float | None = None, desc: str = "",
             unit: str = "it", unit_scale: bool = False) -> Iterator[T] | tqdm:
    """Wrap ``iterable`` in a progress bar (or return a manual bar when ``iterable`` is None)."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=not progress_enabled(),
                dynamic_ncols=True, leave=False)
