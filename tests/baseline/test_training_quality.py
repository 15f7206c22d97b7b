"""A short CPU training on the synthetic demo data must reach Rec@0.5 >= 0.9 (top 300) on held-out images."""

from __future__ import annotations

from pathlib import Path

import pytest

from baseline.config import TrainConfig
from baseline.data import load_records, read_rgb
from baseline.engine import model_from_checkpoint, train
from baseline.evaluation import proposal_metrics
from baseline.peers import sliding_window
from baseline.proposals import ProposalConfig, propose
from eic_builder.image_source import ImageReader
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import make_synthetic_tree


@pytest.mark.slow
def test_tiny_training_reaches_recall_0_9(tmp_path: Path) -> None:
    make_synthetic_tree(tmp_path / "tree", n_classes=4, train_per_class=16, val_per_class=6, seed=0)
    scan(tmp_path / "tree", tmp_path / "train", split="train")
    scan(tmp_path / "tree", tmp_path / "val", split="val")
    result = train(tmp_path / "train", tmp_path / "run", TrainConfig.tiny())
    assert result.iteration == 500
    model, _ = model_from_checkpoint(tmp_path / "run" / "last.pt")
    records, root = load_records(tmp_path / "val")
    gts = {r.image_id: r.boxes for r in records}
    reader = ImageReader(root)
    images = {r.image_id: read_rgb(reader, r.ref) for r in records}
    cfg = ProposalConfig(scales=(256,), top_k=300)
    rpn = proposal_metrics(gts, {i: propose(model, im, cfg)[0] for i, im in images.items()}, (10, 100, 300))
    window = proposal_metrics(gts, {i: sliding_window(im, 300)[0] for i, im in images.items()}, (10, 100, 300))
    assert len(gts) == 24 and rpn["n_boxes"] == 48
    assert rpn["Rec@0.5@300"] >= 0.9, rpn
    assert rpn["AR@100"] > window["AR@100"]  # it learnt more than a centre prior
