"""Streaming inner/inter-class distances over N float16 4096-d features in C classes, on the CPU.

Writes (once, cached) a features directory of N rows (default 1,000,000 in
1,000 classes, shards of 50,000 rows), then, in a fresh process, streams
:func:`eic_builder.distances.feature_distances` over it and reports the time
and the peak memory (RSS) of that process beyond its start. The brute-force
method (scikit-learn ``cosine_distances`` per class, then between centroids)
is timed on one class of N/C rows in the same run and extrapolated.

Usage: python benchmarks/bench_distances.py [--rows 1000000] [--classes 1000] [--cache DIR] [--store]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eic_builder.dataset.feature_shards import features_table
from eic_builder.dataset.schemas import FEATURE_ROW_GROUP
from eic_builder.dataset.tables import write_table
from eic_builder.hardware import machine_line, sequential_read_rate

SHARD_ROWS = 50_000


def make_features(out: Path, rows: int, classes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 4096)).astype(np.float32)
    labels_all = np.sort(rng.integers(0, classes, rows))  # shards are sorted by class, like real ones
    out.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, rows, SHARD_ROWS)):
        lab = labels_all[start:start + SHARD_ROWS]
        x = centres[lab] + rng.standard_normal((len(lab), 4096), dtype=np.float32) * 2.0
        ids = [f"img{start + i:08d}" for i in range(len(lab))]
        table = features_table(ids, [-1] * len(lab), [f"n{c:08d}" for c in lab], x.astype(np.float16))
        write_table(table, out / f"part-{k:06d}.parquet", "features", {"random_weights": False},
                    row_group_size=FEATURE_ROW_GROUP)


def stream_in_child(path: Path) -> None:
    """Run in a fresh process: time the streaming statistic and report its peak resident memory
    (sampled every 10 ms) beyond the resident memory before it started (imports done)."""
    import threading

    import torch  # noqa: F401 - imported before the baseline: its libraries are not the statistic's memory

    from eic_builder.distances import feature_distances

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    base, peak, stop = rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    d = feature_distances(path)
    took = time.perf_counter() - t
    stop.set()
    sampler.join()
    print(f"{took} {max(peak[0], rss_mib()) - base} {d.inner} {d.inter} {d.n_features} {d.n_classes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic-bench-distances")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    if args.child is not None:
        stream_in_child(args.child)
        return
    path = args.cache / f"features-{args.rows}-{args.classes}"
    if not (path / ".complete").exists():
        t = time.perf_counter()
        make_features(path, args.rows, args.classes)
        (path / ".complete").write_text("ok")
        print(f"wrote {args.rows:,} features in {args.classes:,} classes in {time.perf_counter() - t:.1f} s")
    shards = sorted(path.glob("part-*.parquet"))
    size = sum(p.stat().st_size for p in shards)
    # the machine's limit for this I/O-bound stage: a plain sequential read of the same shards, in the
    # same cache state (read twice; the second, warm read counts, as the streaming run reads warm too)
    sequential_read_rate(shards)
    read_mb_s = sequential_read_rate(shards)
    r = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=True)
    took, mem, inner, inter, n, c = r.stdout.split()
    # brute force on one class of the average size, extrapolated to all classes (+ the centroid matrix)
    from sklearn.metrics.pairwise import cosine_distances

    per_class = args.rows // args.classes
    x = np.random.default_rng(1).standard_normal((per_class, 4096), dtype=np.float32)
    t = time.perf_counter()
    cosine_distances(x)
    brute = (time.perf_counter() - t) * args.classes
    print(machine_line())
    print(f"input {size / 2**30:.2f} GiB in {len(shards)} shards; plain sequential read {read_mb_s:,.0f} MB/s")
    print(f"streaming: {float(took):.1f} s for {int(n):,} features in {int(c):,} classes; peak memory "
          f"{float(mem):.0f} MiB beyond the imports; inner {float(inner):.4f}, inter {float(inter):.4f}")
    print(f"brute force (sklearn pairwise per class, extrapolated from one {per_class}-row class): {brute:.0f} s")
    print(f"ratio brute / streaming: {brute / float(took):.1f}x")
    stream_mb_s = size / float(took) / 1e6
    print(f"streaming reads {stream_mb_s:,.0f} MB/s: {stream_mb_s / read_mb_s:.0%} of the plain read rate")
    if args.store:
        from results import store

        rows = [[f"brute force (sklearn per class, extrapolated from one {per_class:,}-row class)", f"{brute:.0f}",
                 "1.0x", ""],
                ["streaming, exact (eic_builder.distances)", f"{float(took):.1f}", f"{brute / float(took):.1f}x",
                 f"{stream_mb_s:,.0f}"],
                ["limit: plain sequential read", f"{size / 1e6 / read_mb_s:.1f}", "", f"{read_mb_s:,.0f}"]]
        path = store(f"distances-{args.rows}", machine_line(),
                     {"rows": args.rows, "classes": args.classes, "streaming_s": float(took), "peak_mib": float(mem),
                      "inner": float(inner), "inter": float(inter), "brute_s": brute, "read_mb_s": read_mb_s},
                     ["method", "seconds", "vs brute force", "MB/s"], rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
