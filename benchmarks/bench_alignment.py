"""The audit's pixel check (eic_builder.audit.alignment) on real photos: how far copies and different photos lie apart.

For --originals real ILSVRC val images of ../shared/data (from the --offset-th on, sorted by name): every pair of
two different photos (the hardest unrelated set there is: each photo against every other, not only the features'
neighbours the audit checks), and copies of the first --copies of them under each transformation (those of
``plant-copies`` and harder ones: crops of 50 %, 60 % and of 90 x 70 % of the sides, a crop of a mirror image, a
crop at half size, a crop at JPEG quality 20, brighter with less contrast, grey), each scored against its
original, with

* the detail band (ours: the difference of Gaussian blurs of 1 and 4 pixels), and
* the grey levels themselves (the baseline, the same search: what smooth gradients do to it),

in --workers processes. Prints the lowest score of each kind of copy, the highest unrelated scores, how many
unrelated pairs reach the cut (DEFAULT_MIN_MATCH) and the time per pair.

Usage: python benchmarks/bench_alignment.py [--originals 100] [--offset 0] [--copies 50] [--workers 2] [--side 96]
       [--store]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import combinations
from pathlib import Path

import numpy as np

from eic_builder.audit.alignment import DEFAULT_MIN_MATCH, DETAIL_SIGMAS, THUMB_SIDE, match_score, thumbnail
from eic_builder.hardware import machine_line
from eic_builder.planted_copies import transform_bytes

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ilsvrc2012_val_1300" / "val"
VARIANTS = {"detail (ours)": DETAIL_SIGMAS, "grey levels (baseline)": None}


def _edit(data: bytes, sides: tuple[float, float] = (1.0, 1.0), place: tuple[float, float] = (0.5, 0.5),
          mirror: bool = False, half: bool = False, quality: int = 90, contrast: float = 1.0,
          grey: bool = False) -> bytes:
    """A copy of ``data``: a crop keeping ``sides`` (width, height shares) at ``place``, of the mirror image or
    not, halved or not, with its contrast scaled, in grey or not, saved as JPEG of ``quality``."""
    from PIL import Image, ImageEnhance, ImageOps

    with Image.open(io.BytesIO(data)) as src:
        image = src.convert("RGB")
    image = ImageOps.mirror(image) if mirror else image
    width, height = round(image.width * sides[0]), round(image.height * sides[1])
    left, top = round((image.width - width) * place[0]), round((image.height - height) * place[1])
    image = image.crop((left, top, left + width, top + height))
    if half:
        image = image.resize((max(1, width // 2), max(1, height // 2)))
    if contrast != 1.0:
        image = ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(1.3)).enhance(contrast)
    if grey:
        image = ImageOps.grayscale(image).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def copies_of(data: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    """Every kind of copy of one encoded photo (crops at places drawn from ``rng``)."""
    place = tuple(rng.random(2))
    return {**{t: transform_bytes(data, t, place) for t in ("exact", "reencode", "resize", "crop", "flip")},
            "crop 50 %": _edit(data, (0.5, 0.5), tuple(rng.random(2))),
            "crop 60 %": _edit(data, (0.6, 0.6), tuple(rng.random(2))),
            "crop 90 x 70 %": _edit(data, (0.9, 0.7), tuple(rng.random(2))),
            "crop of mirror": _edit(data, (0.8, 0.8), tuple(rng.random(2)), mirror=True),
            "crop, halved": _edit(data, (0.75, 0.75), tuple(rng.random(2)), half=True),
            "crop 70 %, JPEG 20": _edit(data, (0.7, 0.7), tuple(rng.random(2)), quality=20),
            "brighter, less contrast": _edit(data, contrast=0.7),
            "grey": _edit(data, grey=True)}


def _score(task: tuple[list[tuple[np.ndarray, np.ndarray]], tuple[float, float] | None]) -> list[float]:
    pairs, sigmas = task
    return [match_score(a, b, sigmas=sigmas) for a, b in pairs]


def scores(pairs: list[tuple[np.ndarray, np.ndarray]], sigmas, workers: int) -> tuple[np.ndarray, float]:
    """(scores, seconds) of ``pairs`` in ``workers`` processes."""
    chunks = [(pairs[s:s + 64], sigmas) for s in range(0, len(pairs), 64)]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        out = [s for part in pool.map(_score, chunks) for s in part]
    return np.asarray(out), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--originals", type=int, default=100)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", type=int, default=THUMB_SIDE, help="thumbnail pixels on the long side")
    parser.add_argument("--store", action="store_true")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent")
        return
    print(machine_line())
    photos = sorted(SHARED.glob("*.JPEG"))[args.offset:args.offset + args.originals]
    data = [p.read_bytes() for p in photos]
    thumbs = [thumbnail(d, args.side) for d in data]
    rng = np.random.default_rng(args.seed)
    copy_pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for k in range(min(args.copies, len(data))):
        for kind, blob in copies_of(data[k], rng).items():
            copy_pairs.setdefault(kind, []).append((thumbs[k], thumbnail(blob, args.side)))
    unrelated = [(thumbs[a], thumbs[b]) for a, b in combinations(range(len(thumbs)), 2)]
    header = ["scoring", "lowest copy score", *[f"lowest: {k}" for k in copy_pairs], "highest unrelated",
              "99.9th pct unrelated", f"unrelated >= {DEFAULT_MIN_MATCH}", "ms per pair (one core)"]
    rows, figures = [], {}
    for name, sigmas in VARIANTS.items():
        lowest = {kind: float(scores(pairs, sigmas, args.workers)[0].min()) for kind, pairs in copy_pairs.items()}
        other, seconds = scores(unrelated, sigmas, args.workers)
        ms = 1000 * seconds * args.workers / len(unrelated)
        figures[name] = {"lowest": lowest, "unrelated_top": np.sort(other)[-10:].tolist(), "ms_per_pair": ms}
        rows.append([name, f"{min(lowest.values()):.3f}", *[f"{v:.3f}" for v in lowest.values()],
                     f"{other.max():.3f}", f"{np.quantile(other, 0.999):.3f}",
                     f"{int((other >= DEFAULT_MIN_MATCH).sum()):,} of {len(other):,}", f"{ms:.1f}"])
    print(f"{len(photos)} photos from {args.offset} ({len(unrelated):,} unrelated pairs), copies of the first "
          f"{min(args.copies, len(data))} ({len(copy_pairs)} kinds), seed {args.seed}, {args.workers} workers, "
          f"thumbnails of {args.side} px")
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.store:
        sys.path.insert(0, str(Path(__file__).parent))
        from results import store

        name = "alignment" + (f"-from{args.offset}" if args.offset else "") + \
            (f"-side{args.side}" if args.side != THUMB_SIDE else "")
        path = store(name, machine_line(), {"originals": args.originals, "offset": args.offset, "copies": args.copies,
                                            "seed": args.seed, "workers": args.workers, "side": args.side,
                                            "variants": figures}, header, rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
