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
    scored = json.loads((tmp_path / "run" / "val_metrics.json").read_text())  # the library's validation hook
    assert scored["iteration"] == 4 and f"AR@100 {scored['AR@100']:.4f}" in r.output
    assert (tmp_path / "run" / "val_eval" / "rpn" / "proposals.parquet").is_file()
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


def test_quality_score_auto_scales_and_box_voting(synthetic_tree: Path, tmp_path: Path) -> None:
    """A checkpoint trained with --score object-x-iou is scored by it unless told otherwise, records what
    it used; --scales auto scores each image once at its shorter side clamped into the training scales."""
    scan(synthetic_tree, tmp_path / "train", split="train")
    scan(synthetic_tree, tmp_path / "val", split="val")
    r = run("train-baseline", str(tmp_path / "train"), "--out", str(tmp_path / "q"), "--tiny", "--iters", "4",
            "--images-per-batch", "2", "--train-scales", "96,128", "--score", "object-x-iou")
    assert r.exit_code == 0, r.output
    logged = json.loads((tmp_path / "q" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"iou_1", "iou_2", "iou_3"} <= set(logged)
    assert json.loads((tmp_path / "q" / "config.json").read_text())["score"] == "object-x-iou"
    used = {}
    for name, extra in (("default", []), ("object", ["--score", "object"]), ("vote", ["--box-voting", "0.7"])):
        r = run("eval-baseline", str(tmp_path / "val"), "--out", str(tmp_path / name), "--checkpoint",
                str(tmp_path / "q" / "last.pt"), "--scales", "auto", "--max-images", "3", *extra)
        assert r.exit_code == 0, r.output
        used[name] = json.loads((tmp_path / name / "metrics.json").read_text())["proposal_config"]
    assert used["default"]["score"] == "object-x-iou" and used["object"]["score"] == "object"
    assert used["default"]["scale_range"] == [96, 128] and used["vote"]["box_voting"] == 0.7
    ranked = {name: pq.read_table(tmp_path / name / "rpn" / "proposals.parquet").to_pydict()
              for name in ("default", "object", "vote")}
    assert ranked["default"]["score"] != ranked["object"]["score"]  # the product, not the object probability
    assert ranked["vote"]["score"] == ranked["default"]["score"] and ranked["vote"]["x1"] != ranked["default"]["x1"]
    # a checkpoint without a quality head cannot rank by it; auto scales need a checkpoint
    r = run("train-baseline", str(tmp_path / "train"), "--out", str(tmp_path / "o"), "--tiny", "--iters", "2",
            "--images-per-batch", "2", "--train-scales", "96")
    assert r.exit_code == 0, r.output
    r = run("eval-baseline", str(tmp_path / "val"), "--out", str(tmp_path / "e"), "--checkpoint",
            str(tmp_path / "o" / "last.pt"), "--score", "object-x-iou")
    assert r.exit_code == 2 and "--score object-x-iou needs a checkpoint trained with it" in r.output, r.output
    r = run("eval-baseline", str(tmp_path / "val"), "--out", str(tmp_path / "e"), "--method", "sliding-window",
            "--scales", "auto")
    assert r.exit_code == 2 and "--scales auto" in r.output and "--checkpoint" in r.output, r.output
    for bad, words in ((["--box-voting", "1.5"], "--box-voting=1.5 must be an IoU in (0, 1]"),
                       (["--quality-exponent", "-1"], "--quality-exponent=-1.0 must be a finite number >= 0")):
        r = run("eval-baseline", str(tmp_path / "val"), "--out", str(tmp_path / "e"), "--checkpoint",
                str(tmp_path / "q" / "last.pt"), *bad)
        assert r.exit_code == 2 and words in r.output, r.output
    r = run("train-baseline", str(tmp_path / "train"), "--out", str(tmp_path / "w"), "--tiny",
            "--quality-weight", "0")
    assert r.exit_code == 2 and "--quality-weight=0.0 must be a finite number > 0" in r.output, r.output
