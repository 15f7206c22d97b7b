"""``eic-build expand-classes``: grow the 1,000 ILSVRC classes to the EIC class list with WordNet 3.0.

The rules (ours; the paper says only "the extended categories are chosen by
the WordNet" and gives the total, 2,686). A candidate becomes a class when it

1. is in the pool (``bbox``: the 3,627 ImageNet synsets with bounding boxes;
   ``21k``: the 21,841 fall-2011 synsets; or a file),
2. is not an ILSVRC class,
3. is not an ancestor (hypernym, transitively) of any ILSVRC class,
4. is not a descendant (hyponym, transitively) of any ILSVRC class,
5. has at least ``min_images`` images (real counts from a scan, else the
   ImageNet-21K-P list of classes with >= 500 images shipped by timm),
6. with ``exclusive``: is not an ancestor of another candidate (the more
   specific one is kept).

Every wnid of the base list and the pool must be a WordNet 3.0 noun (else an
error names them). Rules 3 and 4 make sure no EIC label contradicts an ILSVRC label. When more
candidates qualify than the target needs, the choice keeps lexicographer files
(WordNet's top-level categories) balanced: every lexname gets the same quota,
water-filled (a lexname with fewer candidates than the quota gives its share
to the others); the remainder goes one each to the largest lexnames. Inside a
lexname candidates rank by image count (when real), then hop distance to the
nearest ILSVRC class (closer first), then depth (more specific first), then
wnid. Same inputs, same bytes out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from eic_builder.choices import POOLS
from eic_builder.dataset.manifest import read_manifest
from eic_builder.dataset.schemas import EIC_CLASSES_SCHEMA
from eic_builder.errors import OptionError, WordNetError
from eic_builder.reference_lists import (
    MIN500_FILE,
    POOL_FILES,
    data_manifests_dir,
    ilsvrc_classes,
    read_wnid_list,
)
from eic_builder.wordnet import WORDNET_VERSION, WordNetIndex

DEFAULT_TARGET = 2686
DEFAULT_MIN_IMAGES = 500



@dataclass(frozen=True)
class ExpandOptions:
    """Every option of ``expand-classes`` (the resolved values go into the output's metadata)."""

    pool: str = "bbox"  # bbox | 21k | a file path
    target: int = DEFAULT_TARGET
    min_images: int = DEFAULT_MIN_IMAGES
    image_counts: str | None = None  # a manifest directory with real counts
    exclusive: bool = False
    base: str | None = None  # a file of base wnids; default the committed ILSVRC-1k


@dataclass
class RuleStep:
    """One rule and how many candidates were left after it."""

    rule: str
    left: int


@dataclass
class Expansion:
    """The result: the class table, the rule counts, and what the report and ``--explain`` need."""

    table: pa.Table
    steps: list[RuleStep]
    overlaps: list[tuple[str, str]]  # (ancestor, descendant) among new classes (without exclusive)
    lexname_before: Counter[str]
    lexname_after: Counter[str]
    image_count_source: str
    metadata: dict
    verdicts: dict[str, str] = field(default_factory=dict)  # wnid -> why it was cut (after rule 1)


def _pool_wnids(pool: str) -> tuple[list[str], str]:
    if pool in POOLS:
        path = data_manifests_dir() / POOL_FILES[pool]
        return read_wnid_list(path), pool
    path = Path(pool)
    if not path.is_file():
        raise OptionError(f"`pool` {pool!r} is neither one of {', '.join(POOLS)} nor an existing file")
    return read_wnid_list(path), f"file {path.name}"


def _image_counts(options: ExpandOptions) -> tuple[dict[str, int] | None, frozenset[str] | None, str]:
    """(real counts, set known to reach min_images, source text)."""
    if options.min_images == 0:
        return None, None, "none (--min-images 0)"
    if options.image_counts:
        counts_manifest = read_manifest(options.image_counts)
        labels = counts_manifest.images["wnid"].drop_null().to_pylist()
        return dict(Counter(labels)), None, f"scan of {Path(options.image_counts).name} ({len(labels):,} images)"
    if options.min_images > 500:
        raise OptionError(f"`min_images` {options.min_images} needs real counts: give `image_counts` DIR "
                          "(the shipped list only says which classes have >= 500 images)")
    known = frozenset(read_wnid_list(data_manifests_dir() / MIN500_FILE))
    return None, known, f"timm {MIN500_FILE} (ImageNet-21K-P classes with >= 500 images)"


def _check_known(index: WordNetIndex, wnids: list[str], what: str) -> None:
    unknown = [w for w in wnids if w not in index]
    if unknown:
        raise WordNetError(f"{len(unknown)} wnid(s) of the {what} are not WordNet {WORDNET_VERSION} nouns, "
                           f"e.g. {', '.join(unknown[:5])}")


def balanced_choice(by_lexname: dict[str, list[str]], need: int) -> list[str]:
    """Pick ``need`` items keeping the lexnames balanced (water-filled equal quotas).

    ``by_lexname`` lists candidates per lexname, best first. The quota q is the
    largest with sum(min(n_l, q)) <= need; the remainder goes one each to the
    lexnames with most candidates left (ties by name).
    """
    sizes = {name: len(items) for name, items in by_lexname.items()}
    if need >= sum(sizes.values()):
        return [w for items in by_lexname.values() for w in items]
    lo, hi = 0, max(sizes.values())
    while lo < hi:  # largest q with sum(min(n, q)) <= need
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in sizes.values()) <= need:
            lo = mid
        else:
            hi = mid - 1
    take = {name: min(n, lo) for name, n in sizes.items()}
    rest = need - sum(take.values())
    for name in sorted((n for n in sizes if sizes[n] > take[n]), key=lambda n: (-sizes[n], n))[:rest]:
        take[name] += 1
    return [w for name, items in by_lexname.items() for w in items[: take[name]]]


