"""``eic-build stats`` over a large manifest: vectorised statistics against a per-row Python loop.

Writes (once, cached) a manifest of N boxes (default 4 million) on N/1.5 images
in 1,000 classes, then times :func:`eic_builder.stats.compute_split_stats`
(Parquet read included) and a naive loop over the same rows (``to_pylist`` and
Python arithmetic per box), measured in the same run on a 200k-box slice and
extrapolated.

Usage: python benchmarks/bench_stats.py [--boxes 4000000] [--cache DIR] [--store]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from eic_builder.dataset.manifest import read_manifest, write_manifest
from eic_builder.dataset.tables import empty_table, to_table
from eic_builder.hardware import machine_line
from eic_builder.stats import compute_split_stats


def make_manifest(out: Path, n_boxes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_images = int(n_boxes / 1.5)
    image_ids = np.array([f"img{i:08d}" for i in range(n_images)], dtype=object)
    labels = np.array([f"n{1000000 + c:08d}" for c in range(1000)], dtype=object)
    image_label = labels[rng.integers(0, 1000, n_images)]
    width = rng.integers(200, 800, n_images).astype(np.int32)
    height = rng.integers(200, 800, n_images).astype(np.int32)
    owner = np.sort(rng.integers(0, n_images, n_boxes))
    counts = np.bincount(owner, minlength=n_images).astype(np.int32)
    x1 = rng.uniform(0, 0.5, n_boxes) * width[owner]
    y1 = rng.uniform(0, 0.5, n_boxes) * height[owner]
    x2 = x1 + rng.uniform(0.02, 0.5, n_boxes) * width[owner]
    y2 = y1 + rng.uniform(0.02, 0.5, n_boxes) * height[owner]
    area = ((x2 - x1) * (y2 - y1) / (width[owner] * height[owner])).astype(np.float32)
    images = {"image_id": image_ids, "split": ["train"] * n_images, "label": image_label, "wnid": image_label,
              "path": image_ids, "annotation": [None] * n_images, "width": width, "height": height,
              "has_image": np.ones(n_images, bool), "n_boxes": counts}
    boxes = {"image_id": image_ids[owner], "box_index": np.zeros(n_boxes, np.int32), "label": image_label[owner],
             "wnid": image_label[owner], "x1": x1, "y1": y1, "x2": x2, "y2": y2, "area_ratio": area,
             "is_small": np.zeros(n_boxes, bool), "is_twisted": np.zeros(n_boxes, bool)}
    write_manifest(out, to_table("images", images), to_table("boxes", boxes), empty_table("rejects"))


def naive_stats(rows: list[dict]) -> tuple[float, float, float]:
    scale = small = twisted = 0.0
    for r in rows:
        w, h = r["x2"] - r["x1"], r["y2"] - r["y1"]
        scale += r["area_ratio"]
        small += w < 32 and h < 32
        twisted += w / h > 4 or w / h < 0.25
    n = len(rows)
    return scale / n * 100, small / n * 100, twisted / n * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", type=int, default=4_000_000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic-bench-stats")
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    out = args.cache / f"manifest-{args.boxes}"
    if not (out / "images.parquet").exists():
        t = time.perf_counter()
        make_manifest(out, args.boxes)
        print(f"wrote a {args.boxes:,}-box manifest in {time.perf_counter() - t:.1f} s under {out}")
    compute_split_stats("warm", out)  # warm the page cache and imports
    t = time.perf_counter()
    s = compute_split_stats("bench", out)
    fast_s = time.perf_counter() - t
    sample = 200_000
    t = time.perf_counter()
    rows = read_manifest(out).boxes.slice(0, sample).to_pylist()
    naive_stats(rows)
    naive_s = (time.perf_counter() - t) * args.boxes / sample
    print(machine_line())
    print(f"stats over {s.n_boxes:,} boxes, {s.n_images:,} images: {fast_s:.2f} s (vectorised, Parquet read included)")
    print(f"naive per-row loop, extrapolated from {sample:,} boxes: {naive_s:.1f} s")
    print(f"ratio naive / vectorised: {naive_s / fast_s:.1f}x")
    if args.store:
        from results import store

        rows = [[f"naive per-row loop (extrapolated from {sample:,} boxes)", f"{naive_s:.1f}", "1.0x"],
                ["stats (vectorised, Parquet read included)", f"{fast_s:.2f}", f"{naive_s / fast_s:.1f}x"]]
        path = store(f"stats-{args.boxes}", machine_line(), {"boxes": args.boxes, "fast_s": fast_s, "naive_s": naive_s},
                     ["method", "seconds", "vs naive"], rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
