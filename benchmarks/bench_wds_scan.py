"""Scanning timm's webdataset shards: ``eic-build scan`` against the ``webdataset`` library doing the same work.

Builds (once, cached) ``--samples`` samples in timm's layout, ``imagenet22k-train-NNNN.tar`` shards of
``--per-shard`` samples, each ``<key>.jpg`` (the 1,300 real ILSVRC val JPEGs of ``../shared/data``, repeated
under new keys; random-noise JPEGs where the shared data is absent), ``<key>.cls`` and ``<key>.json``
(``label``, ``class_name``, ``width``, ``height``). Then, page cache warm, each a fresh process timed whole:

* ours: ``eic-build scan SHARDS --workers W`` (samples grouped by key, json parsed, image header read,
  bytes hashed, the manifest written);
* the peer: ``webdataset.WebDataset`` over the same shards doing the same work per sample (json parsed,
  the image's header read with Pillow, its bytes SHA-1 hashed), in one process, and through a torch
  ``DataLoader`` with W workers (the shards split among them).

Prints samples/s of each and the ratio of ours to the faster peer (the issue's goal: >= 1.5x), best of
``--repeat`` runs, and the machine line.

Usage: python benchmarks/bench_wds_scan.py [--samples 200000] [--per-shard 10000] [--workers 2] [--repeat 1]
       [--cache DIR] [--store]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench_gzip import _jpegs as _jpeg_bytes

from eic_builder.hardware import machine_line

PEER = """
import hashlib, io, json, sys
import webdataset as wds
from PIL import Image
urls, workers = sys.argv[1:-1], int(sys.argv[-1])

def work(sample):
    meta = json.loads(sample["json"])
    with Image.open(io.BytesIO(sample["jpg"])) as im:
        size = im.size
    return meta["class_name"], size, hashlib.sha1(sample["jpg"]).hexdigest()

dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(work)
if workers:
    import torch
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    n = sum(1 for _ in loader)
else:
    n = sum(1 for _ in dataset)
print(n)
"""


def _jpegs() -> list[tuple[bytes, int, int]]:
    """(bytes, width, height) of bench_gzip's JPEGs (the shared real ones, else random-noise ones)."""
    from PIL import Image

    out = []
    for data in _jpeg_bytes():
        with Image.open(io.BytesIO(data)) as im:
            out.append((data, *im.size))
    return out


def make_shards(folder: Path, samples: int, per_shard: int) -> list[Path]:
    """The shards of ``samples`` samples under ``folder`` (cached: rebuilt when the count differs)."""
    from eic_builder.reference_lists import ilsvrc_classes

    stamp = folder / "samples.txt"
    shards = sorted(folder.glob("imagenet22k-train-*.tar"))
    if stamp.is_file() and stamp.read_text() == f"{samples} {per_shard}" and shards:
        return shards
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    wnids = ilsvrc_classes()["wnid"].to_pylist()
    jpegs = _jpegs()
    for start in range(0, samples, per_shard):
        with tarfile.open(folder / f"imagenet22k-train-{start // per_shard:04d}.tar", "w") as tf:
            for k in range(start, min(samples, start + per_shard)):
                data, w, h = jpegs[k % len(jpegs)]
                wnid = wnids[k % len(wnids)]
                key = f"{wnid}_{k}"
                meta = json.dumps({"label": k % len(wnids), "class_name": wnid, "width": w, "height": h}).encode()
                for name, blob in ((f"{key}.cls", str(k % len(wnids)).encode()), (f"{key}.jpg", data),
                                   (f"{key}.json", meta)):
                    info = tarfile.TarInfo(name)
                    info.size = len(blob)
                    tf.addfile(info, io.BytesIO(blob))
    stamp.write_text(f"{samples} {per_shard}")
    return sorted(folder.glob("imagenet22k-train-*.tar"))


def timed(command: list[str]) -> tuple[float, str]:
    """(seconds, stdout) of a fresh process, timed whole; raises naming it when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "EIC_NO_PROGRESS": "1"})
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:5])}... failed: {done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--per-shard", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic-bench-wds")
    parser.add_argument("--store", action="store_true")
    args = parser.parse_args()
    print(machine_line())
    shards = make_shards(args.cache / "shards", args.samples, args.per_shard)
    for shard in shards:  # the page cache warm, for every contender alike
        shard.read_bytes()
    out = args.cache / "manifest"
    ours = [sys.executable, "-m", "eic_builder.cli", "--no-progress", "scan", str(args.cache / "shards"), "--out",
            str(out), "--workers", str(args.workers), "--no-wordnet-check"]
    rows: dict[str, float] = {}

    def best(name: str, command: list[str], check) -> None:
        for _ in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            seconds, stdout = timed(command)
            check(stdout)
            rows[name] = min(rows.get(name, float("inf")), seconds)

    def scanned(stdout: str) -> None:
        assert f"-> {args.samples} images" in stdout, stdout

    def iterated(stdout: str) -> None:
        assert int(stdout.strip().splitlines()[-1]) == args.samples, stdout

    best(f"eic-build scan --workers {args.workers}", ours, scanned)
    urls = [str(s) for s in shards]
    best("webdataset, 1 process", [sys.executable, "-c", PEER, *urls, "0"], iterated)
    best(f"webdataset, DataLoader {args.workers} workers", [sys.executable, "-c", PEER, *urls, str(args.workers)],
         iterated)
    ours_s = rows[f"eic-build scan --workers {args.workers}"]
    peer_s = min(s for name, s in rows.items() if name.startswith("webdataset"))
    header = ["contender", "seconds", "samples/s", "its seconds / ours"]
    table = [[name, f"{s:.1f}", f"{args.samples / s:,.0f}", f"{s / ours_s:.2f}x"] for name, s in rows.items()]
    print(f"{args.samples:,} samples in {len(shards)} shards; each a fresh process, best of {args.repeat}")
    print("| " + " | ".join(header) + " |")
    print("|---|---:|---:|---:|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    print(f"ours against the faster peer: {peer_s / ours_s:.2f}x (goal >= 1.5x)")
    if args.store:
        sys.path.insert(0, str(Path(__file__).parent))
        from results import store

        path = store("wds-scan", machine_line(), {"samples": args.samples, "shards": len(shards),
                                                    "workers": args.workers, "seconds": rows,
                                                    "ratio_to_faster_peer": peer_s / ours_s}, header, table)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
