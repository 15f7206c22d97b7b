"""Pixel check of candidate copies: can one image be laid on the other, whole or as a crop, mirrored or not?

Features put unrelated photos that share colour and texture (foliage, water) as close as a crop and its
original, and more so with random weights; no cosine cut tells them apart on every set of photos
(RESULTS.md, "The audit against imagededup"). Pixels do: a copy, however cropped, resized, re-encoded or
mirrored, lines up with its original, where two different photos do not. So each candidate pair of the
features method is checked as copy detectors verify matches (the ISC 2021 baselines' geometric check,
OpenCV's ``TM_CCOEFF_NORMED`` template matching):

1. both images as grey thumbnails, :data:`THUMB_SIDE` pixels on the long side;
2. either one (the template) is scaled to each share in :data:`SHARES` of the other's size (a crop keeps
   that share of each side of its original; 1.0: the whole image, resized or re-encoded) and slid over it,
   plain and mirrored, both as their :func:`detail` (edges and texture: smooth gradients drop out);
3. the score is the best normalised cross-correlation over places, shares, mirrors and the two directions;
   in [-1, 1], 1 where the template's detail is an exact affine copy of the window's. Windows without
   texture are skipped.

On the real val photos copies of every kind measured (``benchmarks/bench_alignment.py``: those of
``plant-copies``, crops of 50-90 % of a side, of a mirror image, halved or at JPEG quality 20, grey, or
brighter with less contrast) score above :data:`DEFAULT_MIN_MATCH` but for the smallest crops (half of
each side) of a fine texture, whose template is only half a thumbnail wide, and two different photos
well below (RESULTS.md, "The audit's pixel check"), where the grey levels themselves put the two close
together. Crops of less than half of each side are not looked for (:data:`SHARES`). The check costs
milliseconds a pair on one core (the benchmark measures it), after a thumbnail of each image of a
candidate pair.
"""

from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from eic_builder.audit.catalog import Catalog, decode_refs
from eic_builder.progress import progress

THUMB_SIDE = 96  # pixels on a thumbnail's long side
SHARES = tuple(np.round(np.linspace(0.5, 1.0, 26), 2).tolist())  # template share of the other side: 0.5, 0.52, ..., 1
DEFAULT_MIN_MATCH = 0.8  # pairs of features that score lower are not copies (see the module's doc)
MIN_SPREAD = 2.0  # grey levels (standard deviation of the detail): flatter matches nothing (no texture to align)
DETAIL_SIGMAS = (1.0, 4.0)  # pixels of a thumbnail: the band correlated (detail)
CHUNK = 128  # images per worker task
PAIR_CHUNK = 64  # pairs per worker task
PAIRS_PER_BLOCK = 50_000  # pairs whose thumbnails are held at once (match_scores)

