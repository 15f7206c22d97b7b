"""Which transformation an audit pair most likely is, from evidence every pair can have: its two
files' SHA-1, their pixel sizes and their pHashes (direct and mirrored).

* ``exact``: the same bytes;
* ``reencoded``: the same size, hashes within the perceptual threshold;
* ``resized``: another size, hashes within the threshold;
* ``mirrored``: one image's hash is within the threshold of the other's mirror hash, and nearer than
  the direct one;
* ``cropped``: hashes beyond the threshold (pHash does not survive a crop) and another pixel size;
* ``""``: none of these (the same size, hashes far apart: an edit the evidence cannot name).

The rules read the pair, not the method that found it, so a pair found by two methods is named the
same by both; the report counts them per method.
"""

from __future__ import annotations

import numpy as np

from eic_builder.audit.perceptual import Hashes, pair_distances

LIKELY = ("exact", "reencoded", "resized", "mirrored", "cropped")


def likely_transforms(first: np.ndarray, second: np.ndarray, sha1: list[str | None], sizes: np.ndarray,
                      hashes: Hashes, threshold: int) -> np.ndarray:
    """The likely transformation (one of :data:`LIKELY`, or ``""``) of each pair ``(first[k], second[k])``
    of catalog rows; ``sizes``: (n, 2) int64 width, height of every catalog image (-1: unknown);
    ``hashes`` must be valid for the rows of the pairs (an undecodable one only tells ``exact``)."""
    if len(first) == 0:
        return np.zeros(0, dtype=object)
    digests = np.asarray(sha1, dtype=object)
    same_bytes = (digests[first] == digests[second]) & np.not_equal(digests[first], None)
    both = hashes.valid[first] & hashes.valid[second]
    direct, mirrored = pair_distances(hashes.direct, hashes.mirrored, first, second)
    known = (sizes[first] >= 0).all(axis=1) & (sizes[second] >= 0).all(axis=1)
    same_size = (sizes[first] == sizes[second]).all(axis=1) & known
    close = both & (direct <= threshold) & (direct <= mirrored)
    conditions = [same_bytes, close & same_size, close, both & (mirrored <= threshold),
                  both & known & ~same_size]
    return np.select(conditions, np.asarray(LIKELY, dtype=object), default="")