def base_classes(options: ExpandOptions) -> list[str]:
    """The base classes: ``--base FILE`` (which must name at least one wnid), else the 1,000 ILSVRC ones."""
    if not options.base:
        return ilsvrc_classes()["wnid"].to_pylist()
    return read_wnid_list(options.base)  # refuses an empty list, naming the file


class _Funnel:
    """The rule steps and each refused candidate's verdict, as the rules are applied one after another."""

    def __init__(self, pool: list[str]) -> None:
        self.steps = [RuleStep("in pool", len(pool))]
        self.verdicts: dict[str, str] = {}

    def keep(self, cands: list[str], rule: str, ok: Callable[[str], bool], why: Callable[[str], str]) -> list[str]:
        """The candidates ``ok`` accepts; the others get the verdict ``why(w)``; the step is counted."""
        kept = []
        for w in cands:
            if ok(w):
                kept.append(w)
            else:
                self.verdicts[w] = why(w)
        self.steps.append(RuleStep(rule, len(kept)))
        return kept


def _checked_base(index: WordNetIndex, options: ExpandOptions) -> list[str]:
    """The base classes, after checking the options against them."""
    if options.min_images < 0:
        raise OptionError(f"`min_images` {options.min_images} must be >= 0")
    base = base_classes(options)
    _check_known(index, base, "base list")
    if len(set(base)) != len(base):
        raise OptionError("the base list holds duplicate wnids")
    if options.target < len(base):
        raise OptionError(f"`target` {options.target} is below the {len(base):,} base classes; "
                          f"it must be at least {len(base):,}")
    return base


def _qualified(index: WordNetIndex, options: ExpandOptions, base: list[str], pool: list[str],
               counts: dict[str, int] | None, known500: frozenset[str] | None, funnel: _Funnel) -> list[str]:
    """The pool's candidates that pass every rule (not a base class, nor an ancestor or descendant of one,
    enough images, and with ``exclusive`` no ancestor of another candidate)."""
    base_set, ancestors, descendants = set(base), index.ancestors(base), index.descendants(base)
    c = funnel.keep(pool, "not an ILSVRC class", lambda w: w not in base_set, lambda w: "is a base (ILSVRC) class")
    c = funnel.keep(c, "not an ancestor of an ILSVRC class", lambda w: w not in ancestors,
                    lambda w: "is an ancestor (hypernym) of ILSVRC classes")
    c = funnel.keep(c, "not a descendant of an ILSVRC class", lambda w: w not in descendants,
                    lambda w: "is a descendant (hyponym) of an ILSVRC class")
    if counts is not None:
        c = funnel.keep(c, f">= {options.min_images} images", lambda w: counts.get(w, 0) >= options.min_images,
                        lambda w: f"has {counts.get(w, 0)} images, fewer than {options.min_images}")
    elif known500 is not None:
        c = funnel.keep(c, f">= {options.min_images} images", lambda w: w in known500,
                        lambda w: "not among the ImageNet-21K-P classes with >= 500 images")
    if options.exclusive:
        among = index.ancestors(c) & set(c)
        c = funnel.keep(c, "not an ancestor of another candidate (--exclusive)", lambda w: w not in among,
                        lambda w: "is an ancestor of another candidate (--exclusive keeps the more specific)")
    return c


def _too_few(options: ExpandOptions, qualified: int, need: int, n_base: int) -> OptionError:
    hints = []
    if options.pool == "bbox":
        hints.append("`pool` 21k")
    if options.min_images:
        hints.append("a lower `min_images` (0 turns the rule off)")
    if options.exclusive:
        hints.append("leaving out `exclusive`")
    return OptionError(f"only {qualified:,} candidates qualify but `target` {options.target:,} needs {need:,} "
                       f"beyond the {n_base:,} base classes; {' or '.join(hints) or 'a lower `target`'} "
                       "would admit more")


