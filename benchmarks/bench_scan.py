"""Scan throughput: ``eic-build scan`` against a naive single-process loop, in the same run.

Generates (once, cached) an ILSVRC-layout tree of N annotated images (real JPEG
bytes of varied sizes, ILSVRC XMLs), warms the page cache, then times

* naive: one process, ``xml.etree.ElementTree.parse`` + ``PIL.Image.open(...).size`` per image;
* eic:   :func:`eic_builder.scan.scanner.scan` with ``--workers`` processes.

Each is run ``--repeat`` times, alternating, and the best time counts (as timeit does).

The machine's limit, in the same run: a plain loop that only reads the bytes a scan needs (each
XML whole and the first 64 KiB of each image, one process) times the worker count: no parsing.

Usage: python benchmarks/bench_scan.py [--images 20000] [--workers 2] [--repeat 3] [--cache DIR] [--store]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("EIC_NO_PROGRESS", "1")

from eic_builder.hardware import machine_line
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import DEMO_WNIDS, SyntheticBox, ilsvrc_xml


def make_tree(root: Path, n_images: int, per_class: int = 100) -> None:
    """Every image file is a hard link to one of 40 JPEGs: a scan reads headers (the first bytes of each
    file), so what is measured is the same, and a tree of 200,000 images fits the page cache."""
    rng = np.random.default_rng(0)
    variants = []
    sources = root.with_name(root.name + "-variants")  # beside the tree, not in it: no split names them
    sources.mkdir(parents=True, exist_ok=True)
    for k in range(40):
        w, h = (int(v) for v in rng.integers(200, 500, size=2))
        path = sources / f"v{k}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, "JPEG", quality=75)
        variants.append((w, h, path))
    n_classes = (n_images + per_class - 1) // per_class
    done = 0
    for c in range(n_classes):
        wnid = f"n{int(DEMO_WNIDS[0][1:]) + c:08d}"
        img_dir, ann_dir = root / "train" / wnid, root / "Annotations" / "train" / wnid
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_class, n_images - done)):
            w, h, source = variants[(c * per_class + i) % len(variants)]
            stem = f"{wnid}_{i}"
            os.link(source, img_dir / f"{stem}.JPEG")
            boxes = [SyntheticBox(wnid, 5, 5, w // 2, h // 2), SyntheticBox(wnid, w // 3, h // 3, w - 1, h - 1)]
            (ann_dir / f"{stem}.xml").write_text(ilsvrc_xml(wnid, stem, w, h, boxes))
        done += per_class


COORDS = ("xmin", "ymin", "xmax", "ymax")


def naive(root: Path) -> tuple[int, int]:
    """The baseline loop: for each XML, parse it and open its image with PIL for the size."""
    n_images = n_boxes = 0
    for dirpath, _, files in sorted(os.walk(root / "Annotations")):
        wnid = Path(dirpath).name
        for name in sorted(files):
            tree = ET.parse(os.path.join(dirpath, name))
            boxes = [(o.findtext("name"), *(float(o.find("bndbox").findtext(k)) for k in COORDS))
                     for o in tree.getroot().iter("object")]
            with Image.open(root / "train" / wnid / (name[:-4] + ".JPEG")) as im:
                im.size  # noqa: B018 - the header read is the point
            n_images += 1
            n_boxes += len(boxes)
    return n_images, n_boxes


def plain_reads(root: Path) -> int:
    """The I/O a scan cannot avoid, and nothing else: read every XML and each image's first 64 KiB."""
    n = 0
    for dirpath, _, files in sorted(os.walk(root / "Annotations")):
        wnid = Path(dirpath).name
        for name in sorted(files):
            with open(os.path.join(dirpath, name), "rb") as f:
                f.read()
            with open(root / "train" / wnid / (name[:-4] + ".JPEG"), "rb") as f:
                f.read(1 << 16)
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs of each")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic-bench-scan")
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    root = args.cache / f"tree-{args.images}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        make_tree(root, args.images)
        (root / ".complete").write_text("ok")
        print(f"generated {args.images} images + XMLs in {time.perf_counter() - t:.1f} s under {root}")
    naive(root)  # warm the page cache
    naive_s = eic_s = read_s = float("inf")
    out = Path(tempfile.mkdtemp(prefix="eic-bench-out-"))
    try:
        for _ in range(args.repeat):  # best of N, alternating, so both see the same machine state
            t = time.perf_counter()
            n_naive, b_naive = naive(root)
            naive_s = min(naive_s, time.perf_counter() - t)
            t = time.perf_counter()
            summary = scan(root, out / "m", split="train", workers=args.workers)
            eic_s = min(eic_s, time.perf_counter() - t)
            t = time.perf_counter()
            plain_reads(root)
            read_s = min(read_s, time.perf_counter() - t)
    finally:
        shutil.rmtree(out)
    assert (summary.images, summary.boxes) == (n_naive, b_naive), (summary, n_naive, b_naive)
    print(machine_line())
    print(f"naive loop (1 process, ElementTree + PIL.Image.open): {n_naive / naive_s:9,.0f} images/s ({naive_s:.2f} s)")
    print(f"eic-build scan ({args.workers} workers):                 {summary.images / eic_s:9,.0f} images/s "
          f"({eic_s:.2f} s)")
    print(f"ratio eic / naive: {naive_s / eic_s:.2f}x")
    limit = n_naive / read_s * args.workers
    print(f"limit: plain reads of the same bytes {n_naive / read_s:,.0f} files/s x {args.workers} workers = "
          f"{limit:,.0f} images/s; eic reaches {summary.images / eic_s / limit:.0%} of it")
    if args.store:
        from results import store

        rows = [["naive loop (1 process, ElementTree + PIL)", f"{n_naive / naive_s:,.0f}", "1.00x"],
                [f"eic-build scan ({args.workers} workers)", f"{summary.images / eic_s:,.0f}",
                 f"{naive_s / eic_s:.2f}x"],
                [f"limit: plain reads x {args.workers} workers", f"{limit:,.0f}",
                 f"{naive_s / (n_naive / limit):.2f}x"]]
        path = store(f"scan-{args.images}", machine_line(), {"images": args.images, "naive_s": naive_s,
                                                            "eic_s": eic_s, "read_s": read_s, "workers": args.workers},
                     ["method", "images/s", "vs naive"], rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
