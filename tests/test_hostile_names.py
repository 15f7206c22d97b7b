"""Names from data never become paths outside --out: hostile split names, labels and image ids planted in
manifests (as a downloaded manifest or annotation file could hold them), then every command that writes
files named after them runs from the CLI; every file it writes must lie under its --out."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from eic_builder.cli import main
from eic_builder.dataset.manifest import read_manifest, write_manifest
from eic_builder.scan.scanner import scan

SPLIT = "x/../../../esc"
LABELS = ["../../../esc", "a/b", "..", ".hidden", "CON", "nul\x00x"]
IDS = ["../../../../escaped_id", "/abs/id", "..", ".", "a\\b", "y" * 300, "id with space", "50%"]


def _jpeg(seed: int, size: int = 96) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.kron(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), np.ones((size // 8, size // 8, 1), np.uint8))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _hostile_manifest(base: Path, name: str, split: str, first_seed: int) -> Path:
    """A COCO folder of len(IDS) images whose categories are LABELS, scanned, then given hostile ids and split."""
    src = base / f"{name}_src"
    (src / "images").mkdir(parents=True)
    images, annotations = [], []
    for k in range(len(IDS)):
        (src / "images" / f"img{k}.jpg").write_bytes(_jpeg(first_seed + k))
        images.append({"id": k, "file_name": f"img{k}.jpg", "width": 96, "height": 96})
        annotations.append({"id": k, "image_id": k, "category_id": k % len(LABELS), "bbox": [8, 8, 60, 50]})
    categories = [{"id": k, "name": label} for k, label in enumerate(LABELS)]
    (src / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                    "categories": categories}))
    scan(src, base / f"{name}_clean")
    m = read_manifest(base / f"{name}_clean")
    assert sorted(set(m.boxes["label"].to_pylist())) == sorted(LABELS)  # the scan keeps hostile labels as data
    new_id = dict(zip(sorted(m.images["image_id"].to_pylist()), IDS))
    images_t = m.images.set_column(m.images.schema.get_field_index("image_id"), "image_id",
                                   pa.array([new_id[i] for i in m.images["image_id"].to_pylist()]))
    images_t = images_t.set_column(images_t.schema.get_field_index("split"), "split",
                                   pa.array([split] * images_t.num_rows))
    labels = [LABELS[k % len(LABELS)] for k in range(images_t.num_rows)]
    images_t = images_t.set_column(images_t.schema.get_field_index("label"), "label", pa.array(labels))
    boxes = m.boxes.set_column(m.boxes.schema.get_field_index("image_id"), "image_id",
                               pa.array([new_id[i] for i in m.boxes["image_id"].to_pylist()]))
    write_manifest(base / name, images_t, boxes, m.rejects, m.meta)
    return base / name


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hostile") / "deep" / "a" / "b" / "c"
    base.mkdir(parents=True)
    return {"base": base, "m": _hostile_manifest(base, "m", SPLIT, 0),
            "test": _hostile_manifest(base, "test", "../../test_esc", 100),
            "plain": _hostile_manifest(base, "plain", "train", 200)}


def _files(top: Path) -> set[Path]:
    return {Path(d) / f for d, _, files in os.walk(top) for f in files} | \
        {Path(d) / s for d, subs, _ in os.walk(top) for s in subs}


def _writes_only_under(top: Path, out: Path, args: list[str], ok: bool = True) -> None:
    before = _files(top)
    result = CliRunner().invoke(main, ["--no-progress", *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    new = _files(top) - before
    outside = sorted(str(p) for p in new if not Path(os.path.abspath(p)).is_relative_to(out.resolve()))
    assert not outside, f"{args[0]} wrote outside --out {out}: {outside}"


@pytest.mark.parametrize("fmt,materialize", [("coco", False), ("coco", True), ("voc", False), ("voc", True)])
def test_export_keeps_hostile_names_inside_out(hostile: dict[str, Path], fmt: str, materialize: bool) -> None:
    top = hostile["base"].parents[3]
    out = hostile["base"] / f"ex_{fmt}_{materialize}"
    _writes_only_under(top, out, ["export", str(hostile["m"]), "--out", str(out), "--format", fmt,
                                  *(["--materialize"] if materialize else [])])
    if fmt == "coco":
        (doc_path,) = (out / "annotations").iterdir()
        doc = json.loads(doc_path.read_text())
        assert doc_path.name == "instances_x%2F..%2F..%2F..%2Fesc.json"
        assert sorted(c["name"] for c in doc["categories"]) == sorted(LABELS)  # data, kept as it is
        if materialize:  # each file_name is the file written, under the folder the JSON names
            root = Path(doc["info"]["eic_image_root"])
            assert all((root / i["file_name"]).is_file() for i in doc["images"])
            assert len(list(root.iterdir())) == len(IDS)
    else:
        assert len(list((out / "Annotations").iterdir())) == len(IDS)
        assert len(list((out / "JPEGImages").iterdir())) == len(IDS)


def test_export_hf_refuses_a_hostile_split_and_keeps_hostile_ids_inside(hostile: dict[str, Path]) -> None:
    top = hostile["base"].parents[3]
    out = hostile["base"] / "hf_bad"
    _writes_only_under(top, out, ["export", str(hostile["m"]), "--out", str(out), "--format", "hf"], ok=False)
    out = hostile["base"] / "hf"
    _writes_only_under(top, out, ["export", str(hostile["plain"]), "--out", str(out), "--format", "hf"])
    import pyarrow.parquet as pq

    (shard,) = (out / "data").iterdir()
    assert sorted(pq.read_table(shard)["image_id"].to_pylist()) == sorted(IDS)


def test_plant_copies_keeps_hostile_labels_inside_out(hostile: dict[str, Path]) -> None:
    top = hostile["base"].parents[3]
    out = hostile["base"] / "planted"
    _writes_only_under(top, out, ["plant-copies", str(hostile["m"]), "--out", str(out), "--per-transform", "1"])
    assert len([p for p in _files(out / "images") if p.is_file()]) == 5
    folders = sorted(p.name for p in (out / "images").iterdir())
    assert set(folders) <= {"..%2F..%2F..%2Fesc", "a%2Fb", "%2E%2E", "%2Ehidden", "%43ON", "nul%00x"}


def test_audit_features_and_their_reports_stay_inside_out(hostile: dict[str, Path]) -> None:
    top = hostile["base"].parents[3]
    feats = hostile["base"] / "feats"
    _writes_only_under(top, feats, ["features", str(hostile["m"]), "--out", str(feats), "--weights", "random",
                                    "--on", "image", "--resize", "64", "--crop", "32", "--device", "cpu",
                                    "--workers", "0"])
    audit = hostile["base"] / "audit"
    _writes_only_under(top, audit, ["audit", str(hostile["m"]), str(hostile["test"]), "--out", str(audit),
                                    "--features", f"{SPLIT}={feats}", "--device", "cpu", "--workers", "1"])
    assert sorted(p.name for p in audit.iterdir()) == ["contact_sheet.png", "groups.parquet", "pairs.parquet",
                                                       "report.md"]


def test_experiment_run_folders_stay_inside_out(hostile: dict[str, Path]) -> None:
    top = hostile["base"].parents[3]
    out = hostile["base"] / "exp"
    _writes_only_under(top, out, ["experiment", "data-strategy", "--train", f"..\\..\\esc={hostile['m']}",
                                  "--test", str(hostile["test"]), "--out", str(out), "--scales", "96", "--tiny",
                                  "--iters", "1", "--images-per-batch", "2", "--train-scales", "96",
                                  "--workers", "0"])
    table = json.loads((out / "table.json").read_text())
    assert table["rows"][0]["label"] == "..\\..\\esc, base"
