"""Perceptual duplicates: a 64-bit pHash per image and per mirror image, and every pair within a Hamming
distance found by multi-index hashing instead of comparing all pairs.

pHash keeps the signs of an image's lowest 8x8 DCT frequencies (of a 32x32 grey version) against their
median, so it survives re-encoding and resizing: on the 1,300 real ILSVRC val images, copies re-encoded
at JPEG quality 40 or halved in size are within 3 bits of their original, while the closest two
different images are 10 bits apart. A left-right mirror image flips the sign of every odd horizontal
frequency (the DCT-II of a reversed row is ``(-1)^k`` times the row's), so the hash of the mirror image
comes from the same 64 coefficients at no extra decoding: :func:`phash_pair`. A pair is found when
either image is within the threshold of the other or of its mirror. Crops (10-34 bits) are out of the
hash's reach: the features method's job. Default threshold: 6 bits.

Multi-index hashing (Norouzi et al., CVPR 2012): cut the 64 bits into ``m`` blocks; two hashes within
``t`` bits agree to within ``t // m`` bits on at least one block (pigeonhole), so probing each block's
exact-match table with every key within ``t // m`` bits finds every pair, and only candidate pairs are
compared. ``m`` is about ``64 / log2(n)`` (blocks as selective as the set is large). Mirrored pairs
probe the same tables with the mirror hashes: at most twice the work.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from eic_builder.audit.catalog import Catalog, decode_refs
from eic_builder.image_source import ImageRef
from eic_builder.progress import progress

HASH_BITS = 64
DEFAULT_THRESHOLD = 6
CHUNK = 256  # images per worker task

HASH_SIDE = 32  # the grey image the DCT is taken of (imagehash's hash_size 8 x highfreq_factor 4)
# the 8 lowest rows of the unnormalised DCT-II of 32 samples (scipy's type 2): X_k = 2 sum x_n cos(pi k (2n+1) / 64);
# two small products give the 8x8 low frequencies 8x faster than two full DCTs
_DCT_LOW = 2.0 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(HASH_SIDE)[None, :] + 1) / (2 * HASH_SIDE))
_MIRROR_SIGNS = np.where(np.arange(8) % 2, -1.0, 1.0)[None, :]  # (-1)^k of each horizontal frequency


def _bits(coefficients: np.ndarray) -> int:
    flat = coefficients.reshape(-1)
    middle = np.sort(flat)[31:33]  # the median of 64 values, as np.median takes it, at a tenth of its cost
    bits = flat > (middle[0] + middle[1]) / 2
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def phash_pair(data: bytes) -> tuple[int, int]:
    """(pHash, pHash of the left-right mirror image) of an encoded image, as 64-bit ints (bit 63 = the
    DCT's first coefficient); the first equals ``imagehash.phash``'s and the second ``imagehash.phash``
    of ``ImageOps.mirror(image)`` (tests check both on real images).

    JPEGs are decoded at a reduced scale (``draft``: at least 64x64, whatever their size), since
    the hash sees a 32x32 version: a few times faster on photos, and the same for every image.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", (64, 64))
        grey = image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = _DCT_LOW @ pixels @ _DCT_LOW.T  # rows: vertical frequencies, columns: horizontal
    return _bits(low), _bits(low * _MIRROR_SIGNS)


def phash_bytes(data: bytes) -> int:
    """The 64-bit pHash of an encoded image (see :func:`phash_pair`)."""
    return phash_pair(data)[0]


@dataclass
class Hashes:
    """The pHashes of a catalog: ``direct[i]`` and ``mirrored[i]`` (uint64, shape (n,)) of image ``i``, and
    ``valid[i]``, whether it could be decoded (the hashes of one that could not are 0)."""

    direct: np.ndarray
    mirrored: np.ndarray
    valid: np.ndarray


def compute_hashes(cat: Catalog, workers: int = 2, rows: np.ndarray | None = None) -> Hashes:
    """The pHash pairs of every catalog image (or of ``rows`` only; the others stay invalid)."""
    n = len(cat)
    wanted = np.arange(n) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
    groups = cat.rows_by_root(wanted)
    return hash_refs([(root, [cat.ref[i] for i in mine]) for root, mine in groups], workers,
                     rows=[mine for _, mine in groups], n=n)


def hash_refs(groups: list[tuple[str, list[ImageRef]]], workers: int = 2, rows: list[np.ndarray] | None = None,
              n: int | None = None) -> Hashes:
    """The pHash pairs of images given as ``(image root, refs)`` groups, read and hashed in ``workers``
    processes, :data:`CHUNK` images a task. Image ``k`` of all groups in order is row ``k`` of the
    result, unless ``rows`` (one array per group) and ``n`` (the rows in all) place them."""
    if rows is None:
        sizes = np.cumsum([0, *(len(refs) for _, refs in groups)])
        rows = [np.arange(sizes[g], sizes[g + 1]) for g in range(len(groups))]
        n = int(sizes[-1])
    hashes = Hashes(np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=bool))
    jobs = [(root, places[s:s + CHUNK], refs[s:s + CHUNK]) for (root, refs), places in zip(groups, rows)
            for s in range(0, len(refs), CHUNK)]
    bar = progress(total=sum(len(refs) for _, refs in groups), desc="phash", unit="img")
    with ProcessPoolExecutor(max(1, workers)) as pool:
        futures = [(chunk, pool.submit(decode_refs, root, refs, phash_pair)) for root, chunk, refs in jobs]
        for chunk, future in futures:
            for i, pair in zip(chunk, future.result()):
                if pair is not None:
                    hashes.direct[i], hashes.mirrored[i] = pair
                    hashes.valid[i] = True
            bar.update(len(chunk))
    bar.close()
    return hashes


