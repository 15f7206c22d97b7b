"""Seeded draws: golden values, so that a draw never changes under a run that resumes across versions."""

from __future__ import annotations

import hashlib

from eic_builder.seeded import AUGMENT, BATCH_SCALE, EPOCH_ORDER, FLIP, fraction_of, rank_of, rng_for, seed_for


def test_a_keys_rank_is_the_first_8_bytes_of_its_seeded_sha1() -> None:
    # sha1(b"0:n01440764_18") by hand, independently of the module
    first8 = hashlib.sha1(b"0:n01440764_18").digest()[:8]
    assert rank_of("n01440764_18", 0) == int.from_bytes(first8, "big")
    assert rank_of("n01440764_18", 1) != rank_of("n01440764_18", 0)
    assert 0 <= fraction_of("n01440764_18", 0) < 1
    fractions = [fraction_of(f"img{i}", 7) for i in range(4000)]
    assert abs(sum(f < 0.2 for f in fractions) / 4000 - 0.2) < 0.03  # uniform enough for a 20 % hold-out


def test_streams_keep_their_values() -> None:
    assert (EPOCH_ORDER, BATCH_SCALE, FLIP, AUGMENT) == (1_000_003, 7_919, 104_729, 1_000_003)
    assert seed_for(3, BATCH_SCALE, 5) == 3 * 7_919 + 5
    assert rng_for(3, FLIP, 2).random() == rng_for(3, FLIP, 2).random()
    assert rng_for(3, FLIP, 2).random() != rng_for(3, FLIP, 3).random()
