"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("EIC_NO_PROGRESS", "1")
# the seek indexes of the .tar.gz files tests scan go to a folder of this run, not the user's cache
os.environ.setdefault("EIC_GZIP_INDEX_DIR", tempfile.mkdtemp(prefix="eic-gzip-index-"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data {path} is absent (it lives in ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def ilsvrc_val_1300() -> Path:
    """1,300 real ILSVRC-2012 val images (227x227) with a Kaggle LOC CSV."""
    return _shared("ilsvrc2012_val_1300")


@pytest.fixture(scope="session")
def voc_85() -> Path:
    """85 real PASCAL VOC 2012 photos with a COCO instances file."""
    return _shared("voc2012_85")


@pytest.fixture(scope="session")
def bbox_synsets_file() -> Path:
    """The 3,627 ImageNet synsets with bounding boxes."""
    return _shared("imagenet_bbox_synsets.txt")


@pytest.fixture(scope="session")
def synthetic_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic ILSVRC-layout tree (4 classes, train + val), built once per session."""
    from eic_builder.synthetic import make_synthetic_tree

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_tree(root, n_classes=4, train_per_class=12, val_per_class=4, seed=0)
    return root


@pytest.fixture(scope="session")
def wordnet_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache folder for the WordNet layout and noun index (built once per test session)."""
    return tmp_path_factory.mktemp("eic-cache")


@pytest.fixture(scope="session")
def wordnet_index(wordnet_cache: Path):
    """The WordNet 3.0 noun index, or a skip saying how to install WordNet."""
    from eic_builder.errors import WordNetError
    from eic_builder.wordnet import load_wordnet_index

    mp = pytest.MonkeyPatch()
    mp.setenv("EIC_CACHE_DIR", str(wordnet_cache))
    try:
        return load_wordnet_index()
    except WordNetError as exc:
        pytest.skip(f"no WordNet 3.0 data here ({exc}); `make test` installs it as root")
    finally:
        mp.undo()


def _first_images(src: Path, out: Path, n: int) -> Path:
    """A manifest at ``out`` with the first ``n`` images of the manifest ``src`` and their boxes."""
    import pyarrow.compute as pc

    from eic_builder.dataset.manifest import read_manifest, write_manifest

    m = read_manifest(src)
    images = m.images.slice(0, n)
    write_manifest(out, images, m.boxes.filter(pc.is_in(m.boxes["image_id"], images["image_id"])), m.rejects, m.meta)
    return out


@pytest.fixture(scope="session")
def first_images():
    """Make a manifest of the first n images of another (and their boxes)."""
    return _first_images
