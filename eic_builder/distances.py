"""Exact inner- and inter-class cosine distances in O(N d), streaming, mergeable across ranks.

With D(x1, x2) = 1 - cos(x1, x2) and u_i = x_i / |x_i| the L2-normalised
features of a class with n members, sum S = sum_i u_i and Q = sum_i |u_i|^2
(= n unless a feature is all zeros, whose cosine with anything counts as 0):

* mean pairwise cosine over i != j = (|S|^2 - Q) / (n (n - 1)), so the class's
  inner distance is 1 minus that; classes with one member have no pair and are
  left out of the inner mean (they still count for inter);
* a class centroid is S / n; with c_k its normalised centroid, the mean cosine
  over pairs of classes k < l is (|sum_k c_k|^2 - sum_k |c_k|^2) / (C (C - 1)),
  and the inter distance is 1 minus that. It cannot exceed 1 + 1/(C - 1) (|sum c_k|^2
  >= 0), so the paper's 1.12-1.55 are out of its reach on any data; the other reading,
  the mean Euclidean distance between the normalised centroids (0 to 2, about 1.41
  between unrelated classes), is computed exactly from the C centroids
  (:func:`mean_pairwise_euclidean`).

Precision: the u_i are computed in float32 (fast; float64 norms are 20x slower), so
each |u_i| is 1 within about 2.3e-7 (float32 norms of 4,096-d rows, measured). Q is
summed from the computed u_i (their squared norms) rather than counted, so that this
rounding cancels on the diagonal of |S|^2; what remains, on the off-diagonal terms,
moves a class's mean cosine by about 2 x 2.3e-7 x |cos| at most (less in large classes).

Only per-class sums (C x d float64), counts and Q are kept, so memory does not
grow with N, shards stream a bounded batch at a time, and ranks merge their
sums with one all_reduce.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from eic_builder.errors import ManifestError


@dataclass
class ClassSums:
    """Per-class sums of L2-normalised features: ``sums`` (C, d) float64, ``counts`` (C,), ``sq`` (C,)."""

    labels: list[str]
    sums: np.ndarray
    counts: np.ndarray
    sq: np.ndarray

    @classmethod
    def empty(cls, labels: Sequence[str], dim: int) -> ClassSums:
        n = len(labels)
        return cls(list(labels), np.zeros((n, dim)), np.zeros(n, dtype=np.int64), np.zeros(n))

    def add(self, labels: Sequence[str | None], features: np.ndarray, block_rows: int = 4096) -> None:
        """Add a batch: N labels and an (N, d) array (float16/32/64). Rows without a label are skipped.

        Works ``block_rows`` rows at a time in float32 (torch, multithreaded), so memory stays
        bounded; only the per-class totals are float64.
        """
        import torch

        codes = self._codes(labels)
        keep = codes >= 0
        if not keep.all():
            codes, features = codes[keep], features[keep]
        if len(codes) == 0:
            return
        batch_sums = torch.zeros(len(self.labels), features.shape[1], dtype=torch.float32)
        squares = np.zeros(len(codes))
        # one float32 block kept across calls: a fresh 64 MiB array per batch costs more in page faults
        # than the conversion itself
        shape = (block_rows, features.shape[1])
        if getattr(self, "_block", None) is None or self._block.shape != shape:
            self._block = torch.empty(shape, dtype=torch.float32)
        block = self._block
        with warnings.catch_warnings():  # the features are only read: a read-only view is fine
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            source = torch.from_numpy(np.asarray(features))
        for start in range(0, len(codes), block_rows):
            x = block[: min(block_rows, len(codes) - start)]
            x.copy_(source[start:start + len(x)])
            norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            x /= torch.where(norms > 0, norms, torch.ones_like(norms))
            batch_sums.index_add_(0, torch.from_numpy(codes[start:start + len(x)]), x)
            squares[start:start + len(x)] = torch.linalg.vector_norm(x, dim=1).double().square().numpy()
        self.sums += batch_sums.numpy()
        self.counts += np.bincount(codes, minlength=len(self.labels))
        self.sq += np.bincount(codes, weights=squares, minlength=len(self.labels))

    def _codes(self, labels: Sequence[str | None]) -> np.ndarray:
        if not hasattr(self, "_index"):
            self._index = {label: i for i, label in enumerate(self.labels)}
        index = self._index
        try:
            return np.fromiter((-1 if lb is None else index[lb] for lb in labels), dtype=np.int64, count=len(labels))
        except KeyError as exc:
            raise ManifestError(f"feature label {exc.args[0]!r} is not among the {len(self.labels)} known classes") \
                from exc

    def all_reduce(self) -> None:
        """Sum across the ranks of an initialised torch.distributed group (every rank gets the total)."""
        import torch
        import torch.distributed as dist

        for name in ("sums", "counts", "sq"):
            tensor = torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
            dist.all_reduce(tensor)
            setattr(self, name, tensor.numpy())


@dataclass(frozen=True)
class DistanceStats:
    """The two distance rows of the table and what they were computed over."""

    inner: float | None  # mean over classes with >= 2 members of their mean pairwise D
    inter: float | None  # mean over pairs of classes of D between centroids
    n_features: int
    n_classes: int  # classes with >= 1 member
    n_inner_classes: int  # classes with >= 2 members
    inter_euclidean: float | None = None  # mean over pairs of classes of |c_k - c_l|, unit centroids (0 to 2)


def distances(acc: ClassSums) -> DistanceStats:
    """Inner and inter distances from per-class sums (see the module doc)."""
    n = acc.counts.astype(np.float64)
    present = acc.counts > 0
    multi = acc.counts >= 2
    s2 = np.einsum("ij,ij->i", acc.sums, acc.sums)
    inner = None
    if multi.any():
        mean_cos = (s2[multi] - acc.sq[multi]) / (n[multi] * (n[multi] - 1))
        inner = float(np.mean(1.0 - mean_cos))
    inter = None
    n_classes = int(present.sum())
    if n_classes >= 2:
        cent = acc.sums[present] / n[present, None]
        norms = np.linalg.norm(cent, axis=1, keepdims=True)
        unit_centroids = np.divide(cent, norms, out=np.zeros_like(cent), where=norms > 0)
        total = unit_centroids.sum(axis=0)
        pair_cos_sum = (total @ total - np.einsum("ij,ij->", unit_centroids, unit_centroids)) / 2
        inter = float(1.0 - pair_cos_sum / (n_classes * (n_classes - 1) / 2))
        inter_euclidean = mean_pairwise_euclidean(unit_centroids)
    else:
        inter_euclidean = None
    return DistanceStats(inner, inter, int(acc.counts.sum()), n_classes, int(multi.sum()), inter_euclidean)


def mean_pairwise_euclidean(points: np.ndarray, block_rows: int = 1024) -> float:
    """Mean over pairs k < l of |p_k - p_l| for the rows of ``points`` (C, d), exact: a square root per
    pair cannot be summed from class sums as the cosine can, so the C x C distances are taken from Gram
    blocks (C = 2,686 classes: 3.6 million pairs, a few seconds), never from the N features."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    sq = np.einsum("ij,ij->i", points, points)
    total = 0.0
    for start in range(0, n, block_rows):
        block = points[start:start + block_rows]
        d2 = sq[start:start + len(block), None] + sq[None, :] - 2.0 * (block @ points.T)
        dist = np.sqrt(np.maximum(d2, 0.0))
        rows = np.arange(start, start + len(block))
        total += float(dist[np.arange(n)[None, :] > rows[:, None]].sum())  # each pair once, k < l
    return total / (n * (n - 1) / 2)


