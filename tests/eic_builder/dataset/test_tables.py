from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eic_builder.dataset.manifest import read_manifest
from eic_builder.dataset.tables import empty_table, read_metadata, read_table, to_table, write_table
from eic_builder.errors import ManifestError


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


def test_a_manifest_is_replaced_whole_or_not_at_all(synthetic_tree: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills while a scan writes over an existing manifest leaves the old one intact, and a
    directory mixing files of two writes is refused by every reader."""
    import shutil

    from eic_builder.scan.scanner import scan

    out = tmp_path / "m"
    scan(synthetic_tree, out, split="val", workers=1)
    old = read_manifest(out)
    real = pq.write_table

    def disk_full(table, where, **kw):
        if "images" in str(where):
            raise OSError(28, "No space left on device")
        return real(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(ManifestError, match=r"cannot write .*images\.parquet.*: No space left on device"):
        scan(synthetic_tree, out, split="train", workers=1)
    monkeypatch.setattr(pq, "write_table", real)
    now = read_manifest(out)
    assert now.images.equals(old.images) and now.boxes.equals(old.boxes) and now.rejects.equals(old.rejects)
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".parquet")) == [
        "boxes.parquet", "images.parquet", "rejects.parquet"]
    scan(synthetic_tree, tmp_path / "t", split="train", workers=1)
    shutil.copy(tmp_path / "t" / "boxes.parquet", out / "boxes.parquet")  # half old, half new
    with pytest.raises(ManifestError, match=r"is a mix of two writes: its boxes\.parquet"):
        read_manifest(out)


def test_unwritable_output_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    t = empty_table("rejects")
    with pytest.raises(ManifestError, match=r"cannot write .*file/r\.parquet"):
        write_table(t, tmp_path / "file" / "r.parquet", "rejects")


@pytest.mark.parametrize("content", [b"", b"PAR1", b"not parquet at all", b"PAR1" + b"\0" * 100 + b"PAR1"])
def test_damaged_or_foreign_files_are_one_error(content: bytes, tmp_path: Path) -> None:
    for name in ("images.parquet", "boxes.parquet", "rejects.parquet"):
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ManifestError, match=r"is not a readable Parquet file \(") as info:
        read_manifest(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(ManifestError, match=r"is not a readable Parquet file"):
        read_table(tmp_path / "boxes.parquet", "eic_classes")


def test_schema_errors_name_the_first_difference(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("image_id", pa.string(), nullable=False), pa.field("box_index", pa.int64())])
    pq.write_table(pa.table({"image_id": ["a"], "box_index": [1]}, schema=schema), tmp_path / "b.parquet")
    with pytest.raises(ManifestError, match=r"is not a boxes table: column 'box_index' is int64, expected int32 not "
                                            r"null$") as info:
        read_table(tmp_path / "b.parquet", "boxes")
    assert "\n" not in str(info.value)


def test_feature_vectors_are_stored_plain(tmp_path: Path) -> None:
    # zstd saves ~9 % on float16 fc6 vectors but caps streaming reads at ~600 MB/s (bench_distances)
    import numpy as np
    import pyarrow.parquet as pq

    from eic_builder.dataset.feature_shards import features_table
    from eic_builder.dataset.tables import write_table

    table = features_table(["a", "b"], [-1, 0], ["n01440764", None], np.ones((2, 4096), np.float16))
    write_table(table, tmp_path / "part-000000.parquet", "features")
    row_group = pq.ParquetFile(tmp_path / "part-000000.parquet").metadata.row_group(0)
    codecs = {row_group.column(i).path_in_schema: row_group.column(i).compression
              for i in range(row_group.num_columns)}
    assert codecs == {"image_id": "ZSTD", "box_index": "ZSTD", "label": "ZSTD", "feature": "UNCOMPRESSED"}


def test_schema_md_documents_every_column_of_every_schema() -> None:
    """data_manifests/SCHEMA.md: each column of each schema is the first cell of one of its table rows."""
    from eic_builder.dataset.schemas import HF_SCHEMA, SCHEMAS

    text = (Path(__file__).resolve().parents[3] / "data_manifests" / "SCHEMA.md").read_text()
    documented = set()
    for line in text.splitlines():
        if line.startswith("| "):
            documented |= {cell.strip().strip("`") for cell in line.split("|")[1].split(",")}
    for kind, schema in {**SCHEMAS, "hf": HF_SCHEMA}.items():
        missing = [f.name for f in schema if f.name not in documented]
        assert not missing, f"{kind}: {missing} not in SCHEMA.md"


def test_reject_reasons_are_defined_once_and_documented(tmp_path: Path) -> None:
    from eic_builder.dataset.manifest import write_manifest
    from eic_builder.dataset.tables import empty_table, to_table
    from eic_builder.errors import ManifestError
    from eic_builder.rejects import REJECT_REASONS, Rejected

    text = (Path(__file__).resolve().parents[3] / "data_manifests" / "SCHEMA.md").read_text()
    table = text.split("Reason codes:", 1)[1].split("\n## ", 1)[0]
    documented = {code.strip() for line in table.splitlines() if line.startswith("| ") and not line.startswith(
        "| reason") for code in line.split("|")[1].split(",")}
    assert documented == REJECT_REASONS
    with pytest.raises(ValueError, match="unknown reject reason 'no_such_reason'"):
        Rejected("no_such_reason", "x")
    rejects = to_table("rejects", {"path": ["a"], "image_id": [None], "level": ["file"], "reason": ["bogus"],
                                   "detail": ["x"]})
    with pytest.raises(ManifestError, match=r"reject reason\(s\) bogus are not in"):
        write_manifest(tmp_path / "m", empty_table("images"), empty_table("boxes"), rejects)
