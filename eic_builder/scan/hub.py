"""The names ImageNet has on the Hugging Face Hub: shard sets, archives and member names.

* timm's webdataset shards are ``<set>-<number>.tar`` (``imagenet22k-train-0042.tar``,
  ``imagenet1k-validation-07.tar``): a set of shards is one split. ``imagenet1k-train`` and
  ``imagenet1k-validation`` are ILSVRC-2012's train and val; any other set (``imagenet22k-validation``
  is a held-out part of ImageNet-21K, not ILSVRC val) is a split of its own name, a pool for ``assemble``.
* ``ILSVRC/imagenet-1k`` ships ``train_images_{0..4}.tar.gz``, ``val_images.tar.gz`` and
  ``test_images.tar.gz`` whose members are named ``<image id>_<wnid>.JPEG``; its Parquet rows carry the
  same names in the Image column's ``path``.

:func:`hub_split` names the split of such a file, :func:`hub_set` a shard set, and :func:`split_id_wnid`
reads an image id and wnid from a Hub member name.
"""

from __future__ import annotations

import functools
import re

SHARD_RE = re.compile(r"^(?P<set>[a-z0-9_.]+(?:-[a-z0-9_.]+)*?)-(?P<number>\d{2,6})\.tar$", re.IGNORECASE)
TIMM_1K_RE = re.compile(r"^imagenet-?1k-(train|validation)-\d{2,6}\.tar$", re.IGNORECASE)
HF_ARCHIVE_RE = re.compile(r"^(train|val|test)_images(?:_\d+)?\.tar\.gz$", re.IGNORECASE)
# the Hub's Parquet shards (datasets' layout, and export --format hf): <split>-00000-of-00040.parquet
HF_PARQUET_RE = re.compile(r"^(train|validation|val|test)-\d+-of-\d+\.parquet$", re.IGNORECASE)
_ID_WNID_RE = re.compile(r"^(?P<id>.+)_(?P<wnid>n\d{8})$")


def hub_split(name: str) -> str | None:
    """The split a Hub file's name says: timm's ``imagenet1k-{train,validation}-*.tar`` shards,
    ``ILSVRC/imagenet-1k``'s ``{train,val,test}_images*.tar.gz`` and the Parquet shards
    ``{train,validation,test}-<i>-of-<n>.parquet`` (validation is val); None for any other name."""
    base = name.rsplit("/", 1)[-1]
    timm = TIMM_1K_RE.match(base)
    if timm is not None:
        return "train" if timm.group(1).lower() == "train" else "val"
    hf = HF_ARCHIVE_RE.match(base) or HF_PARQUET_RE.match(base)
    if hf is None:
        return None
    return "val" if hf.group(1).lower() == "validation" else hf.group(1).lower()


def hub_set(name: str) -> str | None:
    """The webdataset shard set of a file name (``imagenet22k-train-0042.tar`` -> ``imagenet22k-train``)."""
    match = SHARD_RE.match(name.rsplit("/", 1)[-1])
    return match["set"] if match else None


def in_hub_archive(rel: str) -> bool:
    """Whether the path ``rel`` lies inside one of ``ILSVRC/imagenet-1k``'s archives."""
    return _hub_folder(rel.rpartition("/")[0])


@functools.lru_cache(maxsize=4096)
def _hub_folder(folder: str) -> bool:
    # one answer a folder: an archive's members share a few thousand folders at most
    return any(HF_ARCHIVE_RE.match(part) for part in folder.split("/"))


def split_id_wnid(stem: str) -> tuple[str, str] | None:
    """(image id, wnid) of a Hub member's stem ``<image id>_<wnid>`` (``ILSVRC2012_val_00000001_n01751748``
    -> ``ILSVRC2012_val_00000001``, ``n01751748``), else None."""
    match = _ID_WNID_RE.match(stem)
    return (match["id"], match["wnid"]) if match else None


def image_id_of(rel: str, hub_name: bool | None = None) -> tuple[str, str | None]:
    """The one rule of image ids: (image id, the wnid its name carries, or None) of the image file or
    member ``rel``. The id is the file's stem (``n01440764_18.JPEG`` -> ``n01440764_18``); in a Hub name
    (``hub_name``; by default: inside ``ILSVRC/imagenet-1k``'s archives) the stem's ``_<wnid>`` suffix is the
    class, not part of the id."""
    base = rel.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    stem = base[:dot] if dot > 0 else base
    if hub_name is None:
        hub_name = in_hub_archive(rel)
    if hub_name:
        found = split_id_wnid(stem)
        if found is not None:
            return found
    return stem, None
