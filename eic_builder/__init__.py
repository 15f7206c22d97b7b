"""eic_builder: build, audit and measure the Extended ImageNet Classification (EIC) dataset."""

from eic_builder.errors import EICError

__version__ = "0.1.0"

__all__ = ["EICError", "__version__"]
