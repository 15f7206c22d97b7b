"""Scoring proposals: the vectorised COCOeval matching of ``baseline.evaluation`` against the per-image,
per-k, per-threshold Python loop it replaced (kept below as the reference), in the same run.

Synthetic ILSVRC-like data: N images (default 50,000) with 1-6 boxes each and 1,000 proposals each
(best first; a tenth of them jittered copies of the boxes, so that matching has work to do). Both
implementations give the same table (checked here); the loop is timed on the first --loop-images
images and extrapolated (its cost is linear in the images).

Usage: python benchmarks/bench_eval.py [--images 50000] [--proposals 1000] [--loop-images 1000] [--store]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torchvision.ops import box_iou

from baseline.evaluation import AREA_RANGES, IOU_THRESHOLDS, MAX_DETS, recall_table
from eic_builder.hardware import machine_line


def _matched_loop(iou: np.ndarray, ignore: np.ndarray, threshold: float) -> int:
    """The previous implementation: COCOeval's greedy loop for one image, one k, one threshold."""
    n_gt = iou.shape[1]
    taken = np.zeros(n_gt, dtype=bool)
    candidates = np.flatnonzero(iou.max(axis=1) >= threshold) if n_gt else []
    for d in candidates:
        best, m = min(threshold, 1 - 1e-10), -1
        for g in range(n_gt):
            if taken[g]:
                continue
            if m > -1 and not ignore[m] and ignore[g]:
                break
            if iou[d, g] < best:
                continue
            best, m = iou[d, g], g
        if m >= 0:
            taken[m] = True
    return int(np.count_nonzero(taken & ~ignore))


def recall_table_loop(gts, proposals, max_dets=MAX_DETS, area="all") -> np.ndarray:
    """The previous ``recall_table``: a Python loop over images, k, thresholds and proposals."""
    lo, hi = AREA_RANGES[area]
    matched = np.zeros((len(IOU_THRESHOLDS), len(max_dets)))
    total = 0
    for image_id, gt in gts.items():
        if len(gt) == 0:
            continue
        gt = gt.double()
        areas = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])).numpy()
        ignore = (areas < lo) | (areas > hi)
        order = np.argsort(ignore, kind="stable")
        gt, ignore = gt[order], ignore[order]
        total += int(np.count_nonzero(~ignore))
        dets = proposals.get(image_id)
        if dets is None or len(dets) == 0:
            continue
        iou_all = box_iou(dets[: max(max_dets)].double(), gt).numpy()
        for j, k in enumerate(max_dets):
            for i, t in enumerate(IOU_THRESHOLDS):
                matched[i, j] += _matched_loop(iou_all[:k], ignore, t)
    return matched / total if total else np.full_like(matched, np.nan)


def make_case(n_images: int, n_props: int, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    gts, props = {}, {}
    for i in range(n_images):
        n = int(rng.integers(1, 7))
        xy = rng.uniform(0, 400, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(8, 250, (n, 2))], 1)
        xy = rng.uniform(0, 450, (n_props, 2))
        det = np.concatenate([xy, xy + rng.uniform(4, 300, (n_props, 2))], 1)
        near = rng.choice(n_props, n_props // 10, replace=False)
        det[near] = gt[rng.integers(0, n, len(near))] + rng.normal(0, 12, (len(near), 4))
        gts[f"im{i}"] = torch.from_numpy(gt).float()
        props[f"im{i}"] = torch.from_numpy(det).float()
    return gts, props


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--proposals", type=int, default=1000)
    parser.add_argument("--loop-images", type=int, default=1000)
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    print(machine_line())
    gts, props = make_case(args.images, args.proposals)
    sub = {k: gts[k] for k in list(gts)[: args.loop_images]}
    start = time.perf_counter()
    old = recall_table_loop(sub, props)
    loop_seconds = (time.perf_counter() - start) * args.images / len(sub)
    new_sub = recall_table(sub, props)
    assert np.allclose(old, new_sub, atol=1e-12, rtol=0), "the two implementations disagree"
    start = time.perf_counter()
    recall_table(gts, props)
    seconds = time.perf_counter() - start
    print(f"{args.images:,} images x {args.proposals:,} proposals, 1-6 boxes each; AR at {list(MAX_DETS)}:")
    print(f"previous loop        {loop_seconds:9.1f} s (extrapolated from {len(sub):,} images)")
    print(f"vectorised matching  {seconds:9.1f} s   ratio {loop_seconds / seconds:.1f}x  "
          f"({args.images / seconds:,.0f} images/s; same table to 1e-12 on the first {len(sub):,})")
    if args.store:
        from results import store

        rows = [[f"previous per-image loop (extrapolated from {len(sub):,} images)", f"{loop_seconds:.1f}", "1.0x"],
                ["vectorised matching (baseline.evaluation)", f"{seconds:.1f}", f"{loop_seconds / seconds:.1f}x"]]
        path = store(f"eval-{args.images}x{args.proposals}", machine_line(),
                     {"images": args.images, "proposals": args.proposals, "loop_images": len(sub),
                      "loop_seconds": loop_seconds, "seconds": seconds},
                     ["scoring", "seconds", "vs the loop"], rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
