"""audit against imagededup (the library most users reach for), on the same planted copies, in one run.

For each seed: copy --originals real ILSVRC val images of ../shared/data (from the --offset-th on, sorted by
name) into a folder, plant --per-transform copies per transformation of them (``eic-build plant-copies``: exact
bytes, re-encoded, resized, cropped to 80 % of each side at a random place, mirrored), then find the copies

* with our audit, as a user runs it (each step a fresh ``eic-build`` process, timed whole):
  ``scan`` both folders, then ``audit --methods exact,perceptual`` (pHash direct and mirrored); and
  ``features --weights random --resize 128 --crop 112 --mirror`` of both plus ``audit`` with features;
* with imagededup's hashes (PHash, AHash, DHash, WHash; their default threshold, 10 bits), one fresh
  process each, timed whole: ``encode_images`` of both folders and ``find_duplicates``. Its CNN method
  needs MobileNet weights from the internet: reported as skipped where they cannot be had.

Scores (eic_builder.planted_copies.score_planted): recall per transformation over all seeds, and
precision (a pair is true when it joins a copy and its original; any other pair counts as false).

Usage: python benchmarks/bench_audit_peers.py [--originals 400] [--offset 0] [--per-transform 10] [--seeds 0,1,2]
       [--store]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from eic_builder.hardware import machine_line

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ilsvrc2012_val_1300" / "val"
EIC = [sys.executable, "-m", "eic_builder.cli", "--no-progress"]
PEER_HASHES = ("PHash", "AHash", "DHash", "WHash")
FEATURES = "--weights random --resize 224 --crop 224 --mirror --regions"

# one imagededup method in a fresh process: encode both folders, find duplicates, print the pairs as JSON
PEER = """
import json, sys
from pathlib import Path
from imagededup import methods
originals, planted, name = sys.argv[1:4]
method = getattr(methods, name)(verbose=False)
encodings = {{**method.encode_images(image_dir=originals), **method.encode_images(image_dir=planted, recursive=True)}}
found = method.find_duplicates(encoding_map=encodings, {threshold})
pairs = sorted({{tuple(sorted((Path(a).stem, Path(b).stem))) for a, dups in found.items() for b in dups}})
print(json.dumps(pairs))
"""


OPTIONS: dict[str, list[str]] = {"features": FEATURES.split(), "audit": []}  # as --features, --audit-args say


def timed(command: list[str]) -> tuple[float, str]:
    """(seconds, stdout) of a fresh process; its stderr is shown when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:6])}... failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def peer_pairs(name: str, originals: Path, planted: Path) -> tuple[float, pa.Table | None, str]:
    """(seconds, pairs table, note) of imagededup's ``name`` on both folders."""
    threshold = "max_distance_threshold=10" if name in PEER_HASHES else "min_similarity_threshold=0.9"
    code = PEER.format(threshold=threshold)
    try:
        seconds, out = timed([sys.executable, "-c", code, str(originals), str(planted), name])
    except RuntimeError as exc:
        return 0.0, None, str(exc).splitlines()[-1][:160]
    pairs = json.loads(out.strip().splitlines()[-1])
    table = pa.table({"method": [name] * len(pairs), "image_id_a": [a for a, _ in pairs],
                      "image_id_b": [b for _, b in pairs]})
    return seconds, table, ""


def our_pairs(d: Path, originals: Path, planted: Path, features: bool) -> tuple[float, pa.Table]:
    """(seconds, pairs) of our audit on both folders, each step a fresh process, scans included."""
    seconds = 0.0
    for folder, manifest, split in ((originals, d / "val", "val"), (planted / "images", d / "train", "train")):
        if not manifest.exists():
            seconds += timed([*EIC, "scan", str(folder), "--out", str(manifest), "--split", split])[0]
    audit = [*EIC, "audit", str(d / "val"), str(d / "train"), "--device", "cpu"]
    if features:
        for manifest in ("val", "train"):
            seconds += timed([*EIC, "features", str(d / manifest), "--out", str(d / f"f{manifest}"),
                              *OPTIONS["features"], "--device", "cpu", "--dtype", "float32"])[0]
        audit += ["--features", f"val={d / 'fval'}", "--features", f"train={d / 'ftrain'}", *OPTIONS["audit"],
                  "--methods", "exact,perceptual,features", "--out", str(d / "audit-features")]
    else:
        audit += ["--methods", "exact,perceptual", "--out", str(d / "audit-hashes")]
    seconds += timed(audit)[0]
    return seconds, pq.read_table(Path(audit[audit.index("--out") + 1]) / "pairs.parquet")


def union_of_methods(pairs: pa.Table) -> pa.Table:
    """The distinct pairs of every method, as one method ``all`` (a pair two methods found counts once)."""
    cols = pairs.select(["image_id_a", "image_id_b"]).to_pydict()
    found = sorted({tuple(sorted(p)) for p in zip(cols["image_id_a"], cols["image_id_b"])})
    return pa.table({"method": ["all"] * len(found), "image_id_a": [a for a, _ in found],
                     "image_id_b": [b for _, b in found]})


