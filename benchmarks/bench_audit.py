"""audit's speed and quality, with ratios measured in the same run.

1. Features search on N random 4,096-d float16 features (default 200,000) holding P planted
   near-copies (cosine 0.74-0.98 to their original): our path (PCA-whiten to 256 dimensions, then the
   exact block search, and FAISS IVF) against brute-force numpy (normalised 4,096-d rows, block
   products). Each runs in a fresh process, which reports its time, its peak memory (RSS) and its
   recall of the planted pairs. Brute force is timed on its first Q query rows (all originals of the
   planted pairs among them) and extrapolated to all N rows (its cost is linear in the queries).
2. pHash of the 1,300 real ILSVRC val images (../shared/data): images/s with 1 worker and with all cores.
3. Precision and recall per method and per transformation on real planted copies: 10 copies per
   transformation of the first 400 real val images, fc6 features with RANDOM weights (no ImageNet
   weights here) at 160 px with --mirror --regions, float32 (bench_audit_peers.py runs the same
   against imagededup, each tool as a whole process).

4. ``--mirror-cost``: what finding mirrored copies costs the perceptual method: hashing the 1,300 real
   val images as before (``imagehash.phash``) against the hash and mirror hash of each
   (:func:`~eic_builder.audit.perceptual.phash_pair`), one worker; and the multi-index search of
   --rows random hashes (with planted near and mirrored pairs): the search before mirror hashes
   (a copy of it, here), today's direct only, and today's direct + mirrored.

5. ``--search-only``: the exact search alone on --rows unit vectors drawn in the whitened space, on
   ``--device`` (cpu, cuda): EIC's 2.7 million images fit a GPU this way.

Usage: python benchmarks/bench_audit.py [--rows 200000] [--planted 1000] [--queries 2000] [--skip-quality] [--store]
       python benchmarks/bench_audit.py --mirror-cost --rows 2000000 [--store]
       python benchmarks/bench_audit.py --search-only --rows 2700000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from eic_builder.hardware import machine_line, usable_cores

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ilsvrc2012_val_1300"
THRESHOLD = 0.6


def make_features(path: Path, rows: int, planted: int, seed: int = 0) -> None:
    """``path``: (rows, 4096) float16 .npy; the last ``planted`` rows are noisy copies of the first."""
    rng = np.random.default_rng(seed)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, 4096))
    for s in range(0, rows, 20_000):
        x[s:s + 20_000] = rng.standard_normal((min(20_000, rows - s), 4096), dtype=np.float32)
    originals = np.asarray(x[:planted], dtype=np.float32)
    noise = rng.standard_normal(originals.shape, dtype=np.float32) * rng.uniform(0.2, 0.9, (planted, 1))
    x[rows - planted:] = originals + noise.astype(np.float32)
    x.flush()


def planted_pairs(rows: int, planted: int) -> set[tuple[int, int]]:
    return {(i, rows - planted + i) for i in range(planted)}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(stage: str, data: Path, planted: int, queries: int) -> dict:
    """One measurement, in this process (called in a child)."""
    x = np.load(data, mmap_mode="r")
    rows = len(x)
    truth = planted_pairs(rows, planted)
    start = time.perf_counter()
    if stage == "brute":
        q = min(queries, rows)
        unit = np.empty((rows, 4096), dtype=np.float32)
        for s in range(0, rows, 20_000):
            block = np.asarray(x[s:s + 20_000], dtype=np.float32)
            unit[s:s + 20_000] = block / np.linalg.norm(block, axis=1, keepdims=True)
        prep = time.perf_counter() - start
        found = set()
        t0 = time.perf_counter()
        for s in range(0, q, 1024):
            sims = unit[s:min(q, s + 1024)] @ unit.T
            r, c = np.nonzero(sims >= THRESHOLD)
            found |= {(s + a, b) for a, b in zip(r.tolist(), c.tolist()) if s + a < b}
        search = (time.perf_counter() - t0) * rows / q
        seconds = prep + search
        hits = len(truth & found)
        return {"seconds": seconds, "peak_mb": peak_mb(), "recall": hits / len(truth), "queried": q}
    from eic_builder.audit.neighbours import cosine_pairs, whiten

    z = whiten(x, 256)
    t_whiten = time.perf_counter() - start
    i, j, _ = cosine_pairs(z, THRESHOLD, index=stage, device="cpu")
    seconds = time.perf_counter() - start
    found = set(zip(i.tolist(), j.tolist()))
    return {"seconds": seconds, "whiten_seconds": t_whiten, "peak_mb": peak_mb(),
            "recall": len(truth & found) / len(truth), "pairs": len(found), "false_pairs": len(found - truth)}


def child(stage: str, data: Path, planted: int, queries: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--stage", stage, "--data", str(data), "--planted", str(planted),
                          "--queries", str(queries)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_phash() -> dict[int, float]:
    from eic_builder.audit.catalog import load_catalog
    from eic_builder.audit.perceptual import compute_hashes
    from eic_builder.scan.scanner import scan

    if not SHARED.exists():
        print(f"pHash: skipped ({SHARED} is absent)")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        scan(SHARED, Path(tmp) / "m")
        cat = load_catalog([Path(tmp) / "m"])
        rates = {}
        for workers in sorted({1, usable_cores()}):
            start = time.perf_counter()
            compute_hashes(cat, workers)
            rates[workers] = len(cat) / (time.perf_counter() - start)
    print("pHash of the 1,300 real val images (227 px JPEGs): "
          + ", ".join(f"{w} worker(s) {r:,.0f} img/s" for w, r in rates.items())
          + f"; {rates[1]:,.0f} img/s per core")
    return rates


def bench_quality() -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from eic_builder.audit import AuditOptions, audit_manifests
    from eic_builder.dataset.manifest import read_manifest, write_manifest
    from eic_builder.features import FeatureConfig, extract_features
    from eic_builder.planted_copies import TRANSFORMS, plant_copies, score_planted
    from eic_builder.scan.scanner import scan

    if not SHARED.exists():
        print(f"quality: skipped ({SHARED} is absent)")
        return
    config = FeatureConfig(weights="random", on="image", resize=160, crop=160, mirror=True, regions=True, device="cpu",
                           dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        scan(SHARED, d / "all")
        m = read_manifest(d / "all")
        images = m.images.slice(0, 400)
        write_manifest(d / "val", images, m.boxes.filter(pc.is_in(m.boxes["image_id"], images["image_id"])),
                       m.rejects, m.meta)
        extract_features(d / "val", d / "fval", config)
        print(f"quality on real planted copies (400 val originals + 10 copies per transformation, 5 seeds; "
              f"features: VGG-16 RANDOM weights, 160 px, --mirror --regions; thresholds: 6 bits, "
              f"cosine {THRESHOLD}):")
        print("| seed | method | pairs | precision | " + " | ".join(f"recall {t}" for t in TRANSFORMS) + " |")
        print("|---|---|---:|---:|" + "---:|" * len(TRANSFORMS))
        for seed in range(5):
            s = d / f"seed{seed}"
            copies = plant_copies(d / "val", s / "planted", per_transform=10, seed=seed)
            scan(s / "planted" / "images", s / "train", split="train")
            extract_features(s / "train", s / "ftrain", config)
            features = {"val": d / "fval", "train": s / "ftrain"}
            audit_manifests([d / "val", s / "train"], s / "audit", AuditOptions(features=features, device="cpu"))
            for method, row in score_planted(pq.read_table(s / "audit" / "pairs.parquet"), copies).items():
                print(f"| {seed} | {method} | {row['pairs']:.0f} | {row['precision']:.2f} | "
                      + " | ".join(f"{row[t]:.1f}" for t in TRANSFORMS) + " |")


def search_only(rows: int, planted: int, device: str, dims: int = 256) -> None:
    """The exact search alone at EIC scale, on unit vectors drawn in the whitened space (no 4,096-d
    features: 2.7 million of those are 22 GB): time and recall of planted pairs."""
    import torch

    from eic_builder.audit.neighbours import _exact_pairs

    rng = np.random.default_rng(0)
    z = np.empty((rows, dims), dtype=np.float32)
    for s in range(0, rows, 500_000):
        z[s:s + 500_000] = rng.standard_normal((min(500_000, rows - s), dims), dtype=np.float32)
    noise = rng.standard_normal((planted, dims), dtype=np.float32) * rng.uniform(0.2, 0.9, (planted, 1))
    z[rows - planted:] = z[:planted] + noise.astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    i, j, _ = _exact_pairs(z, THRESHOLD, device)
    seconds = time.perf_counter() - start
    found = set(zip(i.tolist(), j.tolist()))
    truth = planted_pairs(rows, planted)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else machine_line()
    print(f"exact search alone, {rows:,} x {dims} unit vectors on {name}: {seconds:.1f} s, "
          f"{rows * (rows - 1) / 2 / seconds / 1e9:,.1f} G pairs/s, recall {len(truth & found) / len(truth):.3f} "
          f"of {planted:,} planted, {len(found - truth)} other pairs")


def imagehash_phash(data: bytes) -> int:
    """The pHash as the audit computed it before mirrored hashes (imagehash, the same draft decoding)."""
    import io

    import imagehash
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", (64, 64))
        return int(str(imagehash.phash(image.convert("L"))), 16)


def hamming_pairs_before(hashes: np.ndarray, threshold: int, query_chunk: int = 65536) -> np.ndarray:
    """The audit's multi-index search before mirror hashes (commit f9f99ea), the baseline: two binary
    searches a probe, and every candidate kept until the end."""
    from eic_builder.audit.perceptual import HASH_BITS, _flip_masks, block_count

    n = len(hashes)
    m = block_count(n, threshold)
    radius = threshold // m
    widths = [HASH_BITS // m + (1 if b < HASH_BITS % m else 0) for b in range(m)]
    found, shift = [], HASH_BITS
    for width in widths:
        shift -= width
        keys = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        masks = _flip_masks(width, radius)
        for start in range(0, n, query_chunk):
            q_rows = np.arange(start, min(n, start + query_chunk))
            probes = (keys[q_rows, None] ^ masks[None, :]).reshape(-1)
            lo = np.searchsorted(sorted_keys, probes, "left")
            counts = np.searchsorted(sorted_keys, probes, "right") - lo
            queries = np.repeat(np.repeat(q_rows, len(masks)), counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            matches = order[np.repeat(lo, counts) + offsets]
            keep = queries < matches
            found.append(queries[keep] * n + matches[keep])
    codes = np.unique(np.concatenate(found))
    i, j = codes // n, codes % n
    return i[np.bitwise_count(hashes[i] ^ hashes[j]) <= threshold]


def mirror_cost(rows: int, store_run: bool) -> None:
    """Hashing and searching with mirror hashes against without, in the same run (see the module's doc)."""
    from eic_builder.audit.perceptual import hamming_pairs, phash_pair

    figures: dict[str, float] = {}
    table = []
    if SHARED.exists():
        blobs = [p.read_bytes() for p in sorted((SHARED / "val").glob("*.JPEG"))]
        for name, hash_one in (("imagehash.phash (before)", imagehash_phash), ("phash_pair (hash + mirror)",
                                                                                phash_pair)):
            best = min(_seconds(lambda f=hash_one: [f(b) for b in blobs]) for _ in range(3))
            figures[name] = len(blobs) / best
        base = figures["imagehash.phash (before)"]
        table += [[f"hash the 1,300 real val images, one worker: {name}", f"{rate:,.0f} img/s",
                   f"{base / rate:.2f}x"] for name, rate in figures.items()]
    rng = np.random.default_rng(0)
    direct = rng.integers(0, 2**63, rows, dtype=np.int64).astype(np.uint64)
    mirrored = rng.integers(0, 2**63, rows, dtype=np.int64).astype(np.uint64)
    for k in range(0, 20_000, 2):  # 5,000 near and 5,000 mirrored pairs, 0-6 bits apart
        noise = np.uint64(sum(1 << int(b) for b in rng.choice(64, k % 7, replace=False)))
        direct[k + 1] = (mirrored[k] if k % 4 else direct[k]) ^ noise
    searches = {"before (f9f99ea), direct": lambda: (hamming_pairs_before(direct, 6),),
                "now, direct": lambda: hamming_pairs(direct, 6),
                "now, direct + mirrored": lambda: hamming_pairs(direct, 6, mirrored=mirrored)}
    seconds = {}
    for name, search in searches.items():
        seconds[name] = min(_seconds(search) for _ in range(2))
        found = search()
        figures[f"search {name} s"] = seconds[name]
        table.append([f"multi-index search of {rows:,} random hashes within 6 bits: {name} "
                      f"({len(found[0]):,} pairs)", f"{seconds[name]:.2f} s",
                      f"{seconds[name] / seconds['before (f9f99ea), direct']:.2f}x"])
    print("| step | measured | cost vs before |\n|---|---:|---:|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    if store_run:
        from results import store

        header = ["step", "measured", "cost vs before"]
        path = store(f"audit-mirror-cost-{rows}", machine_line(), figures, header, table)
        print(f"stored {path}")


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--planted", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--search-only", action="store_true",
                        help="only the exact search, on --rows unit vectors of 256 dimensions (EIC scale: 2700000)")
    parser.add_argument("--device", default="cpu", help="--search-only: cpu or cuda")
    parser.add_argument("--mirror-cost", action="store_true",
                        help="only the cost of mirror hashes: hashing and the --rows hash search, with and without")
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--store", action="store_true",
                        help="Keep the search and pHash figures in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.data, args.planted, args.queries)))
        return
    print(machine_line())
    if args.search_only:
        search_only(args.rows, args.planted, args.device)
        return
    if args.mirror_cost:
        mirror_cost(args.rows, args.store)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "features.npy"
        start = time.perf_counter()
        make_features(data, args.rows, args.planted)
        print(f"{args.rows:,} random 4,096-d float16 features, {args.planted:,} planted near-copies "
              f"(made in {time.perf_counter() - start:.0f} s); pairs at cosine >= {THRESHOLD}")
        brute = child("brute", data, args.planted, args.queries)
        print(f"brute-force numpy, 4,096-d     {brute['seconds']:8.1f} s (extrapolated from {brute['queried']:,} query "
              f"rows)  peak {brute['peak_mb']:7,.0f} MB  recall {brute['recall']:.3f}")
        searches = {}
        for stage in ("exact", "ivf"):
            r = searches[stage] = child(stage, data, args.planted, args.queries)
            print(f"whiten 256 + {stage:5s} search     {r['seconds']:8.1f} s (whitening {r['whiten_seconds']:.1f} s)"
                  f"{'':14s}  peak {r['peak_mb']:7,.0f} MB  recall {r['recall']:.3f}  false pairs {r['false_pairs']}"
                  f"  ratio vs brute {brute['seconds'] / r['seconds']:.1f}x")
    rates = bench_phash()
    if args.store:
        from results import store

        rows = [[f"brute-force numpy, 4,096-d (extrapolated from {brute['queried']:,} query rows)",
                 f"{brute['seconds']:.1f}", f"{brute['recall']:.3f}", "", f"{brute['peak_mb'] / 1e3:.1f}", "1.0x"]]
        rows += [[f"whiten to 256 + {'exact block' if stage == 'exact' else 'FAISS IVF'} search",
                  f"{r['seconds']:.1f}", f"{r['recall']:.3f}", str(r["false_pairs"]), f"{r['peak_mb'] / 1e3:.1f}",
                  f"{brute['seconds'] / r['seconds']:.1f}x"] for stage, r in searches.items()]
        rows += [[f"pHash of the 1,300 real val images, {w} worker(s)", "", "", "", "",
                  f"{rate:,.0f} img/s"] for w, rate in rates.items()]
        path = store(f"audit-{args.rows}", machine_line(), {"rows": args.rows, "planted": args.planted,
                                                            "brute": brute, **searches, "phash_img_s": rates},
                     ["step", "seconds", "recall", "false pairs", "peak GB", "vs brute force"], rows)
        print(f"stored {path}")
    if not args.skip_quality:
        bench_quality()


if __name__ == "__main__":
    main()
