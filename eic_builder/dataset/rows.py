"""Typed rows of the manifest tables, for code that makes them one at a time (``scan``, ``assemble``):
named tuples (as cheap as plain tuples to make at 16 million rows) turned into tables by field name.

Boxes are in original-image pixels, ``x1, y1`` inclusive and ``x2, y2`` exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import pyarrow as pa

from eic_builder.dataset.tables import to_table


class ImageRow(NamedTuple):
    """One row of ``images.parquet`` (:data:`~eic_builder.dataset.schemas.IMAGES_SCHEMA`)."""

    image_id: str
    split: str
    label: str | None
    wnid: str | None
    path: str | None
    annotation: str | None
    width: int
    height: int
    has_image: bool
    n_boxes: int
    archive: str | None
    offset: int | None
    size: int | None
    sha1: str | None
    ann_width: int | None
    ann_height: int | None


class BoxRow(NamedTuple):
    """A box as a scan finds it: the columns of ``boxes.parquet`` it knows before the flags, the size of its
    image and the scale from the image its source measured (the flags are computed from them, for every box
    of a unit at once)."""

    image_id: str
    box_index: int
    label: str
    wnid: str | None
    x1: float
    y1: float
    x2: float
    y2: float
    image_width: int
    image_height: int
    scale_x: float = 1.0  # stored pixels per pixel of the image the source measured the box on
    scale_y: float = 1.0


class RejectRow(NamedTuple):
    """One row of ``rejects.parquet``: the file (or the box's annotation file), its image id, ``file`` or
    ``box``, a reason code of :data:`~eic_builder.rejects.REJECT_REASONS` and a sentence."""

    path: str
    image_id: str | None
    level: str
    reason: str
    detail: str


def columns(rows: Sequence[tuple], row_type: type[NamedTuple]) -> dict[str, list]:
    """The rows as columns named by ``row_type``'s fields (empty lists for no rows)."""
    if not rows:
        return {name: [] for name in row_type._fields}
    return dict(zip(row_type._fields, map(list, zip(*rows))))


def rows_table(kind: str, rows: Sequence[tuple], row_type: type[NamedTuple]) -> pa.Table:
    """A table of ``kind`` from rows whose fields are its columns."""
    return to_table(kind, columns(rows, row_type))
