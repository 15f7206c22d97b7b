from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_distances

from eic_builder.distances import ClassSums, class_sums_from_batches, distances, feature_distances
from eic_builder.errors import ManifestError


def brute_force(labels: list[str], x: np.ndarray) -> tuple[float, float]:
    """Pairwise matrices with scikit-learn: the definitions of DESIGN.md, computed the slow way."""
    lab = np.array(labels)
    inner, cents = [], []
    for c in sorted(set(labels)):
        idx = np.flatnonzero(lab == c)
        u = x[idx]
        norms = np.linalg.norm(u, axis=1, keepdims=True)
        cents.append(np.divide(u, norms, out=np.zeros_like(u), where=norms > 0).mean(0))
        if len(idx) >= 2:
            d = cosine_distances(u)
            inner.append((d.sum() - np.trace(d)) / (len(idx) * (len(idx) - 1)))
    dc = cosine_distances(np.array(cents))
    return float(np.mean(inner)), float(dc[np.triu_indices(len(cents), 1)].mean())


def test_streaming_equals_brute_force_on_random_features() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 96)) + rng.normal(size=96)  # a shared offset, like real features
    labels = [f"c{i}" for i in rng.integers(0, 9, 500)]
    labels[0] = "only-one"  # a class with one member: left out of inner, counted in inter
    x[7] = 0  # an all-zero feature: cosine 0 with everything
    batches = [(labels[i:i + 64], x[i:i + 64]) for i in range(0, 500, 64)]
    d = distances(class_sums_from_batches(batches))
    inner, inter = brute_force(labels, x)
    assert d.inner == pytest.approx(inner, abs=1e-6) and d.inter == pytest.approx(inter, abs=1e-6)
    assert (d.n_features, d.n_classes, d.n_inner_classes) == (500, 10, 9)
    shuffled = class_sums_from_batches(list(reversed(batches)))
    assert distances(shuffled).inner == pytest.approx(d.inner, abs=1e-12)


def test_hand_computed() -> None:
    # class a: (1,0), (0,1) -> cos 0 -> inner 1; class b: (1,0),(1,0) -> inner 0; centroids (.5,.5) and (1,0)
    acc = class_sums_from_batches([(["a", "a", "b", "b"], np.array([[1, 0], [0, 1], [2, 0], [3, 0.0]]))])
    d = distances(acc)
    assert d.inner == pytest.approx(0.5)
    assert d.inter == pytest.approx(1 - np.sqrt(0.5))


def test_empty_and_bad_input(tmp_path: Path) -> None:
    d = distances(ClassSums.empty(["a"], 4))
    assert (d.inner, d.inter, d.n_features) == (None, None, 0)
    acc = ClassSums.empty(["a"], 2)
    with pytest.raises(ManifestError, match="feature label 'zzz' is not among the 1 known classes"):
        acc.add(["zzz"], np.ones((1, 2)))
    with pytest.raises(ManifestError, match="holds no feature shards"):
        feature_distances(tmp_path)
    with pytest.raises(ManifestError, match="does not exist"):
        feature_distances(tmp_path / "none")


