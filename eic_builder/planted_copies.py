"""Planted copies: known near-duplicates of a manifest's images, to measure what ``audit`` finds.

Web image sets hold the same picture many times over: byte-identical, re-encoded, resized, cropped,
mirrored. :func:`plant_copies` makes such copies of real images, labelled with the transformation
applied, so that precision and recall of each audit method can be measured per transformation::

    OUT/images/<label>/<image_id>_<transform>.JPEG   (scan this folder as a split, e.g. --split train)
    OUT/planted.csv                                  copy_id,original_id,transform

Transformations (:data:`TRANSFORMS`): ``exact`` (the same bytes), ``reencode`` (JPEG quality 40),
``resize`` (half size, Lanczos), ``crop`` (80 % of each side, at a random place: the edge of the range
copy detectors are judged on) and ``flip`` (left-right mirror); all but ``exact`` are written as JPEG
quality 90. Deterministic for a seed.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eic_builder.errors import OptionError
from eic_builder.image_source import decoding
from eic_builder.safe_names import child_path

TRANSFORMS = ("exact", "reencode", "resize", "crop", "flip")
CROP_SIDE = 0.8  # of each side, kept by a cropped copy
TRUTH_FILE = "planted.csv"


def transform_bytes(data: bytes, transform: str, place: tuple[float, float] = (0.5, 0.5)) -> bytes:
    """The bytes of a copy of the encoded image ``data`` under ``transform`` (one of :data:`TRANSFORMS`);
    ``place``: where a crop sits, as the share of the margin left of and above it (0.5, 0.5: centred)."""
    from PIL import Image, ImageOps

    if transform == "exact":
        return data
    with Image.open(io.BytesIO(data)) as src:
        image = src.convert("RGB")
    quality = 90
    if transform == "reencode":
        quality = 40
    elif transform == "resize":
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.LANCZOS)
    elif transform == "crop":
        width, height = max(1, round(image.width * CROP_SIDE)), max(1, round(image.height * CROP_SIDE))
        left, top = round((image.width - width) * place[0]), round((image.height - height) * place[1])
        image = image.crop((left, top, left + width, top + height))
    elif transform == "flip":
        image = ImageOps.mirror(image)
    else:
        raise OptionError(f"transform {transform!r} is not known; choose one of {', '.join(TRANSFORMS)}")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


@dataclass(frozen=True)
class PlantedCopy:
    """One planted copy: its image id, the original's, and the transformation."""

    copy_id: str
    original_id: str
    transform: str


@dataclass(frozen=True)
class PlantOptions:
    """The knobs of ``plant-copies``: ``per_transform`` copies per transformation (each original used
    once), the images and crop places drawn by ``seed``; ``root``: the image root when it moved since the
    scan."""

    per_transform: int = 10
    seed: int = 0
    root: str | os.PathLike[str] | None = None

    def validate(self) -> None:
        if self.per_transform < 1:
            raise OptionError(f"`per_transform`={self.per_transform} must be >= 1")


def plant_copies(manifest: str | os.PathLike[str], out: str | os.PathLike[str], options: PlantOptions | None = None,
                 **fields: object) -> list[PlantedCopy]:
    """Copy ``per_transform`` images of ``manifest`` per transformation (each original used once) into
    ``out`` (layout in the module's doc); returns the copies, also written to ``out/planted.csv``.
    ``fields`` make the options where ``options`` is not given."""
    from eic_builder.atomic_files import write_bytes, write_text
    from eic_builder.dataset.manifest import manifest_fingerprint, open_manifest
    from eic_builder.output_folder import Run

    options = options or PlantOptions(**fields)
    options.validate()
    per_transform, seed, root = options.per_transform, options.seed, options.root
    with open_manifest(manifest, root) as m:
        has = np.flatnonzero(np.asarray(m.images["has_image"].to_pylist(), dtype=bool))
        need = per_transform * len(TRANSFORMS)
        if len(has) < need:
            raise OptionError(f"{manifest} has {len(has)} images with a file; {per_transform} per transformation "
                              f"needs {need}")
        # copies of an earlier planting left beside these would be scored as unplanted duplicates
        Run("plant-copies", {"manifest": manifest_fingerprint(m.images), "per_transform": per_transform,
                             "seed": seed}).claim(out, owned=("images", TRUTH_FILE), inputs={"the manifest": manifest})
        rng = np.random.default_rng(seed)
        chosen = rng.choice(has, need, replace=False)
        places = rng.random((need, 2))
        ids, labels = m.image_ids, m.images["label"].to_pylist()
        copies = []
        for k, row in enumerate(chosen.tolist()):
            transform = TRANSFORMS[k // per_transform]
            copy_id = f"{ids[row]}_{transform}"
            folder = labels[row] or "unlabelled"
            with decoding(f"image {ids[row]!r} of manifest {manifest}"):
                copy = transform_bytes(m.read_bytes(ids[row]), transform, tuple(places[k]))
            write_bytes(child_path(Path(out) / "images", folder, copy_id, suffix=".JPEG"), copy)
            copies.append(PlantedCopy(copy_id, ids[row], transform))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["copy_id", "original_id", "transform"])
    writer.writerows((c.copy_id, c.original_id, c.transform) for c in copies)
    write_text(Path(out) / TRUTH_FILE, buf.getvalue())
    return copies


def read_planted(path: str | os.PathLike[str]) -> list[PlantedCopy]:
    """The copies listed in a ``planted.csv``."""
    with open(path, newline="") as f:
        return [PlantedCopy(r["copy_id"], r["original_id"], r["transform"]) for r in csv.DictReader(f)]


def score_planted(pairs, copies: list[PlantedCopy]) -> dict[str, dict[str, float]]:
    """Recall per method and transformation, and precision per method, of an audit's ``pairs`` table
    against planted ``copies``: a pair is true when it joins a copy and its original; every other pair
    (two originals, two copies) counts as false, so precision is a lower bound.

    Returns ``{method: {"precision": p, "pairs": n, <transform>: recall, ...}}``.
    """
    truth = {frozenset((c.copy_id, c.original_id)): c.transform for c in copies}
    per_transform = {t: sum(c.transform == t for c in copies) for t in TRANSFORMS}
    cols = pairs.select(["method", "image_id_a", "image_id_b"]).to_pydict()
    found: dict[str, set[frozenset[str]]] = {}
    total: dict[str, int] = {}
    for method, a, b in zip(cols["method"], cols["image_id_a"], cols["image_id_b"]):
        total[method] = total.get(method, 0) + 1
        if frozenset((a, b)) in truth:
            found.setdefault(method, set()).add(frozenset((a, b)))
    scores: dict[str, dict[str, float]] = {}
    for method in sorted(total, key=str):
        hits = found.get(method, set())
        row = {"pairs": float(total[method]), "precision": len(hits) / total[method]}
        for transform, n in per_transform.items():
            if n:
                row[transform] = sum(truth[h] == transform for h in hits) / n
        scores[method] = row
    return scores
