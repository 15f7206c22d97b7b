"""``eic-build audit``: duplicates inside and across manifests (train/val leakage), found three ways.

* ``exact``: the same bytes (SHA-1; :mod:`eic_builder.audit.exact`);
* ``perceptual``: pHash within a Hamming distance, of the image or of its mirror image
  (:mod:`eic_builder.audit.perceptual`): re-encoded, resized and mirrored copies;
* ``features``: whitened fc6 features at a cosine (:mod:`eic_builder.audit.neighbours`): crops too, and
  mirrored copies when the features were made with ``features --mirror``; each candidate pair is then
  checked on its pixels (:mod:`eic_builder.audit.alignment`: one image laid on the other, whole or as a
  crop, mirrored or not), since features alone pair unrelated photos of like colour and texture.

Each pair is named with the transformation it most likely is (:mod:`eic_builder.audit.likely`).
Writes ``OUT/pairs.parquet`` (one row per pair and method), ``OUT/groups.parquet`` (connected groups
of all pairs), ``OUT/report.md`` and ``OUT/contact_sheet.png`` (the closest cross-split pairs, side by
side). Everything is checked before anything is written: a bad option, a missing image or features
of another manifest is a one-line error and leaves ``OUT`` as it was.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from eic_builder.audit.alignment import DEFAULT_MIN_MATCH
from eic_builder.audit.catalog import Catalog, load_catalog
from eic_builder.audit.neighbours import DEFAULT_DIMS as WHITEN_DIMS
from eic_builder.audit.perceptual import DEFAULT_THRESHOLD as PHASH_THRESHOLD
from eic_builder.audit.perceptual import Hashes
from eic_builder.audit.result import AuditResult
from eic_builder.choices import AUDIT_METHODS as METHODS
from eic_builder.errors import ManifestError, OptionError, check_choice, choices_text

HELD_OUT_SPLITS = ("val", "test")

__all__ = ["HELD_OUT_SPLITS", "METHODS", "AuditOptions", "AuditResult", "audit_manifests", "parse_methods"]


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """``exact,perceptual`` -> ("exact", "perceptual"); raises :class:`OptionError` naming an unknown one."""
    names = [m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise OptionError(f"`methods` {','.join(names) or text!r}: {', '.join(unknown) or 'none given'} is not a "
                          f"method; choose from {choices_text(METHODS)}")
    return tuple(dict.fromkeys(names))


def _feature_rows(cat: Catalog, features: Mapping[str, str | os.PathLike[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(catalog index of each feature row, (n, 4096) float16 features) for the manifests given features."""
    from eic_builder.dataset.feature_shards import read_image_features

    unknown = sorted(set(features) - set(cat.names))
    if unknown:
        raise OptionError(f"`features` names {', '.join(unknown)}, which is no audited manifest; "
                          f"names: {', '.join(cat.names)}")
    rows, blocks = [], []
    for name, directory in features.items():
        k = cat.names.index(name)
        ids, matrix = read_image_features(directory)
        index = cat.index_of(k)
        missing = [i for i in ids if i not in index]
        if missing:
            raise ManifestError(f"features {directory} are not of manifest {name}: {len(missing):,} of their "
                                f"{len(ids):,} images (e.g. {missing[0]!r}) are not in {cat.directories[k]}")
        rows.append(np.asarray([index[i] for i in ids], dtype=np.int64))
        blocks.append(matrix)
    return np.concatenate(rows), np.concatenate(blocks)


def _pairs_table(cat: Catalog, found: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                 likely: np.ndarray) -> pa.Table:
    from eic_builder.dataset.tables import to_table

    method = [m for m, i, _, _ in found for _ in range(len(i))]
    first = np.concatenate([i for _, i, _, _ in found]) if found else np.zeros(0, dtype=np.int64)
    second = np.concatenate([j for _, _, j, _ in found]) if found else np.zeros(0, dtype=np.int64)
    score = np.concatenate([s for _, _, _, s in found]) if found else np.zeros(0, dtype=np.float32)
    columns: dict[str, object] = {"method": method, "score": score, "likely": likely.tolist()}
    for side, rows in (("a", first), ("b", second)):
        columns[f"manifest_{side}"] = [cat.names[cat.manifest[r]] for r in rows]
        columns[f"split_{side}"] = [cat.split[r] for r in rows]
        columns[f"image_id_{side}"] = [cat.image_id[r] for r in rows]
        columns[f"label_{side}"] = [cat.label[r] for r in rows]
    return to_table("audit_pairs", columns)


