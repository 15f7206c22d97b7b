from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from baseline.eval_run import EvalOptions, evaluate_methods
from baseline.proposals import ProposalConfig
from eic_builder.dataset.tables import read_table
from eic_builder.errors import OptionError
from eic_builder.scan.scanner import scan


@pytest.fixture(scope="module")
def real_subset(ilsvrc_val_1300: Path, tmp_path_factory: pytest.TempPathFactory, first_images) -> Path:
    d = tmp_path_factory.mktemp("eval")
    scan(ilsvrc_val_1300, d / "full")
    return first_images(d / "full", d / "m", 8)


def test_peers_scored_and_files_written(real_subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    res = evaluate_methods(real_subset, out, EvalOptions(methods=["sliding-window", "selective-search"],
                                                         proposals=ProposalConfig(top_k=1000)))
    assert set(res) == {"sliding-window", "selective-search"}
    for name, m in res.items():
        assert 0 <= m["AR@10"] <= m["AR@100"] <= m["AR@1000"] <= 1, name
        assert m["n_images"] == 8
    props = read_table(out / "selective-search" / "proposals.parquet", "proposals")
    assert props["rank"].to_pylist()[:3] == [0, 1, 2]
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["results"]["sliding-window"]["AR@100"] == res["sliding-window"]["AR@100"]
    md = (out / "metrics.md").read_text()
    assert md.startswith("| Method | AR@10 | AR@100") and "| selective-search |" in md
    assert (out / "recall_iou.png").read_bytes()[:4] == b"\x89PNG"


def test_coco_files_rescore_the_same_with_pycocotools(real_subset: Path, tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "eval"
    res = evaluate_methods(real_subset, out, EvalOptions(checkpoint=None, methods=["sliding-window"],
                                                         proposals=ProposalConfig(top_k=1000)))["sliding-window"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(out / "gt_coco.json"))
        dt = gt.loadRes(str(out / "sliding-window" / "proposals_coco.json"))
        ev = COCOeval(gt, dt, "bbox")
        ev.params.useCats = 0
        ev.params.maxDets = [10, 100, 1000]
        ev.evaluate()
        ev.accumulate()
    for j, k in enumerate([10, 100, 1000]):
        assert ev.eval["recall"][:, 0, 0, j].mean() == pytest.approx(res[f"AR@{k}"], abs=1e-12)


def test_bad_arguments(real_subset: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="nothing to evaluate"):
        evaluate_methods(real_subset, tmp_path / "e", EvalOptions(checkpoint=None, methods=[]))
    with pytest.raises(OptionError, match="methods 'edge-boxes' is not known; choose from selective-search"):
        evaluate_methods(real_subset, tmp_path / "e", EvalOptions(checkpoint=None, methods=["edge-boxes"]))
    with pytest.raises(OptionError, match="max_images 0 must be >= 1"):
        evaluate_methods(real_subset, tmp_path / "e", EvalOptions(checkpoint=None, methods=["sliding-window"],
                                                                  max_images=0))
