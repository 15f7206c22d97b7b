"""eic_builder: build, audit and measure the Extended ImageNet Classification (EIC) dataset."""

from __future__ import annotations

from typing import Any

from eic_builder.errors import EICError

__version__ = "0.1.0"

__all__ = ["EICError", "__version__", "open_manifest"]


def __getattr__(name: str) -> Any:
    # open_manifest needs pyarrow: imported on first use, so that `import eic_builder` stays light
    if name == "open_manifest":
        from eic_builder.manifest_view import open_manifest

        return open_manifest
    raise AttributeError(f"module 'eic_builder' has no attribute {name!r}")