def _class_table(index: WordNetIndex, base: list[str], chosen: list[str], counts: dict[str, int] | None,
                 count_source: str, nearest: np.ndarray, hops: np.ndarray) -> pa.Table:
    """The EIC class table: the base classes (``ilsvrc1k``) then the chosen ones (``expanded``)."""
    rows = [(w, "ilsvrc1k") for w in sorted(base)] + [(w, "expanded") for w in chosen]
    idx = [index.position(w) for w, _ in rows]
    return pa.table(
        {
            "wnid": [w for w, _ in rows],
            "lemma": [index.lemmas[i] for i in idx],
            "gloss": [index.glosses[i] for i in idx],
            "source": [s for _, s in rows],
            "lexname": [index.lexnames[i] for i in idx],
            "depth": pa.array(index.depths[idx].astype(np.int16), pa.int16()),
            "nearest_ilsvrc": [index.wnids[nearest[i]] if nearest[i] >= 0 else "" for i in idx],
            "ilsvrc_hops": pa.array(hops[idx].astype(np.int16), pa.int16()),
            "image_count": pa.array([counts.get(w, 0) for w, _ in rows] if counts is not None else [None] * len(rows),
                                    pa.int64()),
            "image_count_source": [count_source if s == "expanded" else "ILSVRC-2012 (base class)" for _, s in rows],
        },
        schema=EIC_CLASSES_SCHEMA,
    )


def expand_classes(index: WordNetIndex, options: ExpandOptions = ExpandOptions()) -> Expansion:
    """Apply the rules of this module; raises :class:`OptionError` when too few candidates qualify."""
    base = _checked_base(index, options)
    pool, pool_name = _pool_wnids(options.pool)
    pool = sorted(set(pool))
    counts, known500, count_source = _image_counts(options)
    funnel = _Funnel(pool)
    _check_known(index, pool, f"pool ({pool_name})")
    c = _qualified(index, options, base, pool, counts, known500, funnel)
    need = options.target - len(base)
    if len(c) < need:
        raise _too_few(options, len(c), need, len(base))
    nearest, hops = index.nearest(base)
    pos = {w: index.position(w) for w in [*base, *c]}

    def rank(w: str) -> tuple:
        i = pos[w]
        h = int(hops[i]) if hops[i] >= 0 else 1 << 30
        return (-(counts or {}).get(w, 0), h, -int(index.depths[i]), w)

    by_lexname: dict[str, list[str]] = {}
    for w in sorted(c, key=rank):
        by_lexname.setdefault(index.lexnames[pos[w]], []).append(w)
    chosen = sorted(balanced_choice(dict(sorted(by_lexname.items())), need))
    chosen_set = set(chosen)
    for w in c:
        if w not in chosen_set:
            funnel.verdicts[w] = f"qualified but not chosen: {index.lexnames[pos[w]]} was over its balanced quota"
    funnel.steps.append(RuleStep("chosen (balanced over lexnames)", len(chosen)))
    overlaps: list[tuple[str, str]] = []
    if not options.exclusive:
        new_anc = index.ancestors(chosen) & chosen_set
        overlaps = sorted((a, d) for d in chosen for a in index.ancestors([d]) if a in new_anc)
    table = _class_table(index, base, chosen, counts, count_source, nearest, hops)
    meta = {
        "wordnet_version": WORDNET_VERSION,
        "rules": [f"{s.rule}: {s.left}" for s in funnel.steps],
        "options": {"pool": pool_name, "target": options.target, "min_images": options.min_images,
                    "exclusive": options.exclusive, "base": Path(options.base).name if options.base else
                    "data_manifests/ilsvrc1k_classes.parquet"},
        "image_count_source": count_source,
        "ranking": "balanced water-filled quota per lexname; inside one: image count desc, ILSVRC hops asc, "
                   "depth desc, wnid",
    }
    return Expansion(
        table=table, steps=funnel.steps, overlaps=overlaps,
        lexname_before=Counter(index.lexnames[pos[w]] for w in base),
        lexname_after=Counter(table["lexname"].to_pylist()),
        image_count_source=count_source, metadata=meta, verdicts=funnel.verdicts,
    )


def explain(index: WordNetIndex, wnid: str, options: ExpandOptions = ExpandOptions()) -> list[str]:
    """Why ``wnid`` is or is not an EIC class, rule by rule (lines of text)."""
    i = index.position(wnid)
    lines = [f"{wnid} {index.lemmas[i]!r} ({index.lexnames[i]}, depth {index.depths[i]}): {index.glosses[i]}"]
    base = base_classes(options)
    pool, pool_name = _pool_wnids(options.pool)
    in_base = wnid in set(base)
    lines.append(f"  in pool ({pool_name}): {'yes' if wnid in set(pool) else 'no'}")
    lines.append(f"  WordNet {WORDNET_VERSION} noun: yes")
    lines.append(f"  ILSVRC class: {'yes' if in_base else 'no'}")
    below = sorted(set(base) & index.descendants([wnid]))
    above = sorted(set(base) & index.ancestors([wnid]))
    lines.append(f"  ancestor of ILSVRC classes: {len(below)}" + (f" (e.g. {', '.join(below[:5])})" if below else ""))
    lines.append(f"  descendant of ILSVRC classes: {len(above)}" + (f" ({', '.join(above[:5])})" if above else ""))
    result = expand_classes(index, options)
    chosen = dict(zip(result.table["wnid"].to_pylist(), result.table["source"].to_pylist()))
    if wnid in chosen:
        lines.append(f"  verdict: an EIC class ({chosen[wnid]})")
    else:
        lines.append(f"  verdict: not an EIC class: {result.verdicts.get(wnid, 'not in the pool')}")
    return lines
