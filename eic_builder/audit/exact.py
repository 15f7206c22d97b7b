"""Exact duplicates: images with the same bytes (SHA-1).

The scan records the SHA-1 of archive members (and of loose files with ``--hash``); the rest are
hashed here, in threads (``hashlib`` releases the GIL on large inputs, so two cores hash twice as fast).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from eic_builder.audit.catalog import Catalog
from eic_builder.progress import progress

CLIQUE_LIMIT = 64  # a larger group of identical files is paired star-wise, to its first member


def fill_sha1(cat: Catalog, workers: int = 2, rows: np.ndarray | None = None) -> int:
    """Hash the images (of ``rows``, default all) whose SHA-1 the manifest lacks; returns how many were hashed."""
    wanted = range(len(cat)) if rows is None else sorted(set(np.asarray(rows).tolist()))
    missing = [i for i in wanted if cat.sha1[i] is None]
    cat.open_readers(missing)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        hashed = pool.map(lambda i: hashlib.sha1(cat.read_bytes(i)).hexdigest(), missing)
        for i, h in zip(missing, progress(hashed, total=len(missing), desc="sha1", unit="img")):
            cat.sha1[i] = h
    return len(missing)


def exact_pairs(cat: Catalog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(i, j, score)`` (``i < j``, score 1.0) of images with the same SHA-1.

    A group of ``k`` identical files gives its ``k (k - 1) / 2`` pairs up to :data:`CLIQUE_LIMIT`
    members; a larger one (the web's "photo unavailable" placeholder, say) pairs each member with its
    first, which keeps the group whole in ``groups.parquet`` without millions of pairs.
    """
    members: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(cat.sha1):
        if h is not None:
            members[h].append(i)
    first, second = [], []
    for group in members.values():
        if len(group) < 2:
            continue
        if len(group) <= CLIQUE_LIMIT:
            a, b = np.triu_indices(len(group), 1)
            first += [group[x] for x in a]
            second += [group[y] for y in b]
        else:
            first += [group[0]] * (len(group) - 1)
            second += group[1:]
    i, j = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    return i, j, np.ones(len(i), dtype=np.float32)