def _groups_table(cat: Catalog, first: np.ndarray, second: np.ndarray) -> pa.Table:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from eic_builder.dataset.tables import to_table

    n = len(cat)
    graph = coo_matrix((np.ones(len(first)), (first, second)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    members = np.unique(np.concatenate([first, second])) if len(first) else np.zeros(0, dtype=np.int64)
    # groups numbered from 0 in the order of their first member
    labels = component[members]
    _, first_seen, inverse, sizes = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    rank = np.argsort(np.argsort(first_seen))
    group = rank[inverse]
    order = np.lexsort((members, group))
    members, group = members[order], group[order]
    return to_table("audit_groups", {
        "group": group.astype(np.int32), "size": sizes[inverse][order].astype(np.int32),
        "manifest": [cat.names[cat.manifest[r]] for r in members], "split": [cat.split[r] for r in members],
        "image_id": [cat.image_id[r] for r in members], "label": [cat.label[r] for r in members]})


def leak_counts(pairs: pa.Table) -> dict[tuple[str, str], int]:
    """Images of each split with a pair in a held-out split (``val``, ``test``) other than their own."""
    found: dict[tuple[str, str], set[tuple[str, str]]] = {}
    cols = pairs.select(["manifest_a", "split_a", "image_id_a", "manifest_b", "split_b", "image_id_b"]).to_pydict()
    for ma, sa, ia, mb, sb, ib in zip(*cols.values()):
        if sa == sb:
            continue
        if sb in HELD_OUT_SPLITS:
            found.setdefault((sa, sb), set()).add((ma, ia))
        if sa in HELD_OUT_SPLITS:
            found.setdefault((sb, sa), set()).add((mb, ib))
    return {key: len(images) for key, images in sorted(found.items())}


def _likely(cat: Catalog, first: np.ndarray, second: np.ndarray, hashes: Hashes | None, threshold: int,
            workers: int) -> np.ndarray:
    """The likely transformation of each pair; the evidence the methods run did not gather (SHA-1s, pHashes)
    is gathered for the images of pairs only."""
    from eic_builder.audit import exact, perceptual
    from eic_builder.audit.likely import likely_transforms

    rows = np.unique(np.concatenate([first, second]))
    if len(rows):
        exact.fill_sha1(cat, workers, rows)
        if hashes is None:
            hashes = perceptual.compute_hashes(cat, workers, rows)
    return likely_transforms(first, second, cat.sha1, cat.sizes, hashes, threshold)


def _likely_counts(methods: list[str], likely: np.ndarray) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for (method, kind), n in Counter(zip(methods, likely.tolist())).items():
        counts.setdefault(method, {})[kind] = n
    return counts


_KIND_KEYS = ("weights", "layer", "on", "preprocessing", "mirror", "regions")  # what makes features comparable


def _feature_kinds(features: Mapping[str, str | os.PathLike[str]]) -> dict[str, dict]:
    """Each manifest's features settings (from its first shard) that decide whether they can be compared;
    raises :class:`OptionError` when two manifests' differ (their cosines would mean nothing)."""
    from eic_builder.dataset.feature_shards import feature_shards
    from eic_builder.dataset.tables import read_metadata

    kinds = {name: {k: read_metadata(feature_shards(directory)[0]).get(k) for k in _KIND_KEYS}
             for name, directory in features.items()}
    (first, kind), *others = kinds.items()
    for name, other in others:
        differ = [k for k in _KIND_KEYS if other[k] != kind[k]]
        if differ:
            raise OptionError(f"features of {first} and {name} were made differently ({differ[0]}: "
                              f"{kind[differ[0]]!r} against {other[differ[0]]!r}); make them with the same "
                              "`eic-build features` options")
    return kinds


@dataclass(frozen=True)
class AuditOptions:
    """The knobs of ``audit``.

    ``features`` maps a manifest's name (its split) to its whole-image fc6 features (``features --on
    image``); ``methods`` defaults to exact and perceptual, plus features when features are given;
    ``phash_threshold``: the most differing bits (of 64) of a perceptual pair; ``min_cosine`` and
    ``whiten_dims``: the features pairs' cosine in the whitened space of that many dimensions (None: the
    cut derived from the data, :func:`~eic_builder.audit.neighbours.derive_cut`); ``align``: check each
    candidate pair of features on its pixels and keep those whose alignment score is at least
    ``min_match`` (:mod:`~eic_builder.audit.alignment`; False: every pair at the cut is kept); ``index``
    (:data:`~eic_builder.audit.neighbours.INDEXES`) and ``device`` (auto, cpu, cuda) run the features search:
    FAISS on the CPU, torch block products on CUDA; ``workers`` hash images (default: the usable cores);
    ``root`` is the image root when the manifests' recorded one moved; ``contact_pairs`` pairs are shown on
    the contact sheet.
    """

    features: Mapping[str, str | os.PathLike[str]] | None = None
    methods: Sequence[str] | None = None
    phash_threshold: int = PHASH_THRESHOLD
    min_cosine: float | None = None
    whiten_dims: int = WHITEN_DIMS
    align: bool = True
    min_match: float = DEFAULT_MIN_MATCH
    index: str = "auto"
    device: str = "auto"
    workers: int | None = None
    root: str | os.PathLike[str] | None = None
    contact_pairs: int = 12

    def resolved_methods(self) -> tuple[str, ...]:
        """``methods``, or its default: exact and perceptual, plus features when features are given."""
        return parse_methods(self.methods or (METHODS if self.features else METHODS[:2]))

    def validate(self) -> None:
        """Refuse options that cannot be run (before any image is read)."""
        from eic_builder.audit.perceptual import HASH_BITS
        from eic_builder.choices import AUDIT_INDEXES

        if "features" in self.resolved_methods() and not self.features:
            raise OptionError("`methods` features needs `features` NAME=FEATDIR (from `eic-build features MANIFEST "
                              "--on image`)")
        if not 0 <= self.phash_threshold < HASH_BITS:
            raise OptionError(f"`phash_threshold`={self.phash_threshold} must be in [0, {HASH_BITS - 1}]")
        if not -1.0 <= self.min_match <= 1.0:
            raise OptionError(f"`min_match`={self.min_match} must be in [-1, 1] (a correlation)")
        check_choice("--index", self.index, AUDIT_INDEXES)


def _feature_pairs(cat: Catalog, feature_rows: np.ndarray, feature_matrix: np.ndarray, options: AuditOptions,
                   device: str, workers: int) -> tuple:
    """(the cosine cut, (candidate pairs, pairs kept) of the pixel check or None, first and second catalog
    indexes (first < second), cosine) of the features pairs: whitened, searched, taken at the cut (derived
    from the data, or ``min_cosine``) and, with ``align``, checked on their pixels."""
    from eic_builder.audit import neighbours

    whitened = neighbours.whiten(feature_matrix, options.whiten_dims)
    cut = neighbours.derive_cut(whitened, device) if options.min_cosine is None else \
        neighbours.CosineCut(options.min_cosine, derived=False)
    # the pixel check looks at candidates from the floor; without it, copies from the cut suffice
    i, j, score = neighbours.cosine_pairs(whitened, cut.floor if options.align else cut.search, options.index,
                                          device)
    taken = (cut.candidates if options.align else cut.keep)(i, j, score, len(whitened))
    i, j, score = i[taken], j[taken], score[taken]
    a, b = feature_rows[i], feature_rows[j]
    first, second = np.minimum(a, b), np.maximum(a, b)
    checked = None
    if options.align:
        from eic_builder.audit.alignment import match_scores

        aligned = match_scores(cat, first, second, workers) >= options.min_match
        checked = (len(first), int(aligned.sum()))
        first, second, score = first[aligned], second[aligned], score[aligned]
    return cut, checked, first, second, score


def _run_meta(cat: Catalog, methods: Sequence[str], options: AuditOptions, result: AuditResult) -> dict[str, Any]:
    """What the audit's tables and report record of the run: its manifests and how they were compared."""
    return {"manifests": dict(zip(cat.names, map(str, cat.directories))),
            "fingerprints": dict(zip(cat.names, cat.fingerprints)), "methods": list(methods),
            "max_hamming": options.phash_threshold,
            "min_cosine": result.cosine_cut.value if result.cosine_cut else options.min_cosine,
            "min_cosine_derived": bool(result.cosine_cut and result.cosine_cut.derived),
            "min_match": options.min_match if options.align else None,
            "whiten": options.whiten_dims, "index": options.index,
            "features": {k: str(Path(v).resolve()) for k, v in (options.features or {}).items()}}


def audit_manifests(manifests: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                    options: AuditOptions | None = None) -> AuditResult:
    """Audit ``manifests`` (see the module's doc) into the folder ``out``, as ``options`` say."""
    from eic_builder.audit import exact, perceptual
    from eic_builder.audit.report import write_contact_sheet, write_report
    from eic_builder.dataset.tables import write_table
    from eic_builder.hardware import usable_cores
    from eic_builder.output_folder import check_out

    options = options or AuditOptions()
    options.validate()
    features = dict(options.features or {})
    methods = options.resolved_methods()
    phash_threshold, device = options.phash_threshold, options.device
    out = check_out(out, {**{f"the manifest {m}": m for m in manifests},
                          **{f"the features {k}": v for k, v in features.items()}})
    workers = options.workers or usable_cores()
    cat = load_catalog(manifests, options.root)
    if len(cat) == 0:
        raise OptionError(f"nothing to audit: {', '.join(map(str, manifests))} hold no image with a file")
    try:
        feature_rows, feature_matrix = _feature_rows(cat, features) if "features" in methods else (None, None)
        if "features" in methods:
            from eic_builder.devices import resolve_device

            device = str(resolve_device(device))
            kinds = _feature_kinds(features)
        for k in sorted(set(cat.manifest.tolist())):
            cat.root_of(k)  # a missing image root fails here, before any work
        result = AuditResult(out, list(cat.names), len(cat), cat.without_file)
        found = []
        if "exact" in methods:
            result.sha1_computed = exact.fill_sha1(cat, workers)
            found.append(("exact", *exact.exact_pairs(cat)))
        hashes = None
        if "perceptual" in methods:
            hashes = perceptual.compute_hashes(cat, workers)
            result.undecodable = int((~hashes.valid).sum())
            found.append(("perceptual", *perceptual.perceptual_pairs(hashes, phash_threshold)))
        if "features" in methods:
            result.cosine_cut, result.aligned, *pair = _feature_pairs(cat, feature_rows, feature_matrix, options,
                                                                      device, workers)
            found.append(("features", *pair))
            result.without_features = len(cat) - len(feature_rows)
            result.mirror_features = {name: bool(kind["mirror"]) for name, kind in kinds.items()}
        result.pairs = {m: len(i) for m, i, _, _ in found}
        all_first = np.concatenate([i for _, i, _, _ in found])
        all_second = np.concatenate([j for _, _, j, _ in found])
        likely = _likely(cat, all_first, all_second, hashes, phash_threshold, workers)
        result.likely = _likely_counts([m for m, i, _, _ in found for _ in range(len(i))], likely)
        pairs = _pairs_table(cat, found, likely)
        groups = _groups_table(cat, all_first, all_second)
        result.n_groups = len(set(groups["group"].to_pylist()))
        result.n_grouped = groups.num_rows
        result.leaks = leak_counts(pairs)
        meta = _run_meta(cat, methods, options, result)
        result.files.append(write_table(pairs, out / "pairs.parquet", "audit_pairs", meta))
        result.files.append(write_table(groups, out / "groups.parquet", "audit_groups", meta))
        result.files.append(write_contact_sheet(out / "contact_sheet.png", cat, found, options.contact_pairs))
        result.files.append(write_report(out / "report.md", result, pairs, groups, meta))
    finally:
        cat.close()  # the archives hashing and the contact sheet read
    return result
