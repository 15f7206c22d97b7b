from __future__ import annotations

from collections import Counter

import pytest

from baseline.sampling import BatchPlan, PlannedBatches
from eic_builder.errors import OptionError

LABELS = ["b", "a", "a", "c", "a", "b", "a", "a"]  # a: 5, b: 2, c: 1


def test_base_is_class_ordered() -> None:
    plan = BatchPlan(LABELS, "base", 4, [300])
    assert [i for i, _ in plan.batch(0) + plan.batch(1)] == [1, 2, 4, 6, 7, 0, 5, 3]
    assert plan.batch(2) == plan.batch(0)  # the same order every epoch


def test_random_is_a_permutation_per_epoch() -> None:
    plan = BatchPlan(LABELS, "random", 4, [300], seed=1)
    epoch0 = [i for i, _ in plan.batch(0) + plan.batch(1)]
    epoch1 = [i for i, _ in plan.batch(2) + plan.batch(3)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(8)) and epoch0 != epoch1


def test_balanced_gives_each_class_the_same_count() -> None:
    plan = BatchPlan(LABELS, "balanced", 3, [300], seed=0)
    assert plan.per_class == 2 and plan.epoch_length == 6  # median class size 2, 3 classes
    counts = Counter(LABELS[i] for i, _ in plan.batch(0) + plan.batch(1))
    assert counts == {"a": 2, "b": 2, "c": 2}


def test_batches_are_a_pure_function_of_the_iteration() -> None:
    a = BatchPlan(LABELS, "random", 3, [200, 400, 600], seed=5)
    b = BatchPlan(LABELS, "random", 3, [200, 400, 600], seed=5)
    assert [b.batch(i) for i in range(7, 3, -1)] == [a.batch(i) for i in range(7, 3, -1)]
    assert len({s for i in range(30) for _, s in a.batch(i)}) == 3  # dynamic training scale
    assert all(len({s for _, s in a.batch(i)}) == 1 for i in range(30))  # one scale per batch
    rank_1_of_3 = PlannedBatches(lambda it: a.batch(it)[1::3], 5, 7)  # how the engine takes a rank's share
    assert len(rank_1_of_3) == 2 and list(rank_1_of_3) == [a.batch(5)[1::3], a.batch(6)[1::3]]
    assert len(PlannedBatches(a.batch, 7, 3)) == 0 and list(PlannedBatches(a.batch, 7, 3)) == []


def test_bad_strategy() -> None:
    with pytest.raises(OptionError, match=r"sampling='shuffled' is not allowed; choose one of 'base'"):
        BatchPlan(LABELS, "shuffled", 2, [300])