def block_count(n: int, threshold: int) -> int:
    """Blocks for ``n`` hashes: about ``64 / log2(n)``, at most ``threshold + 1`` (then each block is
    probed exactly), at least 1."""
    return max(1, min(threshold + 1, round(HASH_BITS / max(1.0, math.log2(max(n, 2))))))


def _flip_masks(bits: int, radius: int) -> np.ndarray:
    masks = [0]
    for distance in range(1, radius + 1):
        masks += [sum(1 << b for b in combo) for combo in combinations(range(bits), distance)]
    return np.asarray(masks, dtype=np.uint64)


def _close_pairs(hashes: np.ndarray, queries: np.ndarray, threshold: int, query_chunk: int,
                 upper: bool) -> list[np.ndarray]:
    """Codes ``q * n + i`` of every (query ``q``, hash ``i``) within ``threshold`` bits, ``q < i`` when
    ``upper`` (the queries are the hashes: each pair once) else ``q != i``, by multi-index hashing (the
    module's doc). Candidates are checked a chunk of queries at a time, so memory holds one chunk's
    candidates and the pairs, never all candidates (about 700 per query at 2 million hashes)."""
    n = len(hashes)
    m = block_count(n, threshold)
    radius = threshold // m
    widths = [HASH_BITS // m + (1 if b < HASH_BITS % m else 0) for b in range(m)]
    found: list[np.ndarray] = []
    shift = HASH_BITS
    for width in widths:
        shift -= width
        block = np.uint64((1 << width) - 1)
        keys = (hashes >> np.uint64(shift)) & block
        query_keys = (queries >> np.uint64(shift)) & block
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        # each distinct key once, with where its run starts and how long it is: one binary search a
        # probe instead of two (the searches are most of the time)
        starts = np.concatenate([[0], np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1])
        distinct, runs = sorted_keys[starts], np.diff(np.append(starts, n))
        masks = _flip_masks(width, radius)
        for start in range(0, len(queries), query_chunk):
            q_rows = np.arange(start, min(len(queries), start + query_chunk))
            probes = (query_keys[q_rows, None] ^ masks[None, :]).reshape(-1)
            at = np.minimum(np.searchsorted(distinct, probes), len(distinct) - 1)
            lo = starts[at]
            counts = np.where(distinct[at] == probes, runs[at], 0)
            if not counts.any():
                continue
            q = np.repeat(np.repeat(q_rows, len(masks)), counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            match = order[np.repeat(lo, counts) + offsets]
            keep = (q < match) if upper else (q != match)
            q, match = q[keep], match[keep]
            close = np.bitwise_count(queries[q] ^ hashes[match]) <= threshold
            found.append(q[close] * n + match[close])
    return found


def hamming_pairs(hashes: np.ndarray, threshold: int = DEFAULT_THRESHOLD, query_chunk: int = 16384,
                  mirrored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``(i, j, d, flipped)``, ``i < j``, of 64-bit ``hashes`` (uint64, shape (n,)) within
    ``threshold`` bits.

    With ``mirrored`` (the hashes of the mirror images, shape (n,)), a pair is also one where either
    image's mirror hash is within ``threshold`` of the other's hash; ``d`` is then the least of the
    direct and the two mirrored distances, and ``flipped`` says the least was mirrored. Exact (the
    pigeonhole argument of the module's doc), in time about proportional to the candidate pairs;
    ``query_chunk`` bounds the memory of one step.
    """
    n = len(hashes)
    empty = np.zeros(0, dtype=np.int64)
    if n < 2 or threshold < 0:
        return empty, empty, empty, np.zeros(0, dtype=bool)
    found = _close_pairs(hashes, hashes, threshold, query_chunk, upper=True)
    if mirrored is not None:
        found += _close_pairs(hashes, mirrored, threshold, query_chunk, upper=False)
    if not found:
        return empty, empty, empty, np.zeros(0, dtype=bool)
    codes = np.concatenate(found)
    q, i = codes // n, codes % n
    codes = np.unique(np.minimum(q, i) * n + np.maximum(q, i))  # q != i in both passes: i < j here
    i, j = codes // n, codes % n
    distance, across = pair_distances(hashes, mirrored, i, j)
    flipped = across < distance
    distance = np.minimum(distance, across)
    close = distance <= threshold
    return i[close], j[close], distance[close], flipped[close]


def pair_distances(direct: np.ndarray, mirrored: np.ndarray | None, first: np.ndarray,
                   second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(direct, mirrored) Hamming distances (int64) of the pairs ``(first[k], second[k])`` of 64-bit hashes:
    ``direct`` between their hashes, ``mirrored`` the nearer of either image's mirror hash to the other's
    hash (65, farther than any distance, without ``mirrored`` hashes)."""
    plain = np.bitwise_count(direct[first] ^ direct[second]).astype(np.int64)
    if mirrored is None:
        return plain, np.full(len(plain), HASH_BITS + 1, dtype=np.int64)
    across = np.minimum(np.bitwise_count(mirrored[first] ^ direct[second]),
                        np.bitwise_count(direct[first] ^ mirrored[second])).astype(np.int64)
    return plain, across


def perceptual_pairs(hashes: Hashes, threshold: int = DEFAULT_THRESHOLD,
                     mirrored: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(i, j, score)`` of decodable catalog images within ``threshold`` bits (directly or, with
    ``mirrored``, as mirror images); score ``1 - d / 64``."""
    rows = np.flatnonzero(hashes.valid)
    i, j, d, _ = hamming_pairs(hashes.direct[rows], threshold, mirrored=hashes.mirrored[rows] if mirrored else None)
    return rows[i], rows[j], (1.0 - d / HASH_BITS).astype(np.float32)
