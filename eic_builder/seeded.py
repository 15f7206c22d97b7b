"""Seeded draws: every random choice of the toolkit is a function of a seed and what it is drawn for, so a
rerun, a resumed run or another machine draws the same.

Two kinds: a key's place in a seeded order (:func:`rank_of`, :func:`fraction_of`: the first 8 bytes of
``sha1("<seed>:<key>")``, independent of the other keys and of their order: hold-out parts, assemble's
draw of images), and the generator of the ``index``-th draw of a stream (:func:`rng_for`, :func:`seed_for`:
``seed * stream + index``, one prime a stream so that two streams of one seed never coincide).
"""

from __future__ import annotations

import hashlib
import random

# the streams of the training loops (values kept: a run resumed across versions draws the same)
EPOCH_ORDER = 1_000_003  # the order of the records in an epoch; also pretrain's crop and flip of a draw
BATCH_SCALE = 7_919  # the training scale of a batch
FLIP = 104_729  # the left-right flips of an iteration's images
AUGMENT = 1_000_003  # torch's generator of an iteration (the same prime as the epoch order: other draws)


def rank_of(key: str, seed: int) -> int:
    """The place of ``key`` in the seeded order: the first 8 bytes of ``sha1("<seed>:<key>")`` (0 .. 2**64 - 1)."""
    return int.from_bytes(hashlib.sha1(f"{seed}:{key}".encode()).digest()[:8], "big")


def fraction_of(key: str, seed: int) -> float:
    """:func:`rank_of` in [0, 1): a uniform draw of its own for each key."""
    return rank_of(key, seed) / 2**64


def seed_for(seed: int, stream: int, index: int) -> int:
    """The seed of the ``index``-th draw of ``stream`` (one of this module's constants)."""
    return seed * stream + index


def rng_for(seed: int, stream: int, index: int) -> random.Random:
    """A generator for the ``index``-th draw of ``stream``."""
    return random.Random(seed_for(seed, stream, index))
