"""Feature duplicates: pairs of images whose fc6 features point the same way.

Raw fc6 vectors share a large common component (two unrelated images are at cosine ~0.96 with random
weights), which hides what makes an image itself. The features are therefore centred and
PCA-whitened to ``dims`` dimensions (fitted on the audited images, or a sample of 20,000), then
L2-normalised, as copy-detection descriptors are (SSCD, the ISC 2021 baselines); the cosine of two
such vectors is the score. Whitening to 256 of 4,096 dimensions also makes the search 16x cheaper.

The cut is derived from the data (:func:`derive_cut`) unless given: a fixed cosine cannot serve every
weight, image size and data set (random weights put unrelated photos at 0.6-0.7 where ImageNet weights
put them far lower).

Search, every pair at cosine >= ``threshold``:

* ``exact``: block matrix products in torch, on the CPU or a CUDA device; bfloat16 where the device
  runs it natively (AMX, CUDA), with a float32 rescoring that keeps the answer exact; the default up
  to :data:`EXACT_LIMIT` images (FAISS's exact range search, measured 4x slower here, is not used);
* ``ivf``: FAISS inverted lists (``sqrt(n)`` k-means cells, ``nprobe`` of them searched per query),
  approximate, beyond; ``benchmarks/bench_audit.py`` measures its recall of planted copies.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from eic_builder.choices import AUDIT_INDEXES as INDEXES
from eic_builder.errors import OptionError, check_choice

BF16_MARGIN = 0.02  # > 3 * 2^-8: the most bfloat16 rounding moves a cosine (see _exact_pairs)
EXACT_LIMIT = 300_000
DEFAULT_DIMS = 256
DEFAULT_THRESHOLD = 0.6  # the fixed cut of too few images to derive one from (CUT_MIN_IMAGES)
CUT_FIRST_PAIRS = 0.02  # derive_cut's first step: expected pairs above the cut of second neighbours
CUT_FALSE_PAIRS = 1.0  # expected unrelated pairs above the derived cut, under its fitted tail (derive_cut)
CUT_NEIGHBOURS = 8  # neighbours kept per image to find its nearest non-copy one
CUT_MUTUAL_Z = 2.0  # mutual nearest neighbours count from the median + this many sigmas (derive_cut)
CANDIDATE_NEIGHBOURS = 3  # pairs among either image's nearest this many go to the pixel check (CosineCut.candidates)
CUT_MIN_IMAGES = 20  # fewer: the median and MAD of the neighbour cosines say too little; DEFAULT_THRESHOLD
CUT_SAMPLE = 20_000  # query images whose neighbours fit the cut (all, up to this many)
PCA_SAMPLE = 20_000
BLOCK = 4096  # rows per block when whitening
SIMS_BYTES = {"cpu": 1 << 29, "cuda": 1 << 32}  # one block of similarities: 512 MiB, 4 GiB on a GPU


def whiten(features: np.ndarray, dims: int = DEFAULT_DIMS, seed: int = 0) -> np.ndarray:
    """Centre, PCA-whiten to ``min(dims, n // 4, d)`` dimensions (0: no whitening) and L2-normalise.

    At most a quarter of the images' count: the variances of later components are estimated too low
    from so few images (Marchenko-Pastur), and whitening would blow their noise up; on 450 real
    images fewer dimensions found more planted crops at the same precision (bench_audit_peers.py).

    ``features``: (n, d), any float dtype (float16 shards stay float16: they are converted a block at a
    time); returns (n, dims') float32 unit rows. The components come from a randomized SVD of at most
    :data:`PCA_SAMPLE` rows (scikit-learn), seconds where an exact eigendecomposition of the
    4,096 x 4,096 covariance would take minutes.
    """
    n = len(features)
    if dims < 0:
        raise OptionError(f"`whiten_dims`={dims} must be >= 0 (0: centred raw features)")
    picked = np.arange(n) if n <= PCA_SAMPLE else np.sort(np.random.default_rng(seed).choice(n, PCA_SAMPLE,
                                                                                              replace=False))
    sample = np.asarray(features[picked], dtype=np.float32)
    keep = min(dims, n // 4, features.shape[1])
    if keep >= 1:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=keep, whiten=True, svd_solver="randomized", random_state=seed).fit(sample)
        mean = pca.mean_.astype(np.float32)
        projection = (pca.components_.T / np.sqrt(pca.explained_variance_)).astype(np.float32)
    else:
        mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
        projection = None
    del sample
    out = np.empty((n, keep if projection is not None else features.shape[1]), dtype=np.float32)
    for s in range(0, n, BLOCK):
        block = np.asarray(features[s:s + BLOCK], dtype=np.float32) - mean
        out[s:s + BLOCK] = block @ projection if projection is not None else block
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


@dataclass(frozen=True)
class CosineCut:
    """The features method's cosine cut and where it came from: ``derived`` from the images' nearest
    non-copy neighbours (the ``median`` and robust spread ``sigma`` of their cosines, cut at ``z`` of them
    for ``n`` images), or given (``derived`` False: ``--min-cosine``, or too few images)."""

    value: float
    derived: bool
    n: int = 0
    median: float = float("nan")
    sigma: float = float("nan")
    z: float = float("nan")
    mutual: float | None = None  # mutual nearest neighbours count from this cosine (derived cuts)

    @property
    def search(self) -> float:
        """The lowest cosine a copy by :meth:`keep` may have: the cosine search runs from here (from
        :attr:`floor` for :meth:`candidates`)."""
        return self.value if self.mutual is None else min(self.value, self.mutual)

    def keep(self, first: np.ndarray, second: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
        """Which pairs ``(first[k], second[k], score[k])`` of a search from :attr:`search` among ``n`` images
        are copies: those at the cut, and pairs of mutual nearest neighbours (each the other's best
        partner) at :attr:`mutual` (a crop and its original, whose cosine the cut may miss)."""
        keep = score >= self.value
        if self.mutual is not None and len(score):
            best = np.full(n, -np.inf)
            np.maximum.at(best, first, score)
            np.maximum.at(best, second, score)
            keep |= (score >= self.mutual) & (score >= best[first]) & (score >= best[second])
        return keep

    @property
    def floor(self) -> float:
        """The lowest cosine of a candidate for the pixel check (:meth:`candidates`), and of the search for
        them: where the cut is derived, the median of the nearest non-copy neighbour cosines (a candidate is
        at least as near as half the images' nearest unrelated image is, so at most :attr:`search`); else
        the cut."""
        return self.value if not self.derived else self.median

    def candidates(self, first: np.ndarray, second: np.ndarray, score: np.ndarray, n: int,
                   neighbours: int = CANDIDATE_NEIGHBOURS) -> np.ndarray:
        """Which pairs of a search from :attr:`floor` are worth the pixel check
        (:mod:`eic_builder.audit.alignment`): every pair at the cut, and every pair from :attr:`floor` that is
        among the ``neighbours`` nearest of either image (a crop whose features moved away from its
        original's but stayed among its nearest few)."""
        keep = score >= self.value
        if len(score):
            keep |= (score >= self.floor) & (neighbour_ranks(first, second, score, n) < neighbours)
        return keep

    def describe(self) -> str:
        """One sentence for the report: the cut and how it was set."""
        if not self.derived:
            return f"cosine >= {self.value:.3f}" + (" (fixed: too few images to derive a cut)"
                                                     if self.n and self.n < CUT_MIN_IMAGES else " (given)")
        return (f"cosine >= {self.value:.3f}, derived from the data: the median {self.median:.3f} of the {self.n:,} "
                f"images' nearest non-copy neighbour cosines plus {self.z:.2f} times their robust spread "
                f"{self.sigma:.3f} (1.4826 x MAD), where {CUT_FALSE_PAIRS:g} unrelated pair(s) are expected above "
                f"it; and mutual nearest neighbours from {self.mutual:.3f} (the median plus {CUT_MUTUAL_Z:g} "
                "spreads); `--min-cosine` overrides")


def neighbour_ranks(first: np.ndarray, second: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """For each pair ``(first[k], second[k], score[k])`` of images ``0..n-1``: the better of its two ranks, 0
    where it is either image's best-scoring pair, among the pairs given (int64, shape (pairs,))."""
    ends = np.concatenate([first, second])
    scores = np.concatenate([score, score])
    order = np.lexsort((-scores, ends))
    starts = np.searchsorted(ends[order], np.arange(n))
    rank = np.empty(len(ends), dtype=np.int64)
    rank[order] = np.arange(len(ends)) - starts[ends[order]]
    return np.minimum(rank[:len(first)], rank[len(first):])


def _tail_cut(cosines: np.ndarray, n: int, false_pairs: float) -> tuple[float, float, float, float]:
    """(cut, median, sigma, z): where a normal of the median and robust spread (1.4826 x MAD) of
    ``cosines`` expects ``false_pairs`` of ``n`` draws above."""
    from statistics import NormalDist

    median = float(np.median(cosines))
    sigma = max(1.4826 * float(np.median(np.abs(cosines - median))), 1e-3)
    z = NormalDist().inv_cdf(1 - false_pairs / n)
    return median + z * sigma, median, sigma, z


def derive_cut(z: np.ndarray, device: str = "cpu", sample: int = CUT_SAMPLE, seed: int = 0) -> CosineCut:
    """The cosine above which a pair of the unit rows ``z`` (n, d) is a copy, derived from the data: from
    the distribution of each image's nearest non-copy neighbour (of up to ``sample`` images, against all).

    Copies are a minority, and a copy is at most one neighbour of most images; so, in three steps:

    1. the second-nearest neighbour of each image is not a copy: a first cut is where a normal of the
       median and MAD (times 1.4826, a normal's sigma) of those cosines expects :data:`CUT_FIRST_PAIRS`
       pairs among ``n`` images (``median + Phi^-1(1 - CUT_FIRST_PAIRS / n) * sigma``);
    2. each image's nearest neighbour below that cut is its nearest non-copy neighbour (the second
       underestimates it for the many images that have no copy): the cut is where a normal of their
       median and MAD expects :data:`CUT_FALSE_PAIRS` unrelated pairs, clipped to 1;
    3. a pair of mutual nearest neighbours (each the other's best partner: a crop and its original) counts
       from :data:`CUT_MUTUAL_Z` spreads above that median (:meth:`CosineCut.keep`).

    The cut grows with ``n``, as the chance of an unrelated pair does. Fewer than :data:`CUT_MIN_IMAGES`
    rows: :data:`DEFAULT_THRESHOLD`, not derived. ``benchmarks/bench_audit_peers.py`` measures precision
    and recall per transformation over seeds (RESULTS.md).
    """
    import torch

    n = len(z)
    if n < CUT_MIN_IMAGES:
        return CosineCut(DEFAULT_THRESHOLD, derived=False, n=n)
    rows = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    every = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)).to(device)
    nearest = []
    k = min(CUT_NEIGHBOURS, n - 1)
    step = int(np.clip(SIMS_BYTES[every.device.type] // (4 * n), 64, 8192))
    for s in range(0, len(rows), step):
        block = torch.from_numpy(rows[s:s + step]).to(device)
        sims = every[block] @ every.T
        sims[torch.arange(len(block), device=sims.device), block] = -2  # an image is not its own neighbour
        nearest.append(sims.topk(k, dim=1).values.cpu())
    top = torch.cat(nearest).double().numpy()  # (queries, k), each row descending
    first, *_ = _tail_cut(top[:, 1], n, CUT_FIRST_PAIRS)
    below = top >= first
    # the nearest neighbour under the first cut (the k-th where an image has k copies or more)
    non_copy = top[np.arange(len(top)), np.minimum(below.sum(axis=1), k - 1)]
    cut, median, sigma, quantile = _tail_cut(non_copy, n, CUT_FALSE_PAIRS)
    return CosineCut(min(1.0, cut), derived=True, n=n, median=median, sigma=sigma, z=quantile,
                     mutual=min(1.0, median + CUT_MUTUAL_Z * sigma))


def _pairs_from_lists(lims: np.ndarray, scores: np.ndarray, ids: np.ndarray, offset: int = 0):
    rows = np.repeat(np.arange(len(lims) - 1) + offset, np.diff(lims.astype(np.int64)))
    keep = rows < ids
    return rows[keep].astype(np.int64), ids[keep].astype(np.int64), scores[keep].astype(np.float32)


def _ivf_pairs(z: np.ndarray, threshold: float, nprobe: int):
    # FAISS logs each CPU variant it tries at INFO (four lines on every import): kept to warnings
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    n, d = z.shape
    nlist = max(1, min(n // 39, int(math.sqrt(n))))  # FAISS wants >= 39 training points per cell
    quantizer = faiss.IndexFlatIP(d)
    search = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    train = z if n <= 64 * nlist else z[np.random.default_rng(0).choice(n, 64 * nlist, replace=False)]
    search.cp.niter = 10
    search.train(train)
    search.nprobe = min(nprobe, nlist)
    search.add(z)
    found = []
    for s in range(0, n, 65536):
        lims, scores, ids = search.range_search(z[s:s + 65536], threshold)
        found.append(_pairs_from_lists(lims, scores, ids, s))
    return tuple(np.concatenate(parts) for parts in zip(*found))


def _exact_pairs(z: np.ndarray, threshold: float, device: str):
    """Every pair at cosine >= ``threshold``, by block matrix products in torch (only ``j >= i`` blocks).

    Where the device runs bfloat16 natively (AMX, CUDA) the products are bfloat16 with a float32 sum,
    3-5x faster: rounding each of two unit vectors' entries to bfloat16 moves their dot product by at
    most 2 * 2^-8 (Cauchy-Schwarz), and rounding the product itself by 2^-8 more, so candidates are
    taken at ``threshold - BF16_MARGIN`` and rescored in float32: exactly the float32 answer.
    """
    import torch

    from eic_builder.hardware import resolve_dtype

    dtype = getattr(torch, resolve_dtype("auto", torch.device(device)))
    low = threshold - BF16_MARGIN if dtype == torch.bfloat16 else threshold
    exact = torch.from_numpy(z).to(device)
    x = exact.to(dtype)
    first, second = [], []
    rows_per_block = int(np.clip(SIMS_BYTES[exact.device.type] // (4 * len(x)), 64, 8192))
    for s in range(0, len(x), rows_per_block):
        sims = x[s:s + rows_per_block] @ x[s:].T  # j >= s only: the other half holds the same pairs
        diagonal = torch.arange(len(sims), device=sims.device)
        sims[diagonal, diagonal] = -2  # an image is not its own duplicate
        # a row maximum first: one pass that leaves the few rows with any candidate to look into
        rows = torch.nonzero(sims.amax(dim=1) >= low).squeeze(1)
        if len(rows):
            sub, cols = torch.nonzero(sims[rows] >= low, as_tuple=True)
            rows = rows[sub]
            keep = rows < cols
            first.append(rows[keep] + s)
            second.append(cols[keep] + s)
    if not first:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    i, j = torch.cat(first), torch.cat(second)
    score = (exact[i] * exact[j]).sum(dim=1)  # float32 rescoring of the candidates
    close = score >= threshold
    return (i[close].cpu().numpy().astype(np.int64), j[close].cpu().numpy().astype(np.int64),
            score[close].cpu().numpy().astype(np.float32))


def cosine_pairs(z: np.ndarray, threshold: float = DEFAULT_THRESHOLD, index: str = "auto", device: str = "cpu",
                 nprobe: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``(i, j, cosine)``, ``i < j``, of the unit rows ``z`` (n, d) at cosine >= ``threshold``.

    ``index``: ``exact`` (block products on ``device``), ``ivf`` (FAISS inverted lists, approximate, CPU)
    or ``auto`` (exact up to :data:`EXACT_LIMIT` rows or on CUDA, else ivf).
    """
    check_choice("--index", index, INDEXES)
    if not -1.0 <= threshold <= 1.0:
        raise OptionError(f"`min_cosine`={threshold} must be in [-1, 1]")
    if len(z) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    z = np.ascontiguousarray(z, dtype=np.float32)
    if index == "auto":
        index = "exact" if len(z) <= EXACT_LIMIT or device.startswith("cuda") else "ivf"
    if index == "exact":
        return _exact_pairs(z, threshold, device)
    return _ivf_pairs(z, threshold, nprobe)