def _run_seed(d: Path, seed: int, originals: Path, args: argparse.Namespace, runs: dict[str, dict],
              notes: dict[str, str]) -> None:
    """One seed: plant copies of the originals, then score ours (without and with features) and each peer;
    adds each tool/method's score and seconds to ``runs`` (a peer that cannot run: a line in ``notes``)."""
    from eic_builder.planted_copies import read_planted, score_planted

    d.mkdir()
    timed([*EIC, "scan", str(originals), "--out", str(d / "val"), "--split", "val"])
    timed([*EIC, "plant-copies", str(d / "val"), "--out", str(d / "planted"), "--per-transform",
           str(args.per_transform), "--seed", str(seed)])
    copies = read_planted(d / "planted" / "planted.csv")
    shutil.rmtree(d / "val")  # scanned again inside the timed run
    for features in (False, True):
        seconds, pairs = our_pairs(d, originals, d / "planted", features)
        label = "ours, exact + pHash" if not features else "ours, exact + pHash + features"
        scores = {"all": score_planted(union_of_methods(pairs), copies).get("all"), **score_planted(pairs, copies)}
        for method, score in scores.items():
            if score is None or (features and method != "features" and method != "all"):
                continue  # exact and pHash alone: once, from the run without features
            run = runs.setdefault(f"{label}: {method}", {"seconds": [], "scores": []})
            run["scores"].append(score)
            run["seconds"].append(seconds if method == "all" else None)
    for name in filter(None, args.peers.split(",")):
        seconds, pairs, note = peer_pairs(name, originals, d / "planted" / "images")
        if pairs is None:
            notes[name] = note
            continue
        score = score_planted(pairs, copies).get(name) or {"pairs": 0.0, "precision": 0.0}
        run = runs.setdefault(f"imagededup {name}", {"seconds": [], "scores": []})
        run["scores"].append(score)
        run["seconds"].append(seconds)


def _row(key: str, run: dict, transforms: tuple[str, ...]) -> list[str]:
    """A table row of one tool/method over the seeds: pairs (mean), precision (over all pairs), recall of each
    transformation (mean), seconds (mean)."""
    scores = run["scores"]
    total = sum(s["pairs"] for s in scores)
    true = sum(s["pairs"] * s["precision"] for s in scores)
    recalls = [sum(s.get(t, 0.0) for s in scores) / len(scores) for t in transforms]
    seconds = [s for s in run["seconds"] if s is not None]
    return [key, f"{total / len(scores):.1f}", f"{true / total if total else 0:.3f}",
            *[f"{r:.2f}" for r in recalls], f"{sum(seconds) / len(seconds):.1f}" if seconds else ""]


def main() -> None:
    from eic_builder.planted_copies import TRANSFORMS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--originals", type=int, default=400)
    parser.add_argument("--offset", type=int, default=0, help="skip this many images first (photos not tuned on)")
    parser.add_argument("--per-transform", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--peers", default="PHash,AHash,DHash,WHash,CNN")
    parser.add_argument("--features", default=FEATURES, help="options of `eic-build features`")
    parser.add_argument("--audit-args", default="", help="more options of `eic-build audit`")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--store", action="store_true")
    parser.add_argument("--name", default=None, help="the stored run's name [default: audit-peers, -fromOFFSET]")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent")
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    OPTIONS["features"] = args.features.split()
    OPTIONS["audit"] = args.audit_args.split()
    runs: dict[str, dict] = {}  # tool/method -> {"seconds": [...], "scores": [...]}
    notes: dict[str, str] = {}
    print(machine_line())
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        originals = Path(tmp) / "originals" / "val"
        originals.mkdir(parents=True)
        for path in sorted(SHARED.glob("*.JPEG"))[args.offset:args.offset + args.originals]:
            shutil.copy(path, originals / path.name)
        for seed in seeds:
            _run_seed(Path(tmp) / f"seed{seed}", seed, originals, args, runs, notes)
            print(f"seed {seed} done", flush=True)
    header = ["tool: method", "pairs", "precision", *[f"recall {t}" for t in TRANSFORMS], "seconds (whole process)"]
    rows = [_row(key, run, TRANSFORMS) for key, run in runs.items()]
    print(f"{args.originals} originals (from image {args.offset}) + {args.per_transform} copies per transformation, "
          f"seeds {args.seeds}; "
          "recall and pairs: mean over seeds; precision: over all pairs of all seeds; seconds: mean per seed")
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for name, note in notes.items():
        print(f"imagededup {name}: skipped ({note})")
    if args.store:
        sys.path.insert(0, str(Path(__file__).parent))
        from results import store

        name = args.name or "audit-peers" + (f"-from{args.offset}" if args.offset else "")
        path = store(name, machine_line(), {"originals": args.originals, "offset": args.offset,
                                                      "per_transform": args.per_transform,
                                                      "seeds": seeds, "runs": runs, "skipped": notes}, header, rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
