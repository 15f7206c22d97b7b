"""``eic-build features``: VGG-16 fc6 features of every image (or box) of a manifest.

fc6 is the first classifier layer of torchvision's VGG-16 (25,088 -> 4,096);
``layer="fc6"`` takes it before its ReLU, ``"fc6-relu"`` after. Weights:
``imagenet`` (torchvision's ``VGG16_Weights.IMAGENET1K_V1``, through the torch
hub cache), ``random`` (seeded; for tests, and labelled so in every output), or
a torchvision-format state dict FILE.

Output: ``FEATDIR/part-NNNNNN.parquet`` shards (image_id, box_index, label,
feature float16[4096]), one per chunk of ``shard_size`` items, each written
atomically with the run's settings in its metadata. A run that stops resumes
at the first missing shard. Under ``torchrun`` (``distributed=True``) chunk k
goes to rank ``k % world_size``; shards do not depend on the world size.
"""

from __future__ import annotations

from typing import Any

from eic_builder.features.options import FeatureConfig

__all__ = ["FeatureConfig", "FeatureSummary", "build_model", "extract_features", "manifest_items", "region_pool5"]


def __getattr__(name: str) -> Any:
    # the stage imports torch: loaded on first use, so that the options (and --help) stay light
    import importlib

    extract = importlib.import_module("eic_builder.features.extract")
    try:
        return getattr(extract, name)
    except AttributeError:
        raise AttributeError(f"module 'eic_builder.features' has no attribute {name!r}") from None