def class_sums_from_batches(batches: Iterable[tuple[Sequence[str | None], np.ndarray]],
                            labels: Sequence[str] | None = None) -> ClassSums:
    """Accumulate (labels, features) batches; without ``labels``, classes are learnt as they come
    (then sorted, so the result does not depend on batch order)."""
    if labels is not None:
        acc: ClassSums | None = None
        for lbs, feats in batches:
            acc = acc or ClassSums.empty(labels, feats.shape[1])
            acc.add(lbs, feats)
        return acc or ClassSums.empty(labels, 0)
    grown: dict[str, int] = {}
    parts: list[ClassSums] = []
    for lbs, feats in batches:
        for lb in lbs:
            if lb is not None and lb not in grown:
                grown[lb] = len(grown)
        part = ClassSums.empty(list(grown), feats.shape[1])
        part.add(lbs, feats)
        parts.append(part)
    names = sorted(grown)
    dim = parts[0].sums.shape[1] if parts else 0
    total = ClassSums.empty(names, dim)
    pos = {name: i for i, name in enumerate(names)}
    for part in parts:
        idx = np.array([pos[name] for name in part.labels], dtype=np.int64)
        total.sums[idx] += part.sums
        total.counts[idx] += part.counts
        total.sq[idx] += part.sq
    return total


def feature_distances(feature_dir: str | os.PathLike[str], batch_rows: int = 4096) -> DistanceStats:
    """Distances over every shard of a features directory, streamed ``batch_rows`` at a time."""
    from eic_builder.dataset.feature_shards import iter_feature_batches

    labels = _shard_labels(feature_dir)
    acc = class_sums_from_batches(_prefetch(iter_feature_batches(feature_dir, batch_rows)), labels)
    return distances(acc)


def _prefetch(iterable: Iterable, depth: int = 2) -> Iterable:
    """Read the next batches in a thread while this one is summed (Parquet and torch release the GIL)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def fill() -> None:
        try:
            for item in iterable:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)
        q.put(done)

    threading.Thread(target=fill, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def _shard_labels(feature_dir: str | os.PathLike[str]) -> list[str]:
    import pyarrow.compute as pc

    from eic_builder.dataset.feature_shards import feature_shards
    from eic_builder.dataset.tables import read_table

    seen: set[str] = set()
    for shard in feature_shards(feature_dir):
        seen.update(pc.unique(read_table(shard, "features", columns=["label"])["label"]).drop_null().to_pylist())
    return sorted(seen)
