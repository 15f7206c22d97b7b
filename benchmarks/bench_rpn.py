"""Hourglass RPN speed: training images/s and proposal inference images/s (all test scales), in float32
and in bfloat16 autocast (``--dtype bfloat16``; channels_last on CUDA), in the same run, and which of the
two ``--dtype auto`` picks on this machine (bf16 only where the device runs it natively).

Uses the synthetic demo tree (generated once). On this project's CPU machine use ``--width 0.125
--scales 256`` for a quick look; on a GPU the defaults (VGG-16 width, 7 scales 200..1400).

Usage: python benchmarks/bench_rpn.py [--width 1.0] [--iters 20] [--images 20] [--scales 200,...,1400] [--store]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EIC_NO_PROGRESS", "1")

import torch

from baseline.checkpoint import model_from_checkpoint
from baseline.config import TrainConfig
from baseline.data import load_records, read_rgb
from baseline.engine import train
from baseline.proposals import TEST_SCALES, ProposalConfig, propose
from eic_builder.devices import resolve_device, synchronize
from eic_builder.hardware import machine_line, resolve_dtype
from eic_builder.image_source import ImageReader
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import make_synthetic_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--images-per-batch", type=int, default=8)
    parser.add_argument("--train-scale", type=int, default=600)
    parser.add_argument("--images", type=int, default=20, help="images for the inference timing")
    parser.add_argument("--scales", default=",".join(map(str, TEST_SCALES)))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic-bench-rpn")
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    device = resolve_device(args.device)
    tree = args.cache / "tree"
    if not (tree / ".complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        make_synthetic_tree(tree, n_classes=10, train_per_class=20, val_per_class=4, size_range=(300, 500))
        (tree / ".complete").write_text("ok")
    work = Path(tempfile.mkdtemp(prefix="eic-bench-rpn-"))
    scales = tuple(int(s) for s in args.scales.split(","))
    rows = []
    try:
        scan(tree, work / "train", split="train")
        recs, root = load_records(work / "train")
        reader = ImageReader(root)
        images = [read_rgb(reader, r.ref) for r in recs[: args.images]]
        for dtype in ("float32", "bfloat16"):
            amp = dtype == "bfloat16"
            cfg = TrainConfig(iters=args.iters, images_per_batch=args.images_per_batch, width=args.width,
                              train_scales=(args.train_scale,), device=device.type, dtype=dtype,
                              workers=min(4, os.cpu_count() or 1),
                              checkpoint_every=args.iters, warmup_iters=1)
            run = work / f"run-{amp}"
            train(work / "train", run, cfg, stop_after=2)  # warm-up: cuDNN autotuning, allocator
            shutil.rmtree(run)
            synchronize(device)
            r = train(work / "train", run, cfg)
            model, _ = model_from_checkpoint(run / "last.pt")
            model.to(device)
            if amp:
                model = model.to(memory_format=torch.channels_last)
            pc = ProposalConfig(scales=scales, top_k=1000)
            propose(model, images[0], pc, device, amp)
            synchronize(device)
            t = time.perf_counter()
            for im in images:
                propose(model, im, pc, device, amp)
            synchronize(device)
            rows.append((dtype, r.images_per_second, len(images) / (time.perf_counter() - t)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(machine_line())
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"device: {dev}; width {args.width}; train scale {args.train_scale}, batch {args.images_per_batch}; "
          f"inference scales {scales}")
    auto = resolve_dtype("auto", device)
    for name, tr, inf in rows:
        print(f"{name:24s} train {tr:8.1f} img/s   proposals {inf:7.2f} img/s")
    print(f"ratio bfloat16 / float32: train {rows[1][1] / rows[0][1]:.2f}x, proposals {rows[1][2] / rows[0][2]:.2f}x; "
          f"--dtype auto picks {auto} here")
    if args.store:
        from results import store

        line = machine_line() if device.type != "cuda" else f"GPU: {dev}"
        path = store(f"rpn-dtype-w{args.width:g}-s{args.train_scale}", line,
                     {"rows": rows, "width": args.width, "train_scale": args.train_scale, "scales": list(scales),
                      "iters": args.iters, "images_per_batch": args.images_per_batch, "auto": auto},
                     ["dtype", "train img/s", "proposal img/s", "ratio to float32 (train, proposals)",
                      "--dtype auto"],
                     [[n, f"{tr:.1f}", f"{inf:.2f}", f"{tr / rows[0][1]:.2f}x, {inf / rows[0][2]:.2f}x",
                       "picked" if n == auto else ""] for n, tr, inf in rows])
        print(f"stored {path}")


if __name__ == "__main__":
    main()
