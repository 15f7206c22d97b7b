"""``eic-build expand-classes``: cold (cache built from nltk) and warm runs, against a naive
all-nltk implementation of the same rules measured in the same run.

* cold: a fresh ``EIC_CACHE_DIR``; the command lays WordNet out and builds the noun index;
* warm: the same command again, the cache present;
* naive: nltk synset objects throughout: ``closure()`` over hypernyms of each ILSVRC
  class, over hyponyms of each, then the pool filtered in Python (rules 1-5 only,
  so it does less than the command). Its qualified count must equal ours.

Whole commands are timed as subprocesses (Python start and imports included).
Usage: python benchmarks/bench_expand.py [--store]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eic_builder.hardware import machine_line
from eic_builder.reference_lists import MIN500_FILE, POOL_FILES, data_manifests_dir, ilsvrc_classes


def run_command(cache: Path, out: Path) -> float:
    env = dict(os.environ, EIC_CACHE_DIR=str(cache), EIC_NO_PROGRESS="1")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "eic_builder.cli", "-q", "expand-classes", "--out", str(out)],
                   check=True, env=env, capture_output=True)
    return time.perf_counter() - t


def naive(cache: Path) -> tuple[int, float]:
    os.environ["EIC_CACHE_DIR"] = str(cache)  # reuse the laid-out WordNet folder
    from eic_builder.wordnet import find_wordnet, open_reader

    t = time.perf_counter()
    wn = open_reader(find_wordnet())

    def synset(w: str):
        return wn.synset_from_pos_and_offset("n", int(w[1:]))

    base = ilsvrc_classes()["wnid"].to_pylist()
    up, down = set(), set()
    for w in base:
        s = synset(w)
        up |= {a.offset() for a in s.closure(lambda x: x.hypernyms() + x.instance_hypernyms())}
        down |= {d.offset() for d in s.closure(lambda x: x.hyponyms() + x.instance_hyponyms())}
    pool = (data_manifests_dir() / POOL_FILES["bbox"]).read_text().split()
    min500 = set((data_manifests_dir() / MIN500_FILE).read_text().split())
    base_set = set(base)
    qualified = [w for w in pool if w not in base_set and synset(w).offset() not in up
                 and synset(w).offset() not in down and w in min500]
    return len(qualified), time.perf_counter() - t


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "classes.parquet"
        cold = run_command(cache, out)
        warm = min(run_command(cache, out) for _ in range(3))
        n_naive, naive_s = naive(cache)
    print(machine_line())
    print(f"cold (lay out WordNet + build the noun index from nltk + expand): {cold:6.2f} s")
    print(f"warm (cached index, best of 3):                                  {warm:6.2f} s")
    print(f"naive all-nltk rules 1-5 ({n_naive} qualified; ours 1688):         {naive_s:6.2f} s")
    print(f"ratio naive / warm: {naive_s / warm:.1f}x; naive / cold: {naive_s / cold:.1f}x")
    if args.store:
        from results import store

        rows = [[f"naive: nltk for every rule ({n_naive:,} qualified)", f"{naive_s:.2f}", "1.0x"],
                ["expand-classes, cold (lay out WordNet, build the noun index)", f"{cold:.2f}",
                 f"{naive_s / cold:.1f}x"],
                ["expand-classes, warm (cached index, best of 3)", f"{warm:.2f}", f"{naive_s / warm:.1f}x"]]
        path = store("expand", machine_line(), {"cold_s": cold, "warm_s": warm, "naive_s": naive_s,
                                                "naive_qualified": n_naive}, ["method", "seconds", "vs naive"], rows)
        print(f"stored {path}")


if __name__ == "__main__":
    main()
