"""``eic-build assemble`` at EIC's real size: wall time and peak memory, against merely reading the inputs.

Builds (once, cached) three manifests of synthetic rows in the project's schema, at ``--scale`` times
the real sizes: ILSVRC-2012 train (1,281,167 images in 1,000 classes), val (50,000) and an ImageNet-21K
pool (14,197,122 images in the 21,841 Fall 2011 synsets), every image with its SHA-1 (as archive scans
record it), boxes for about one image in nine, and 2,000 pool images carrying the bytes of ILSVRC val
images (as ImageNet-21K does). Then, each in a fresh process, it measures

* the floor: reading the three manifests (``read_manifest``), nothing else;
* ``assemble`` of the three into EIC train/val, with the real class list.

and prints wall seconds, peak resident memory (the process's ru_maxrss) and the ratio of the two,
with the machine. Goal (issue 20) on the 2-core machine at --scale 1.0: at most 2 minutes and 6 GiB.

Usage: python benchmarks/bench_assemble.py [--scale 1.0] [--cache DIR] [--store]
"""

from __future__ import annotations

import argparse
import binascii
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eic_builder.dataset.manifest import write_manifest
from eic_builder.dataset.tables import empty_table, to_table
from eic_builder.hardware import machine_line
from eic_builder.reference_lists import data_manifests_dir

REAL = {"train": 1_281_167, "val": 50_000, "pool": 14_197_122}


