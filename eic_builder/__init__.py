"""eic_builder: build, audit and measure the Extended ImageNet Classification (EIC) dataset."""

from __future__ import annotations

from typing import Any

from eic_builder.errors import EICError
from eic_builder.version import __version__

__all__ = ["EICError", "__version__", "open_manifest"]


def __getattr__(name: str) -> Any:
    # open_manifest needs pyarrow: imported on first use, so that `import eic_builder` stays light
    if name == "open_manifest":
        from eic_builder.dataset.manifest import open_manifest

        return open_manifest
    raise AttributeError(f"module 'eic_builder' has no attribute {name!r}")
