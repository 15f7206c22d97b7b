"""The order in which training sees images: base, random or balanced ("Investigation on training data").

* ``base``: class-ordered, the same order every epoch (the paper's worst case);
* ``random``: a fresh uniform shuffle every epoch;
* ``balanced``: every epoch draws the same number of images from each class
  (``per_class``, default the median class size; small classes are drawn with
  replacement), shuffled.

A plan is a pure function of the iteration number, so a resumed run sees
exactly the batches it would have seen, without saving sampler state.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from eic_builder.choices import SAMPLING_STRATEGIES as STRATEGIES
from eic_builder.errors import check_choice
from eic_builder.seeded import BATCH_SCALE, EPOCH_ORDER, rng_for


class BatchPlan:
    """Batches of (record index, training scale); batch i is ``plan.batch(i)``."""

    def __init__(self, labels: Sequence[str | None], strategy: str, images_per_batch: int,
                 scales: Sequence[int], seed: int = 0, per_class: int | None = None) -> None:
        check_choice("--sampling", strategy, STRATEGIES)
        self.labels = ["" if lb is None else lb for lb in labels]
        self.strategy, self.batch_size, self.scales, self.seed = strategy, images_per_batch, list(scales), seed
        groups: dict[str, list[int]] = defaultdict(list)
        for i, lb in enumerate(self.labels):
            groups[lb].append(i)
        self.groups = dict(sorted(groups.items()))
        self.per_class = per_class or int(np.median([len(g) for g in self.groups.values()]))
        self._epochs: dict[int, list[int]] = {}

    def epoch_order(self, epoch: int) -> list[int]:
        """The record indices of one epoch, in order."""
        if epoch not in self._epochs:
            rng = rng_for(self.seed, EPOCH_ORDER, epoch)
            if self.strategy == "base":
                order = [i for g in self.groups.values() for i in g]
            elif self.strategy == "random":
                order = list(range(len(self.labels)))
                rng.shuffle(order)
            else:
                order = []
                for g in self.groups.values():
                    order += rng.sample(g, self.per_class) if len(g) >= self.per_class else \
                        [rng.choice(g) for _ in range(self.per_class)]
                rng.shuffle(order)
            self._epochs = {epoch: order}  # keep one epoch: plans run long
        return self._epochs[epoch]

    @property
    def epoch_length(self) -> int:
        return self.per_class * len(self.groups) if self.strategy == "balanced" else len(self.labels)

    def batch(self, i: int) -> list[tuple[int, int]]:
        """Batch i: ``images_per_batch`` (record, scale) pairs, one scale per batch (dynamic training scale)."""
        scale = rng_for(self.seed, BATCH_SCALE, i).choice(self.scales)
        out, pos = [], i * self.batch_size
        while len(out) < self.batch_size:
            epoch, k = divmod(pos, self.epoch_length)
            out.append((self.epoch_order(epoch)[k], scale))
            pos += 1
        return out


class PlannedBatches:
    """Batches ``start``..``stop - 1``, each made by ``make(iteration)`` when the loader asks for it: a
    ``batch_sampler`` for ``torch.utils.data.DataLoader`` that never holds a long run's plan in memory."""

    def __init__(self, make: Callable[[int], list], start: int, stop: int) -> None:
        self.make, self.start, self.stop = make, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list]:
        for iteration in range(self.start, self.stop):
            yield self.make(iteration)
