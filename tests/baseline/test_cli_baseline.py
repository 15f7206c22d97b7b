from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from eic_builder.cli import main
from eic_builder.dataset.manifest import read_manifest
from eic_builder.holdout import held_out
from eic_builder.scan.scanner import scan


def run(*args: str):
    return CliRunner().invoke(main, ["--no-progress", *args], catch_exceptions=False)


def test_hold_out_is_deterministic_and_its_old_name_works(synthetic_tree: Path, tmp_path: Path) -> None:
    scan(synthetic_tree, tmp_path / "m", split="train")
    r = run("hold-out", str(tmp_path / "m"), "--train-out", str(tmp_path / "a"), "--test-out", str(tmp_path / "b"),
            "--test-fraction", "0.25")
    assert r.exit_code == 0, r.output
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    ids_b = b.images["image_id"].to_pylist()
    assert len(a.images) + len(b.images) == 48 and not set(ids_b) & set(a.images["image_id"].to_pylist())
    assert ids_b == [i for i in read_manifest(tmp_path / "m").images["image_id"].to_pylist()
                     if held_out(i, 0.25)]
    assert set(b.boxes["image_id"].to_pylist()) <= set(ids_b)
    r = run("split", str(tmp_path / "m"), "--train-out", str(tmp_path / "x"), "--test-out", str(tmp_path / "y"),
            "--test-fraction", "1.5")  # the old name: same command, same checks
    assert r.exit_code == 2 and "--test-fraction 1.5 must be between 0 and 1" in r.output
    listed = run("--help").output
    assert "  hold-out " in listed and "  split " not in listed


def test_train_and_eval_commands(synthetic_tree: Path, tmp_path: Path) -> None:
    scan(synthetic_tree, tmp_path / "train", split="train")
    scan(synthetic_tree, tmp_path / "val", split="val")
    r = run("train-baseline", str(tmp_path / "train"), "--out", str(tmp_path / "run"), "--tiny", "--iters", "4",
            "--images-per-batch", "2", "--train-scales", "128", "--val", str(tmp_path / "val"))
    assert r.exit_code == 0, r.output
    assert "trained to iteration 4 on cpu" in r.output and "held-out" in r.output
    r = run("eval-baseline", str(tmp_path / "val"), "--out", str(tmp_path / "eval"), "--checkpoint",
            str(tmp_path / "run" / "last.pt"), "--method", "sliding-window", "--scales", "128,192", "--max-images", "3")
    assert r.exit_code == 0, r.output
    assert "| rpn |" in r.output and "| sliding-window |" in r.output
    assert "| rpn-anchors |" in r.output  # what the regressor adds: one row of every evaluation
    assert (tmp_path / "eval" / "rpn" / "proposals.parquet").is_file()
    assert (tmp_path / "eval" / "rpn-anchors" / "proposals.parquet").is_file()
    assert "Rec@0.7 (top 300)" in r.output
    r = run("eval-baseline", str(tmp_path / "val"), "--out", str(tmp_path / "eval2"), "--checkpoint",
            str(tmp_path / "run" / "last.pt"), "--scales", "128", "--max-images", "2", "--no-anchors-only")
    assert r.exit_code == 0 and "| rpn |" in r.output and "rpn-anchors" not in r.output, r.output
    loose = {}
    for nms in ("0.5", "0.9"):  # a looser NMS over levels and scales keeps at least as many proposals
        r = run("eval-baseline", str(tmp_path / "val"), "--out", str(tmp_path / f"eval-{nms}"), "--checkpoint",
                str(tmp_path / "run" / "last.pt"), "--scales", "128,192", "--max-images", "2", "--scale-nms", nms)
        assert r.exit_code == 0, r.output
        doc = json.loads((tmp_path / f"eval-{nms}" / "metrics.json").read_text())
        assert doc["proposal_config"]["scale_nms"] == float(nms) and doc["proposal_config"]["level_nms"] == 0.7
        loose[nms] = pq.read_table(tmp_path / f"eval-{nms}" / "rpn" / "proposals.parquet").num_rows
    assert loose["0.9"] > loose["0.5"] > 0
    r = run("eval-baseline", str(tmp_path / "val"), "--out", str(tmp_path / "eval3"), "--checkpoint",
            str(tmp_path / "run" / "last.pt"), "--level-nms", "1.5")
    assert r.exit_code == 2 and "--level-nms=1.5 must be in (0, 1]" in r.output, r.output
    r = run("train-baseline", str(tmp_path / "train"), "--out", str(tmp_path / "run"), "--tiny", "--iters", "4")
    assert r.exit_code == 2 and "already holds a run" in r.output
    r = run("train-baseline", str(tmp_path / "train"), "--out", str(tmp_path / "r2"), "--train-scales", "1,x")
    assert r.exit_code == 2 and "is not a comma list of integers" in r.output


def test_derived_manifests_compose(synthetic_tree: Path, tmp_path: Path) -> None:
    """scan -> filter -> split -> features -> train-baseline -> eval-baseline, each reading what the last wrote."""
    m = tmp_path / "m"
    scan(synthetic_tree, m / "scan", split="train", workers=1)
    steps = [
        ("filter", str(m / "scan"), "--out", str(m / "filtered"), "--drop", "small"),
        ("hold-out", str(m / "filtered"), "--train-out", str(m / "train"), "--test-out", str(m / "test"),
         "--test-fraction", "0.25"),
        ("features", str(m / "train"), "--out", str(tmp_path / "f"), "--weights", "random", "--crop", "32",
         "--resize", "36", "--workers", "0", "--device", "cpu"),
        ("train-baseline", str(m / "train"), "--out", str(tmp_path / "run"), "--tiny", "--iters", "2",
         "--images-per-batch", "2", "--train-scales", "96", "--checkpoint-every", "2", "--device", "cpu"),
        ("eval-baseline", str(m / "test"), "--out", str(tmp_path / "eval"), "--checkpoint",
         str(tmp_path / "run" / "last.pt"), "--scales", "96", "--max-images", "2", "--device", "cpu"),
    ]
    for step in steps:
        r = run(*step)
        assert r.exit_code == 0, (step[0], r.output)
    test = read_manifest(m / "test")
    assert test.meta["source_root"] == str(synthetic_tree.resolve()) and test.meta["part"] == "test"
    lineage = test.meta["lineage"][0]
    assert lineage["manifest"] == str((m / "filtered").resolve())
    assert lineage["lineage"][0]["manifest"] == str((m / "scan").resolve()) and lineage["lineage"][0]["command"]
    assert (tmp_path / "eval" / "metrics.json").is_file()
