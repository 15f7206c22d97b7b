"""The quality bar of tests/baseline/test_training_quality.py, measured over seeds and thread counts.

Runs the test's own recipe (synthetic tree, 4 classes, 64 training and 200 held-out images,
``TrainConfig.tiny(seed=SEED, dtype="float32")``, proposals at scale 256) with ``torch.set_num_threads(THREADS)``, and
prints one JSON line: Rec@0.5 (top 300), AR@100, the sliding window's AR@100, and timings. A CPU's
kernels change training's numerics like a seed does, so a bar must hold over several of these runs
with a margin (RESULTS.md has the eight runs the test's bar was set from).

Usage: python benchmarks/quality_sweep.py --seeds 0,1,2,3,4 --threads 2 [--out DIR] [--store]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EIC_NO_PROGRESS", "1")

import numpy as np
import torch

from baseline.checkpoint import model_from_checkpoint
from baseline.config import TrainConfig
from baseline.data import load_records, read_rgb
from baseline.engine import train
from baseline.evaluation import proposal_metrics
from baseline.peers import sliding_window
from baseline.proposals import ProposalConfig, propose
from eic_builder.hardware import machine_line
from eic_builder.image_source import ImageReader
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import make_synthetic_tree


def run_once(work: Path, seed: int) -> dict:
    records, root = load_records(work / "val")
    reader = ImageReader(root)
    shutil.rmtree(work / "run", ignore_errors=True)
    t = time.perf_counter()
    train(work / "train", work / "run", TrainConfig.tiny(seed=seed, dtype="float32"))
    train_s = time.perf_counter() - t
    model, _ = model_from_checkpoint(work / "run" / "last.pt")
    gts = {r.image_id: r.boxes for r in records}
    images = {r.image_id: read_rgb(reader, r.ref) for r in records}
    cfg = ProposalConfig(scales=(256,), top_k=300)
    rpn = proposal_metrics(gts, {i: propose(model, im, cfg)[0] for i, im in images.items()}, (10, 100, 300))
    window = proposal_metrics(gts, {i: sliding_window(im, 300)[0] for i, im in images.items()}, (10, 100, 300))
    return {"seed": seed, "threads": torch.get_num_threads(), "n_boxes": int(rpn["n_boxes"]),
            "rec": rpn["Rec@0.5@300"], "ar100": rpn["AR@100"], "window_ar100": window["AR@100"],
            "train_s": round(train_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.out or Path(tempfile.mkdtemp(prefix="eic-quality-"))
    if not (work / "val" / "images.parquet").is_file():
        make_synthetic_tree(work / "tree", n_classes=4, train_per_class=16, val_per_class=50, seed=0)
        scan(work / "tree", work / "train", split="train", workers=1)
        scan(work / "tree", work / "val", split="val", workers=1)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        runs.append(run_once(work, seed))
        print(json.dumps(runs[-1]), flush=True)
    if args.store:
        from results import store

        recs = np.array([r["rec"] for r in runs])
        ratios = np.array([r["ar100"] / r["window_ar100"] for r in runs])
        # training seconds stay in the figures, not the table: they measure the machine's load, not the bar
        rows = [[f"{r['seed']}/{r['threads']}", f"{r['rec']:.3f}", f"{r['ar100'] / r['window_ar100']:.2f}"]
                for r in runs]
        rows.append(["mean (sd)", f"{recs.mean():.3f} ({recs.std(ddof=1) if len(runs) > 1 else 0:.3f})",
                     f"{ratios.mean():.2f} ({ratios.std(ddof=1) if len(runs) > 1 else 0:.2f})"])
        path = store(f"quality-threads{args.threads}", machine_line(), {"runs": runs},
                     ["seed / threads", "Rec@0.5 (top 300)", "AR@100 / sliding window's"], rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
