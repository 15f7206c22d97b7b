"""``features`` on the same images held three ways: a plain tar, timm's webdataset shards, a Parquet table.

The 1,300 real ILSVRC val JPEGs of ``../shared/data`` (random-noise JPEGs where it is absent), repeated to
``--images``, are written (once, cached) as a plain tar of JPEGs, as webdataset shards (``.jpg`` + ``.json``)
and as a ``datasets`` Parquet file with an Image column (row groups of 100), each scanned in place. Then
``eic-build features`` runs on each manifest, a fresh process timed whole (page cache warm; random
weights, small crops so that reading and decoding weigh as much as they can against the network).

Prints images/s of each source and its time over the plain tar's (the issue's goal: within 10 %), best of
``--repeat``, and the machine line.

Usage: python benchmarks/bench_features_sources.py [--images 2600] [--resize 64] [--crop 56] [--repeat 2]
       [--cache DIR] [--store]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from bench_wds_scan import _jpegs, timed

from eic_builder.hardware import machine_line


def make_sources(folder: Path, n: int) -> dict[str, Path]:
    """``folder/{tar,wds,parquet}`` holding the same ``n`` images (cached by count)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from eic_builder.dataset.schemas import HF_IMAGE_TYPE

    sources = {name: folder / name for name in ("tar", "wds", "parquet")}
    stamp = folder / "images.txt"
    if stamp.is_file() and stamp.read_text() == str(n):
        return sources
    shutil.rmtree(folder, ignore_errors=True)
    for path in sources.values():
        path.mkdir(parents=True)
    jpegs = _jpegs()
    images = [(f"n01440764_{k}", jpegs[k % len(jpegs)][0]) for k in range(n)]
    with tarfile.open(sources["tar"] / "images.tar", "w") as plain, \
            tarfile.open(sources["wds"] / "imagenet22k-train-0000.tar", "w") as shard:
        for key, data in images:
            meta = json.dumps({"class_name": "n01440764"}).encode()
            for tf, members in ((plain, [(f"{key}.JPEG", data)]), (shard, [(f"{key}.jpg", data),
                                                                             (f"{key}.json", meta)])):
                for name, blob in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(blob)
                    tf.addfile(info, io.BytesIO(blob))
    table = pa.table({"image": pa.array([{"bytes": d, "path": f"{k}.JPEG"} for k, d in images], HF_IMAGE_TYPE)})
    pq.write_table(table, sources["parquet"] / "train-00000-of-00001.parquet", row_group_size=100)
    stamp.write_text(str(n))
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2600)
    parser.add_argument("--resize", type=int, default=64)
    parser.add_argument("--crop", type=int, default=56)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic-bench-feature-sources")
    parser.add_argument("--store", action="store_true")
    args = parser.parse_args()
    print(machine_line())
    eic = [sys.executable, "-m", "eic_builder.cli", "--no-progress"]
    seconds: dict[str, float] = {}
    for name, folder in make_sources(args.cache / "sources", args.images).items():
        manifest = args.cache / f"m_{name}"
        shutil.rmtree(manifest, ignore_errors=True)
        timed([*eic, "scan", str(folder), "--out", str(manifest), "--split", "train", "--no-wordnet-check"])
        for _ in range(args.repeat):
            out = args.cache / f"f_{name}"
            shutil.rmtree(out, ignore_errors=True)
            took, _ = timed([*eic, "features", str(manifest), "--out", str(out), "--weights", "random", "--resize",
                             str(args.resize), "--crop", str(args.crop), "--device", "cpu", "--dtype", "float32"])
            seconds[name] = min(seconds.get(name, float("inf")), took)
    header = ["images held as", "seconds", "images/s", "time / plain tar"]
    rows = [[name, f"{s:.1f}", f"{args.images / s:,.0f}", f"{s / seconds['tar']:.3f}"] for name, s in seconds.items()]
    print(f"features of {args.images:,} images (random weights, resize {args.resize}, crop {args.crop}), each a "
          f"fresh process, best of {args.repeat}")
    print("| " + " | ".join(header) + " |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.store:
        sys.path.insert(0, str(Path(__file__).parent))
        from results import store

        path = store("features-sources", machine_line(), {"images": args.images, "seconds": seconds,
                                                            "resize": args.resize, "crop": args.crop}, header, rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