WORKER = """
import sys
import numpy as np
import torch.distributed as dist
from eic_builder.distances import ClassSums

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
x = np.load(sys.argv[1])
labels = [f"c{i % 3}" for i in range(len(x))]
acc = ClassSums.empty(sorted(set(labels)), x.shape[1])
acc.add(labels[rank::world], x[rank::world])
acc.all_reduce()
np.save(f"{sys.argv[2]}-{rank}.npy", acc.sums)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_all_reduce_two_gloo_ranks(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    x = np.random.default_rng(1).normal(size=(40, 16))
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "worker.py").write_text(WORKER)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(tmp_path / "worker.py"), str(tmp_path / "x.npy"), str(tmp_path / "sums")],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    labels = [f"c{i % 3}" for i in range(40)]
    whole = ClassSums.empty(sorted(set(labels)), 16)
    whole.add(labels, x)
    for rank in range(2):
        assert np.allclose(np.load(tmp_path / f"sums-{rank}.npy"), whole.sums, atol=1e-12)


def test_real_features_streaming_equals_brute_force(ilsvrc_val_1300: Path, tmp_path: Path, first_images) -> None:
    from eic_builder.dataset.feature_shards import iter_feature_batches
    from eic_builder.features import FeatureConfig, extract_features
    from eic_builder.scan.scanner import scan

    scan(ilsvrc_val_1300, tmp_path / "full")
    first_images(tmp_path / "full", tmp_path / "m", 30)  # sorted by class: several classes with 1-3 images
    cfg = FeatureConfig(weights="random", crop=32, resize=37, workers=0, shard_size=8)
    extract_features(tmp_path / "m", tmp_path / "f", cfg)
    labels, feats = [], []
    for lb, f in iter_feature_batches(tmp_path / "f"):
        labels += lb
        feats.append(f.astype(np.float64))
    inner, inter = brute_force(labels, np.concatenate(feats))
    d = feature_distances(tmp_path / "f", batch_rows=7)
    # float32 normalisation (see the module doc): random-weight features of 1-3 images per class are
    # near-parallel (mean cosine 0.98), the worst case; measured errors up to 9e-7 (float32 or
    # bfloat16 features): the bound leaves a 6x margin and is far below the 3 decimals reported
    assert d.inner == pytest.approx(inner, abs=5e-6) and d.inter == pytest.approx(inter, abs=5e-6)


def brute_force_euclidean(labels: list[str], x: np.ndarray) -> float:
    """The Euclidean reading the slow way: scikit-learn's pairwise distances of the normalised centroids."""
    from sklearn.metrics.pairwise import euclidean_distances

    lab = np.array(labels)
    cents = []
    for c in sorted(set(labels)):
        u = x[lab == c]
        norms = np.linalg.norm(u, axis=1, keepdims=True)
        cent = np.divide(u, norms, out=np.zeros_like(u), where=norms > 0).mean(0)
        cents.append(cent / np.linalg.norm(cent))
    d = euclidean_distances(np.array(cents))
    return float(d[np.triu_indices(len(cents), 1)].mean())


def test_euclidean_inter_distance_equals_brute_force_and_the_cosine_bound_holds() -> None:
    from eic_builder.distances import mean_pairwise_euclidean

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 64))
    labels = [f"c{i}" for i in rng.integers(0, 1500, 3000)]  # more classes than one block of rows
    d = distances(class_sums_from_batches([(labels[i:i + 500], x[i:i + 500]) for i in range(0, 3000, 500)]))
    assert d.inter_euclidean == pytest.approx(brute_force_euclidean(labels, x), abs=1e-9)
    assert 1.3 < d.inter_euclidean < 1.5  # unrelated classes: about sqrt(2)
    assert d.inter <= 1 + 1 / (d.n_classes - 1) + 1e-12
    # hand-computed: the corners of a square on the unit circle, 4 sides of sqrt(2) and 2 diagonals of 2
    square = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=float)
    assert mean_pairwise_euclidean(square, block_rows=3) == pytest.approx((4 * np.sqrt(2) + 2 * 2) / 6)
    # the cosine reading's bound is reached by C points summing to zero: 1 + 1/(C - 1)
    acc = class_sums_from_batches([(["a", "b", "c", "d"], square)])
    assert distances(acc).inter == pytest.approx(1 + 1 / 3)


def test_real_features_euclidean_equals_brute_force(ilsvrc_val_1300: Path, tmp_path: Path, first_images) -> None:
    from eic_builder.dataset.feature_shards import iter_feature_batches
    from eic_builder.features import FeatureConfig, extract_features
    from eic_builder.scan.scanner import scan

    scan(ilsvrc_val_1300, tmp_path / "full")
    first_images(tmp_path / "full", tmp_path / "m", 40)
    extract_features(tmp_path / "m", tmp_path / "f", FeatureConfig(weights="random", crop=32, resize=37, workers=0))
    labels, feats = [], []
    for lb, f in iter_feature_batches(tmp_path / "f"):
        labels += lb
        feats.append(f.astype(np.float64))
    d = feature_distances(tmp_path / "f")
    assert d.inter_euclidean == pytest.approx(brute_force_euclidean(labels, np.concatenate(feats)), abs=5e-6)