def _hex_sha1(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` random 40-digit hex strings, built as one buffer (no Python string per row)."""
    digits = binascii.hexlify(rng.bytes(20 * n))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(40), n, [None, pa.py_buffer(digits)]).cast(
        pa.binary()).cast(pa.string())


def _numbered(prefix: pa.Array, numbers: np.ndarray, sep: str = "_") -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), sep)


def _manifest(out: Path, split: str, wnids: np.ndarray, per_class: np.ndarray, archive: str, rng, root: Path,
              val_ids: bool = False, planted: pa.Array | None = None) -> pa.Array:
    """Write one manifest; returns its sha1 column."""
    label_index = np.repeat(np.arange(len(wnids)), per_class)
    n = len(label_index)
    labels = pa.array(wnids[label_index])
    if val_ids:
        image_ids = _numbered(pa.array(["ILSVRC2012_val"] * n), np.arange(1, n + 1))
    else:
        starts = np.concatenate([[0], np.cumsum(per_class)[:-1]])
        image_ids = _numbered(labels, np.arange(n) - np.repeat(starts, per_class) + 1)
    sha1 = _hex_sha1(rng, n)
    if planted is not None:  # pool images with the bytes of val images
        at = rng.choice(n, len(planted), replace=False)
        values = sha1.to_numpy(zero_copy_only=False)
        values[at] = planted.to_numpy(zero_copy_only=False)
        sha1 = pa.array(values, pa.string())
    sizes = rng.integers(20_000, 200_000, n)
    boxed = rng.random(n) < 1 / 9
    n_boxes = np.where(boxed, rng.integers(1, 4, n), 0).astype(np.int32)
    width = rng.integers(200, 800, n).astype(np.int32)
    height = rng.integers(200, 800, n).astype(np.int32)
    images = {"image_id": image_ids, "split": pa.array([split] * n), "label": labels, "wnid": labels,
              "path": pc.binary_join_element_wise(pa.array([archive] * n), image_ids, "/"),
              "annotation": pa.nulls(n, pa.string()), "width": width, "height": height,
              "has_image": np.ones(n, bool), "n_boxes": n_boxes, "archive": pa.array([archive] * n),
              "offset": np.cumsum(sizes + 512) - sizes, "size": sizes, "sha1": sha1,
              "ann_width": pa.nulls(n, pa.int32()), "ann_height": pa.nulls(n, pa.int32())}
    owner = np.repeat(np.arange(n), n_boxes)
    m = len(owner)
    x1 = rng.uniform(0, 0.5, m) * width[owner]
    y1 = rng.uniform(0, 0.5, m) * height[owner]
    x2 = x1 + rng.uniform(0.02, 0.5, m) * width[owner]
    y2 = y1 + rng.uniform(0.02, 0.5, m) * height[owner]
    box_labels = labels.take(pa.array(owner))
    boxes = {"image_id": image_ids.take(pa.array(owner)),
             "box_index": (np.arange(m) - np.repeat(np.cumsum(n_boxes) - n_boxes, n_boxes)).astype(np.int32),
             "label": box_labels, "wnid": box_labels, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
             "area_ratio": ((x2 - x1) * (y2 - y1) / (width[owner] * height[owner])).astype(np.float32),
             "is_small": np.zeros(m, bool), "is_twisted": np.zeros(m, bool)}
    write_manifest(out, to_table("images", images), to_table("boxes", boxes), empty_table("rejects"),
                   {"source_root": str(root)})
    return sha1


def make_inputs(folder: Path, scale: float, seed: int = 0) -> dict[str, Path]:
    """The three input manifests at ``scale`` times the real sizes (cached in ``folder``)."""
    done = folder / "inputs.json"
    if done.is_file() and json.loads(done.read_text()) == {"scale": scale, "seed": seed}:
        return {name: folder / name for name in REAL}
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    root = folder / "root"
    root.mkdir(parents=True, exist_ok=True)
    ilsvrc = np.array(pq.read_table(data_manifests_dir() / "ilsvrc1k_classes.parquet")["wnid"].to_pylist())
    fall11 = np.array((data_manifests_dir() / "imagenet21k_synsets.txt").read_text().split())

    def spread(total: int, classes: int, low: float, high: float) -> np.ndarray:
        weights = rng.uniform(low, high, classes)
        counts = np.floor(weights / weights.sum() * total).astype(np.int64)
        counts[: total - counts.sum()] += 1
        return counts

    n = {k: max(1, round(v * scale)) for k, v in REAL.items()}
    _manifest(folder / "train", "train", ilsvrc, spread(n["train"], len(ilsvrc), 732, 1300),
              "ILSVRC2012_img_train.tar", rng, root)
    val_sha1 = _manifest(folder / "val", "val", ilsvrc, spread(n["val"], len(ilsvrc), 1, 1),
                         "ILSVRC2012_img_val.tar", rng, root, val_ids=True)
    planted = val_sha1.take(pa.array(rng.choice(len(val_sha1), min(2000, len(val_sha1)), replace=False)))
    _manifest(folder / "pool", "winter21_whole", fall11, spread(n["pool"], len(fall11), 1, 2),
              "winter21_whole.tar.gz", rng, root, planted=planted)
    done.write_text(json.dumps({"scale": scale, "seed": seed}))
    return {name: folder / name for name in REAL}


_MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    t0 = time.perf_counter()
    inputs = [Path(p) for p in sys.argv[2:5]]
    if sys.argv[1] == "read":
        from eic_builder.dataset.manifest import read_manifest
        rows = sum(read_manifest(p).images.num_rows for p in inputs)
    else:
        from eic_builder.assemble import AssembleOptions, assemble
        from eic_builder.reference_lists import data_manifests_dir
        r = assemble(inputs, data_manifests_dir() / "eic_classes.parquet", sys.argv[5],
                     AssembleOptions(max_train_per_class=1300, min_train_per_class=1, short="keep"))
        rows = r.images["train"] + r.images["val"]
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows,
                      "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
""")


def measure(what: str, inputs: dict[str, Path], out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEASURE, what, *(str(inputs[k]) for k in REAL), str(out)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="Share of EIC's real input sizes.")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic-bench-assemble",
                        help="Folder for the input manifests (kept between runs).")
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    t0 = time.perf_counter()
    inputs = make_inputs(args.cache, args.scale)
    print(f"inputs ready in {time.perf_counter() - t0:.0f} s: " + ", ".join(
        f"{k} {max(1, round(v * args.scale)):,}" for k, v in REAL.items()) + f" images (scale {args.scale})")
    with tempfile.TemporaryDirectory(dir=args.cache) as out:
        floor = measure("read", inputs, Path(out) / "unused")
        run = measure("assemble", inputs, Path(out) / "eic")
    print(machine_line())
    print(f"read the inputs (floor): {floor['seconds']:8.1f} s, peak {floor['peak_gib']:.2f} GiB, "
          f"{floor['rows']:,} images")
    print(f"assemble:                {run['seconds']:8.1f} s, peak {run['peak_gib']:.2f} GiB, "
          f"{run['rows']:,} images out")
    print(f"assemble / floor: {run['seconds'] / floor['seconds']:.1f}x the time, "
          f"{run['peak_gib'] / floor['peak_gib']:.1f}x the memory; goal at scale 1.0: <= 120 s "
          f"({run['seconds'] / 120:.0%} of it) and <= 6 GiB ({run['peak_gib'] / 6:.0%} of it)")
    if args.store:
        from results import store

        rows = [["read the inputs (floor)", f"{floor['rows']:,} in", f"{floor['seconds']:.1f}",
                 f"{floor['peak_gib']:.2f}"],
                ["assemble", f"{run['rows']:,} out", f"{run['seconds']:.1f}", f"{run['peak_gib']:.2f}"]]
        path = store(f"assemble-scale{args.scale:g}", machine_line(), {"scale": args.scale, "floor": floor,
                                                                       "assemble": run},
                     ["step", "images", "seconds", "peak GiB"], rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
