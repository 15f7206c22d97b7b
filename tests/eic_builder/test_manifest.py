from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eic_builder.errors import ManifestError
from eic_builder.manifest import empty_table, read_manifest, read_metadata, read_table, to_table, write_table


def test_roundtrip_with_metadata(tmp_path: Path) -> None:
    t = to_table("rejects", {"path": ["a"], "image_id": [None], "level": ["file"], "reason": ["x"], "detail": [""]})
    write_table(t, tmp_path / "r.parquet", "rejects", {"source_root": "/data"})
    assert read_table(tmp_path / "r.parquet", "rejects").equals(t)
    meta = read_metadata(tmp_path / "r.parquet")
    assert meta["kind"] == "rejects" and meta["source_root"] == "/data" and "toolkit_version" in meta
    assert not list(tmp_path.glob(".*tmp*"))


def test_schema_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing"):
        to_table("rejects", {"path": ["a"]})
    pq.write_table(pa.table({"x": [1]}), tmp_path / "boxes.parquet")
    with pytest.raises(ManifestError, match="is not a boxes table"):
        read_table(tmp_path / "boxes.parquet", "boxes")
    with pytest.raises(ManifestError, match="unknown table kind 'nope'"):
        empty_table("nope")


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "none")
    (tmp_path / "d").mkdir()
    with pytest.raises(ManifestError, match=r"missing images\.parquet, boxes\.parquet, rejects\.parquet"):
        read_manifest(tmp_path / "d")
