"""``split``: a deterministic hold-out that never overwrites a manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from eic_builder.errors import OptionError
from eic_builder.manifest import read_manifest
from eic_builder.scan.scanner import scan
from eic_builder.split import held_out, split_manifest


@pytest.fixture(scope="module")
def manifest(synthetic_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("split") / "train"
    scan(synthetic_tree, out, split="train", workers=1)
    return out


def test_split_is_a_partition_by_hash(manifest: Path, tmp_path: Path) -> None:
    n_train, n_test = split_manifest(manifest, tmp_path / "a", tmp_path / "b", 0.25, seed=3)
    src, a, b = read_manifest(manifest), read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    ids_a, ids_b = set(a.images["image_id"].to_pylist()), set(b.images["image_id"].to_pylist())
    assert not ids_a & ids_b and ids_a | ids_b == set(src.images["image_id"].to_pylist())
    assert ids_b == {i for i in src.images["image_id"].to_pylist() if held_out(i, 0.25, 3)}
    assert (n_train, n_test) == (len(ids_a), len(ids_b)) and len(a.boxes) + len(b.boxes) == len(src.boxes)


def test_split_never_overwrites(manifest: Path, tmp_path: Path) -> None:
    before = (manifest / "images.parquet").read_bytes()
    for train_out, test_out, named in ((tmp_path / "x", tmp_path / "x", "--train-out .* and --test-out"),
                                       (manifest, tmp_path / "y", "SRC .* and --train-out"),
                                       (tmp_path / "y", manifest, "SRC .* and --test-out"),
                                       (tmp_path / "z", manifest / "inner", "SRC .* and --test-out"),
                                       (tmp_path / "w", tmp_path / "w" / "inner", "--train-out .* and --test-out")):
        with pytest.raises(OptionError, match=rf"{named} .* overlap; split writes two new manifests"):
            split_manifest(manifest, train_out, test_out)
    assert (manifest / "images.parquet").read_bytes() == before and not (tmp_path / "x").exists()