def thumbnail(data: bytes, side: int = THUMB_SIDE) -> np.ndarray:
    """The encoded image ``data`` as grey levels (uint8, (h, w)), ``side`` pixels on its long side (JPEGs
    decoded at a reduced scale first, as for the pHash)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", (2 * side, 2 * side))
        grey = image.convert("L")
        scale = side / max(grey.size)
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(grey, dtype=np.uint8)


def detail(grey: np.ndarray, sigmas: tuple[float, float] | None = DETAIL_SIGMAS) -> np.ndarray:
    """The band of ``grey`` (float32, (h, w)) a copy keeps and two photos' smooth parts do not share: the
    difference of two Gaussian blurs of ``sigmas`` pixels (None: ``grey`` itself). Sky and sea gradients,
    which correlate with any other gradient, drop out; edges and texture stay."""
    import cv2

    if sigmas is None:
        return grey
    fine, coarse = sigmas
    return cv2.GaussianBlur(grey, (0, 0), fine) - cv2.GaussianBlur(grey, (0, 0), coarse)


def _best_correlation(image: np.ndarray, integrals: tuple[np.ndarray, np.ndarray], template: np.ndarray,
                      sigmas: tuple[float, float] | None) -> float:
    """The best normalised cross-correlation of the detail of ``template`` (th, tw), plain and mirrored,
    over every place in the detail ``image`` (H, W) whose window has texture (``integrals``: of the image
    and of its square, (H + 1, W + 1) float64); -1 where none has."""
    import cv2

    th, tw = template.shape
    band = detail(template, sigmas)
    if band.std() < MIN_SPREAD:
        return -1.0
    total, squares = integrals
    count = th * tw
    window_sum = total[th:, tw:] - total[:-th, tw:] - total[th:, :-tw] + total[:-th, :-tw]
    window_sq = squares[th:, tw:] - squares[:-th, tw:] - squares[th:, :-tw] + squares[:-th, :-tw]
    textured = (window_sq - window_sum ** 2 / count) / count >= MIN_SPREAD ** 2
    if not textured.any():
        return -1.0
    best = -1.0
    for side in (band, band[:, ::-1]):
        correlation = cv2.matchTemplate(image, np.ascontiguousarray(side), cv2.TM_CCOEFF_NORMED)
        best = max(best, float(correlation[textured].max()))
    return best


def match_score(first: np.ndarray, second: np.ndarray, shares: tuple[float, ...] = SHARES,
                sigmas: tuple[float, float] | None = DETAIL_SIGMAS) -> float:
    """How well one of two grey thumbnails ((h, w), any dtype) lies on the other, whole or as a crop, plain or
    mirrored: the best normalised cross-correlation of their :func:`detail` (``sigmas``; None: of the grey
    levels themselves) in [-1, 1] (see the module's doc); -1 where neither has the texture to align."""
    import cv2

    first, second = np.asarray(first, dtype=np.float32), np.asarray(second, dtype=np.float32)
    best = -1.0
    for image, template in ((first, second), (second, first)):
        band = detail(image, sigmas)
        integrals = cv2.integral2(band.astype(np.float64))
        fit = min(image.shape[0] / template.shape[0], image.shape[1] / template.shape[1])
        for share in shares:
            size = (max(2, round(template.shape[1] * fit * share)), max(2, round(template.shape[0] * fit * share)))
            if size[0] > image.shape[1] or size[1] > image.shape[0]:
                continue
            scaled = cv2.resize(template, size, interpolation=cv2.INTER_AREA)
            best = max(best, _best_correlation(band, integrals, scaled, sigmas))
    return best


def _read_thumbnails(cat: Catalog, rows: np.ndarray, pool: ProcessPoolExecutor) -> dict[int, np.ndarray]:
    """Grey thumbnails of the catalog images ``rows``, read and shrunk in ``pool``'s processes; an image
    that cannot be decoded is left out."""
    wanted = np.unique(np.asarray(rows, dtype=np.int64))
    jobs = [(root, mine[s:s + CHUNK]) for root, mine in cat.rows_by_root(wanted) for s in range(0, len(mine), CHUNK)]
    thumbs: dict[int, np.ndarray] = {}
    futures = [(chunk, pool.submit(decode_refs, root, [cat.ref[i] for i in chunk], thumbnail)) for root, chunk in jobs]
    for chunk, future in futures:
        for i, thumb in zip(chunk.tolist(), future.result()):
            if thumb is not None:
                thumbs[i] = thumb
    return thumbs


def _score_chunk(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    return [match_score(first, second) for first, second in pairs]


def match_scores(cat: Catalog, first: np.ndarray, second: np.ndarray, workers: int = 2,
                 block: int = PAIRS_PER_BLOCK) -> np.ndarray:
    """:func:`match_score` of each catalog pair ``(first[k], second[k])`` (float32, shape (pairs,)), in
    ``workers`` processes; -1 for a pair with an image that cannot be decoded. Pairs go ``block`` at a
    time, in the order of their first image, so memory holds one block's thumbnails (uint8, about 9 KB
    each), whatever the number of pairs; each block's images are read (and shrunk) in the same processes."""
    scores = np.full(len(first), -1.0, dtype=np.float32)
    if not len(first):
        return scores
    order = np.lexsort((second, first))
    bar = progress(total=len(first), desc="align pairs", unit="pair")
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(order), block):
            rows = order[start:start + block]
            thumbs = _read_thumbnails(cat, np.concatenate([first[rows], second[rows]]), pool)
            both = [k for k in rows.tolist() if int(first[k]) in thumbs and int(second[k]) in thumbs]
            futures = [(chunk, pool.submit(_score_chunk, [(thumbs[int(first[k])], thumbs[int(second[k])])
                                                          for k in chunk]))
                       for chunk in (both[s:s + PAIR_CHUNK] for s in range(0, len(both), PAIR_CHUNK))]
            for chunk, future in futures:
                scores[chunk] = future.result()
            bar.update(len(rows))
    bar.close()
    return scores
