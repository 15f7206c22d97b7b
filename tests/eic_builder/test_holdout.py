"""``split``: a deterministic hold-out that never overwrites a manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from eic_builder.dataset.manifest import read_manifest
from eic_builder.errors import OptionError
from eic_builder.holdout import held_out, hold_out_manifest
from eic_builder.scan.scanner import scan


@pytest.fixture(scope="module")
def manifest(synthetic_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("split") / "train"
    scan(synthetic_tree, out, split="train", workers=1)
    return out


def test_rejects_follow_their_image_and_lineage_is_kept(manifest: Path, tmp_path: Path) -> None:
    src = read_manifest(manifest)
    assert len(src.rejects) == 0
    import pyarrow as pa

    from eic_builder.dataset.manifest import write_manifest
    from eic_builder.dataset.tables import to_table

    ids = src.images["image_id"].to_pylist()[:6]
    rejects = to_table("rejects", {"path": [f"{i}.xml" for i in ids] + ["x.json"], "image_id": [*ids, None],
                                   "level": ["box"] * 7, "reason": ["degenerate_box"] * 7, "detail": ["d"] * 7})
    write_manifest(tmp_path / "src", src.images, src.boxes, rejects, src.meta)
    hold_out_manifest(tmp_path / "src", tmp_path / "a", tmp_path / "b", fraction=0.5, seed=1)
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert len(a.rejects) + len(b.rejects) == 7
    assert set(b.rejects["image_id"].to_pylist()) == {i for i in ids if held_out(i, 0.5, 1)}
    assert None in a.rejects["image_id"].to_pylist()
    assert pa.concat_tables([a.images, b.images]).num_rows == src.images.num_rows
    for part in (a, b):
        assert part.meta["source_root"] == src.meta["source_root"]
        assert part.meta["lineage"][0]["manifest"] == str((tmp_path / "src").resolve())
        assert part.meta["lineage"][0]["command"] == src.meta["command"]


def test_split_never_overwrites(manifest: Path, tmp_path: Path) -> None:
    before = (manifest / "images.parquet").read_bytes()
    for train_out, test_out, named in ((tmp_path / "x", tmp_path / "x", "test_out .* is train_out"),
                                       (manifest, tmp_path / "y", "train_out .* is src"),
                                       (tmp_path / "y", manifest, "test_out .* is src"),
                                       (tmp_path / "z", manifest / "inner", "test_out .* lies inside src"),
                                       (tmp_path / "w", tmp_path / "w" / "inner", "test_out .* lies inside train_out"),
                                       (tmp_path / "v" / "inner", tmp_path / "v", "test_out .* holds train_out")):
        with pytest.raises(OptionError, match=rf"{named} .*: they overlap"):
            hold_out_manifest(manifest, train_out, test_out)
    assert (manifest / "images.parquet").read_bytes() == before and not (tmp_path / "x").exists()
