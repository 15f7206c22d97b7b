"""Archives against folders: the same images as a folder tree and as per-synset tars in one outer tar.

Generates (once, cached) N JPEGs in ``--classes`` synsets, written both as
``tree/train/<wnid>/<wnid>_<n>.JPEG`` and as ``fall11_whole.tar`` (a tar of
``<wnid>.tar``), warms the page cache, then measures in one run:

* scan, images/s: the folder (headers only), the folder with ``--hash`` (every
  byte read and hashed, as in archives), and the archive (listed into units,
  every byte read once and hashed);
* the archive scan's MB/s against two limits of this machine measured in the same
  run: a plain sequential read of the archive, and a sequential read + SHA-1;
* bytes read per image by each scan (``/proc/self/io``, one worker);
* reading images for ``features``/training: :class:`~eic_builder.image_source.ImageReader`
  by offset in the archive against loose files, images/s.

Best of ``--repeat`` runs each. Prints the CPU model and torch's CPU capability.

Usage: python benchmarks/bench_archive.py [--images 20000] [--classes 100] [--workers 2] [--repeat 3] [--store]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("EIC_NO_PROGRESS", "1")

import eic_builder.scan.archives as archives
from eic_builder.dataset.manifest import read_manifest
from eic_builder.hardware import machine_line
from eic_builder.image_source import ImageReader, image_refs
from eic_builder.scan.scanner import scan


def make_data(root: Path, n_images: int, n_classes: int) -> None:
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    variants = []
    for _ in range(50):  # smooth pictures, so sizes are like photos' (tens of KB), not like noise's
        w, h = (int(v) for v in rng.integers(250, 500, size=2))
        noise = Image.fromarray(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h))
        buf = io.BytesIO()
        noise.filter(ImageFilter.GaussianBlur(2)).save(buf, "JPEG", quality=90)
        variants.append(buf.getvalue())
    per_class = (n_images + n_classes - 1) // n_classes
    with tarfile.open(root / "fall11_whole.tar", "w", format=tarfile.USTAR_FORMAT) as outer:
        done = 0
        for c in range(n_classes):
            wnid = f"n{1440764 + c:08d}"
            folder = root / "tree" / "train" / wnid
            folder.mkdir(parents=True, exist_ok=True)
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w", format=tarfile.USTAR_FORMAT) as tf:
                for i in range(min(per_class, n_images - done)):
                    data = variants[(c * per_class + i) % len(variants)]
                    name = f"{wnid}_{i}.JPEG"
                    (folder / name).write_bytes(data)
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
            done += per_class
            info = tarfile.TarInfo(f"{wnid}.tar")
            info.size = inner.tell()
            inner.seek(0)
            outer.addfile(info, inner)


def read_all(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass
    return time.perf_counter() - start


def read_and_hash(path: Path) -> float:
    start = time.perf_counter()
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return time.perf_counter() - start


def rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def best(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic_bench_archive")
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    data = args.cache / f"n{args.images}-c{args.classes}"
    if not (data / "fall11_whole.tar").is_file():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        make_data(data, args.images, args.classes)
    archive = data / "fall11_whole.tar"
    size_mb = archive.stat().st_size / 1e6
    out = Path(tempfile.mkdtemp(prefix="eic_bench_archive_"))
    print(machine_line())
    print(f"data: {args.images:,} JPEGs in {args.classes} synsets, {size_mb:,.0f} MB "
          f"({archive.stat().st_size / args.images / 1e3:.1f} kB per image); page cache warm")

    def timed_scan(sources, name: str, workers: int, **kw) -> float:
        def run() -> float:
            shutil.rmtree(out / name, ignore_errors=True)
            start = time.perf_counter()
            scan(sources, out / name, workers=workers, **kw)
            return time.perf_counter() - start
        return best(run, args.repeat)

    read_all(archive)
    for path in (data / "tree").rglob("*.JPEG"):  # warm the loose files too
        path.read_bytes()
    # the outer tar is listed into one unit per synset tar, as a 1.3 TB fall11_whole.tar is
    archives.WHOLE_ARCHIVE_BYTES = min(archives.WHOLE_ARCHIVE_BYTES, archive.stat().st_size // 4)
    t_folder = timed_scan(data / "tree", "folder", args.workers)
    t_folder_hash = timed_scan(data / "tree", "folder_hash", args.workers, hash_files=True)
    t_archive = timed_scan(archive, "archive", args.workers)
    t_read = best(lambda: read_all(archive), args.repeat)
    t_hash = best(lambda: read_and_hash(archive), args.repeat)
    n = args.images
    print(f"scan, {args.workers} workers (best of {args.repeat}):")
    print(f"  folder, headers only      {n / t_folder:>10,.0f} img/s")
    print(f"  folder, --hash            {n / t_folder_hash:>10,.0f} img/s")
    print(f"  archive (read + hash)     {n / t_archive:>10,.0f} img/s  = {n / t_archive / (n / t_folder):.2f}x the "
          f"folder scan, {n / t_archive / (n / t_folder_hash):.2f}x the folder with --hash")
    print(f"  archive MB/s              {size_mb / t_archive:>10,.0f}  = {t_read / t_archive:.0%} of a plain "
          f"sequential read ({size_mb / t_read:,.0f} MB/s), {t_hash / t_archive:.0%} of one core's read + SHA-1 "
          f"({size_mb / t_hash:,.0f} MB/s)")
    kb_per_image = {}
    for name, sources in (("folder", data / "tree"), ("archive", archive)):
        before = rchar()
        scan(sources, out / f"bytes_{name}", workers=1)
        kb_per_image[name] = (rchar() - before) / n / 1e3
        print(f"  bytes read per image, {name:<8} {kb_per_image[name]:>8.1f} kB (one worker, manifest "
              "files included)")

    folder_m, archive_m = read_manifest(out / "folder"), read_manifest(out / "archive")
    folder_refs, archive_refs = image_refs(folder_m.images), image_refs(archive_m.images)

    def read_refs(root: Path, refs) -> float:
        reader = ImageReader(root)
        start = time.perf_counter()
        for ref in refs:
            reader.read(ref)
        took = time.perf_counter() - start
        reader.close()
        return took

    t_loose = best(lambda: read_refs(data / "tree", folder_refs), args.repeat)
    t_offset = best(lambda: read_refs(data, archive_refs), args.repeat)
    print("reading images for features/training (one process, best of "
          f"{args.repeat}):")
    print(f"  loose files               {n / t_loose:>10,.0f} img/s")
    print(f"  archive members by offset {n / t_offset:>10,.0f} img/s  = {t_loose / t_offset:.2f}x loose files")
    shutil.rmtree(out, ignore_errors=True)
    if args.store:
        from results import store

        rows = [["scan a folder, headers only", f"{n / t_folder:,.0f}", "1.00x", f"{kb_per_image['folder']:.1f} kB"],
                ["scan a folder, --hash (every byte read and hashed)", f"{n / t_folder_hash:,.0f}",
                 f"{t_folder / t_folder_hash:.2f}x", ""],
                ["scan the archive (every byte read once and hashed)", f"{n / t_archive:,.0f}",
                 f"{t_folder / t_archive:.2f}x", f"{kb_per_image['archive']:.1f} kB"],
                ["read images by offset in the archive (features, training)", f"{n / t_offset:,.0f}",
                 f"{t_folder / t_offset:.2f}x", ""],
                ["read loose image files", f"{n / t_loose:,.0f}", f"{t_folder / t_loose:.2f}x", ""],
                ["limit: plain sequential read of the archive", f"{n / t_read:,.0f}", f"{t_folder / t_read:.2f}x", ""],
                ["limit: one core's read + SHA-1", f"{n / t_hash:,.0f}", f"{t_folder / t_hash:.2f}x", ""]]
        figures = {"images": n, "classes": args.classes, "workers": args.workers, "archive_mb": size_mb,
                   "folder_s": t_folder, "folder_hash_s": t_folder_hash, "archive_s": t_archive, "read_s": t_read,
                   "read_hash_s": t_hash, "loose_read_s": t_loose, "offset_read_s": t_offset,
                   "kb_per_image": kb_per_image}
        path = store(f"archive-{n}", machine_line(), figures,
                     ["step", "img/s", "vs folder scan", "bytes read per image"], rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
