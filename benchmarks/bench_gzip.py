"""A ``.tar.gz`` read in place: scanning it against ``gzip -dc``, and reading its members by offset.

Builds (once, cached) ``winter21_whole.tar.gz``-shaped data of at least ``--gib`` GiB: a gzip (level 6) of
a tar of per-synset tars of real JPEGs (the 1,300 ILSVRC val images of ``../shared/data``, repeated under
new names; random-noise JPEGs where the shared data is absent). Then, page cache warm, in one run:

* the floor, single-threaded ``gzip -dc FILE > /dev/null``: what decompressing the file once costs;
* ``eic-build scan FILE`` with ``--workers`` (rapidgzip decoding in parallel, every member parsed,
  header-checked and SHA-1 hashed, the seek index written): its speed-up over the floor (goal >= 1.6x on
  2 cores, more with more);
* a member read by offset through the index (:class:`~eic_builder.image_source.ImageReader`, one process,
  ``--reads`` members at random): median and 95th percentile in ms (goal: median < 20 ms).

Best of ``--repeat`` runs each; prints the machine line.

Usage: python benchmarks/bench_gzip.py [--gib 1.0] [--workers 2] [--reads 200] [--repeat 2] [--cache DIR] [--store]
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("EIC_NO_PROGRESS", "1")

from eic_builder.dataset.manifest import read_manifest, resolve_image_root
from eic_builder.hardware import machine_line
from eic_builder.image_source import ImageReader, image_refs
from eic_builder.scan.scanner import scan

SHARED_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "ilsvrc2012_val_1300" / "val"


def _jpegs() -> list[bytes]:
    if SHARED_VAL.is_dir():
        return [p.read_bytes() for p in sorted(SHARED_VAL.glob("*.JPEG"))]
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(500):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (227, 227, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_archive(folder: Path, gib: float) -> Path:
    """``folder/winter21_whole.tar.gz`` of at least ``gib`` GiB (cached; rebuilt when smaller)."""
    path = folder / "winter21_whole.tar.gz"
    if path.is_file() and path.stat().st_size >= gib * 2**30:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    jpegs = _jpegs()
    tmp = path.with_suffix(".tmp")
    synset = 0
    with gzip.open(tmp, "wb", compresslevel=6) as gz, tarfile.open(fileobj=gz, mode="w|") as outer:
        while tmp.stat().st_size < gib * 2**30:  # compressed bytes written so far (give or take a buffer)
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for k in range(600):
                    data = jpegs[(synset * 600 + k) % len(jpegs)]
                    info = tarfile.TarInfo(f"n{synset:08d}_{k}.JPEG")
                    info.size = len(data)
                    inner.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(f"winter21_whole/n{synset:08d}.tar")
            info.size = buf.tell()
            buf.seek(0)
            outer.addfile(info, buf)
            synset += 1
    tmp.replace(path)
    return path


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="Least size of the archive, GiB (compressed).")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reads", type=int, default=200, help="Members read by offset, at random.")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic-bench-gzip")
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    archive = make_archive(args.cache, args.gib)
    size = archive.stat().st_size
    os.environ.setdefault("EIC_GZIP_INDEX_DIR", str(args.cache / "index"))
    _warm(archive)
    floor, ours = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        subprocess.run(f"gzip -dc '{archive}' > /dev/null", shell=True, check=True)
        floor.append(time.perf_counter() - t0)
        out = args.cache / "manifest"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        summary = scan(archive, out, workers=args.workers)
        ours.append(time.perf_counter() - t0)
    m = read_manifest(out)
    refs = image_refs(m.images)
    reader = ImageReader(resolve_image_root(m.meta))
    rng = np.random.default_rng(0)
    times = []
    for i in rng.choice(len(refs), min(args.reads, len(refs)), replace=False):
        t0 = time.perf_counter()
        reader.read(refs[int(i)])
        times.append(time.perf_counter() - t0)
    reader.close()
    ms = np.array(times) * 1000
    print(machine_line())
    print(f"archive: {archive} ({size / 2**30:.2f} GiB, {summary.images:,} images); best of {args.repeat}")
    print(f"gzip -dc (floor, 1 thread):        {min(floor):7.1f} s  {size / 2**20 / min(floor):6.0f} MiB/s")
    print(f"eic-build scan ({args.workers} workers):          {min(ours):7.1f} s  {size / 2**20 / min(ours):6.0f} MiB/s"
          f"  = {min(floor) / min(ours):.2f}x gzip -dc (goal >= 1.6x on 2 cores)")
    print(f"member read by offset ({len(ms)} at random): median {np.median(ms):.1f} ms, 95th percentile "
          f"{np.percentile(ms, 95):.1f} ms (goal: median < 20 ms, {np.median(ms) / 20:.0%} of it)")
    index = Path(m.meta["gzip_indexes"][archive.name]["index"])
    print(f"seek index: {index.stat().st_size / 2**20:.1f} MiB ({index.stat().st_size / size:.3%} of the archive)")
    if args.store:
        from results import store

        figures = {"archive_bytes": size, "images": summary.images, "gzip_dc_s": min(floor), "scan_s": min(ours),
                   "workers": args.workers, "read_ms_median": float(np.median(ms)),
                   "read_ms_p95": float(np.percentile(ms, 95)), "index_bytes": index.stat().st_size}
        rows = [["gzip -dc (1 thread, the floor)", f"{min(floor):.1f}", f"{size / 2**20 / min(floor):.0f}", "1.00x"],
                [f"eic-build scan ({args.workers} workers)", f"{min(ours):.1f}", f"{size / 2**20 / min(ours):.0f}",
                 f"{min(floor) / min(ours):.2f}x"],
                [f"member read by offset (median of {len(ms)})", f"{np.median(ms) / 1000:.4f}", "", ""]]
        path = store(f"gzip-{args.gib:g}gib", machine_line(), figures, ["step", "seconds", "MiB/s", "vs gzip -dc"],
                     rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
