"""The ``filter`` stage: a manifest without (or with only) small, twisted or narrow boxes, or without
the images an audit found to be copies of held-out images. Box geometry: :mod:`eic_builder.boxes`."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eic_builder.boxes import SMALL_PX, TWISTED_RATIO, box_flags, original_scales
from eic_builder.choices import BOX_FLAGS as FLAG_NAMES
from eic_builder.dataset.manifest import Manifest
from eic_builder.dataset.schemas import REJECTS_SCHEMA
from eic_builder.dataset.tables import empty_table, to_table
from eic_builder.errors import OptionError, choices_text
from eic_builder.output_folder import check_out

log = logging.getLogger(__name__)

def parse_flags(text: str | None) -> frozenset[str]:
    """Parse a comma list such as ``"small,twisted"`` into flag names."""
    if not text:
        return frozenset()
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    bad = sorted(names - set(FLAG_NAMES))
    if bad:
        raise OptionError(f"unknown box flag(s) {', '.join(bad)}; allowed: {choices_text(FLAG_NAMES)}")
    return names


@dataclass(frozen=True)
class FilterResult:
    """What a filter removed and kept (counts)."""

    removed_boxes: int
    removed_images: int
    kept_boxes: int
    kept_images: int
    excluded_images: int = 0  # of removed_images: named by ``exclude`` (an audit), each now a reject row


@dataclass(frozen=True)
class FilterOptions:
    """The knobs of ``filter``: ``drop`` removes boxes with any of the named flags; ``keep`` keeps only
    boxes with at least one of them; ``min_side`` removes boxes whose shorter side is under that many
    pixels; flags are recomputed with ``small_px`` and ``twisted_ratio``. ``exclude`` maps image ids to
    remove, whatever their boxes, to the (reason, detail) of the reject row each becomes (``filter
    --exclude-audit``: see :mod:`eic_builder.audit.exclude`)."""

    drop: frozenset[str] = frozenset()
    keep: frozenset[str] = frozenset()
    min_side: float = 0.0
    small_px: float = SMALL_PX
    twisted_ratio: float = TWISTED_RATIO
    exclude: Mapping[str, tuple[str, str]] | None = None

    def validate(self) -> None:
        """Refuse options that cannot be run (before any manifest is read)."""
        if self.drop and self.keep:
            raise OptionError("`drop` and `keep` exclude each other; give one of them")
        if not math.isfinite(self.min_side) or self.min_side < 0:
            raise OptionError(f"`min_side`={self.min_side} must be a finite number >= 0")


def filter_manifest(src: str | os.PathLike[str], out: str | os.PathLike[str],
                    options: FilterOptions | None = None) -> FilterResult:
    """Write a manifest holding the boxes of ``src`` that pass the filter (see :class:`FilterOptions`), and
    their images. Images left without boxes are removed when they had boxes before; images that never had
    boxes are kept.
    """
    options = options or FilterOptions()
    options.validate()
    drop, keep, min_side, exclude = options.drop, options.keep, options.min_side, options.exclude
    small_px, twisted_ratio = options.small_px, options.twisted_ratio
    check_out(out, {"the input manifest": src})
    manifest = Manifest.open(src)
    boxes, images, rejects = manifest.boxes, manifest.images, manifest.rejects
    excluded = 0
    if exclude:
        excluded_ids = pa.array(sorted(exclude), pa.string())
        gone = pc.is_in(images["image_id"], excluded_ids)
        removed = images.filter(gone).select(["image_id", "path"]).to_pydict()
        excluded = len(removed["image_id"])
        images = images.filter(pc.invert(gone))
        boxes = boxes.filter(pc.invert(pc.is_in(boxes["image_id"], excluded_ids)))
        rows = [(path or image_id, image_id, "file", *exclude[image_id])
                for image_id, path in zip(removed["image_id"], removed["path"])]
        extra = to_table("rejects", dict(zip(REJECTS_SCHEMA.names, zip(*rows)))) if rows else empty_table("rejects")
        rejects = pa.concat_tables([rejects, extra])
    row = pc.index_in(boxes["image_id"], images["image_id"])  # each box's image row
    width = pc.take(images["width"], row).to_numpy(zero_copy_only=False)
    height = pc.take(images["height"], row).to_numpy(zero_copy_only=False)
    cols = {c: boxes[c].to_numpy() for c in ("x1", "y1", "x2", "y2")}
    sx, sy = original_scales(images, row)  # small in the original image's pixels
    flags = box_flags(cols["x1"], cols["y1"], cols["x2"], cols["y2"], width, height, small_px, twisted_ratio,
                      sx, sy)
    named = {"small": flags.is_small, "twisted": flags.is_twisted}
    mask = np.ones(len(boxes), dtype=bool)
    for name in drop:
        mask &= ~named[name]
    if keep:
        any_kept = np.zeros(len(boxes), dtype=bool)
        for name in keep:
            any_kept |= named[name]
        mask &= any_kept
    if min_side > 0:
        short = np.minimum(cols["x2"] - cols["x1"], cols["y2"] - cols["y1"])
        mask &= short >= min_side
    new_boxes = boxes.filter(pa.array(mask))
    new_boxes = new_boxes.set_column(
        new_boxes.schema.get_field_index("is_small"), "is_small", pa.array(flags.is_small[mask])
    ).set_column(new_boxes.schema.get_field_index("is_twisted"), "is_twisted", pa.array(flags.is_twisted[mask]))
    kept_ids = pc.unique(new_boxes["image_id"])
    had_boxes = pc.greater(images["n_boxes"], 0)
    keep_image = pc.or_(pc.invert(had_boxes), pc.is_in(images["image_id"], kept_ids))
    new_images = images.filter(keep_image)
    counts = pc.value_counts(new_boxes["image_id"])
    count_ids = counts.field("values")
    idx = pc.index_in(new_images["image_id"], count_ids)
    n_boxes = pc.fill_null(pc.take(counts.field("counts"), idx), 0).cast(pa.int32())
    new_images = new_images.set_column(new_images.schema.get_field_index("n_boxes"), "n_boxes", n_boxes)
    result = FilterResult(
        removed_boxes=len(manifest.boxes) - len(new_boxes),
        removed_images=len(manifest.images) - len(new_images),
        kept_boxes=len(new_boxes),
        kept_images=len(new_images),
        excluded_images=excluded,
    )
    manifest.derive(new_images, new_boxes, rejects,
                    filter={"drop": sorted(drop), "keep": sorted(keep), "min_side": min_side, "small_px": small_px,
                            "twisted_ratio": twisted_ratio, "excluded_images": excluded}).write(out)
    log.info(
        "removed %d boxes, %d images; %d boxes, %d images left",
        result.removed_boxes, result.removed_images, result.kept_boxes, result.kept_images,
    )
    return result
