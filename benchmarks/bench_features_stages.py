"""Where the time of ``features`` goes: each stage of the fast path alone, in the same run.

Stages, each timed over the same images (best of 2):

* read: the DataLoader of the fast path alone (workers reading bytes), no decoding;
* decode: read + batched decode and preprocessing on the device (nvJPEG on CUDA);
* model: the VGG-16 fc6 forward alone on a resident random batch, float32 and bf16 autocast;
* end to end: ``extract_features`` (read, decode, forward, shards written).

An end-to-end rate near one stage's rate names the bottleneck. Images: N links to the real JPEGs
of ``--source`` (as bench_features.py).

Usage: python benchmarks/bench_features_stages.py --source DIR [--images 4096] [--device auto] [--workers 8] [--store]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("EIC_NO_PROGRESS", "1")

from bench_features import link_jpegs

from eic_builder.devices import resolve_device, synchronize
from eic_builder.features import FeatureConfig, build_model, extract_features, manifest_items
from eic_builder.hardware import machine_line
from eic_builder.image_batches import BytesDataset, Preprocess, collate_bytes, decode_batch_on_device
from eic_builder.scan.scanner import scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="eic-feat-stages-"))
    try:
        link_jpegs(args.source, work / "jpegs", args.images)
        scan(work / "jpegs", work / "m", split="val", workers=args.workers)
        items, root = manifest_items(work / "m", "image")
        from torch.utils.data import DataLoader

        def loader():
            return DataLoader(BytesDataset(items, root), batch_size=args.batch_size, num_workers=args.workers,
                              collate_fn=collate_bytes)

        def read_only() -> float:
            t = time.perf_counter()
            for _batch, _index in loader():
                pass
            return time.perf_counter() - t

        pp = Preprocess()

        def decode() -> float:
            t = time.perf_counter()
            for batch, index in loader():
                decode_batch_on_device(batch, [items[i] for i in index], pp, device)
            synchronize(device)
            return time.perf_counter() - t

        model = build_model("random", "fc6").to(device).to(memory_format=torch.channels_last).eval()
        x = torch.randn(args.batch_size, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)

        def forward(bf16: bool) -> float:
            n_batches = max(1, args.images // args.batch_size)
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                model(x)
                synchronize(device)
                t = time.perf_counter()
                for _ in range(n_batches):
                    model(x).float().cpu()
                synchronize(device)
            return (time.perf_counter() - t) * args.images / (n_batches * args.batch_size)

        def end_to_end() -> float:
            shutil.rmtree(work / "f", ignore_errors=True)
            cfg = FeatureConfig(weights="random", device=args.device, workers=args.workers,
                                batch_size=args.batch_size, loader="tensor", dtype="bfloat16")
            t = time.perf_counter()
            extract_features(work / "m", work / "f", cfg, model=model)
            return time.perf_counter() - t

        n = len(items)
        print(machine_line())
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
        print(f"device: {name}; {n} images, batch {args.batch_size}, {args.workers} loader workers")
        rates = {}
        for label, fn in (("read (DataLoader, bytes)", read_only), ("read + decode + preprocess", decode),
                          ("model fp32 (resident batch)", lambda: forward(False)),
                          ("model bf16 (resident batch)", lambda: forward(True)), ("end to end", end_to_end)):
            best = min(fn() for _ in range(2))
            rates[label] = n / best
            print(f"  {label:30s} {n / best:9.1f} img/s")
        if args.store:
            from results import store

            line = machine_line() if device.type != "cuda" else f"{name} (torch {torch.__version__})"
            path = store(f"features-stages-{n}-{device.type}", line, {"images": n, "img_s": rates},
                         ["stage alone", "img/s"], [[label, f"{rate:,.1f}"] for label, rate in rates.items()])
            print(f"stored {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
