"""Parquet files with an Image column (Hugging Face ``datasets``), read in place like an archive.

A ``datasets`` Image feature is a struct column ``{bytes: binary, path: string}``; ``ILSVRC/imagenet-1k``'s
Parquet layout and our own ``export --format hf`` hold one image a row so. A scan reads each file a row
group at a time (one unit of work per file), and records each image as a member of the file:
``archive`` the Parquet file, ``offset`` the row's index in the file, ``size`` its bytes; every later
stage reads it with :class:`ParquetImages`, which keeps the image column of one row group per file, so
a reader going through a file in order reads each row group once.

The class of a row: its label when that is a wnid, or the label's ``ClassLabel`` name (the
``huggingface`` schema metadata ``datasets`` writes) when that is one, else the ``_<wnid>`` suffix of the
image's ``path`` (``ILSVRC2012_val_00000001_n01751748.JPEG``), else the label index in ``--synsets`` (the
1,000 sorted ILSVRC wnids by default, the order of ``ILSVRC/imagenet-1k``'s labels). Its image id: an
``image_id`` column (our export), else ``path`` without that suffix and extension. Its boxes: an
``objects`` column (our export, the Hub's detection layout): ``bbox`` ``[x, y, w, h]`` in pixels, labelled
by the ``ClassLabel`` names of ``category``, measured on an image of the row's ``width`` x ``height`` (scaled
to the stored image as any stated size is, :mod:`eic_builder.boxes`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading

import pyarrow as pa

from eic_builder.scan.annotations import is_wnid
from eic_builder.scan.hub import image_id_of
from eic_builder.scan.samples import SampleFacts

PARQUET_SUFFIX = ".parquet"


def image_column(schema: pa.Schema) -> str | None:
    """The name of the first column of ``datasets``' Image type (a struct of ``bytes`` and ``path``), if any."""
    for field in schema:
        t = field.type
        if pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} >= {"bytes", "path"}:
            return field.name
    return None


def label_feature(schema: pa.Schema) -> tuple[str | None, list[str] | None]:
    """(the label column, its ``ClassLabel`` names) from the ``huggingface`` metadata; (None, None) without."""
    meta = (schema.metadata or {}).get(b"huggingface")
    features = {}
    if meta:
        try:
            features = json.loads(meta).get("info", {}).get("features", {}) or {}
        except (ValueError, AttributeError):
            features = {}
    for name, feature in features.items():
        if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and name in schema.names:
            names = feature.get("names")
            return name, names if isinstance(names, list) else None
    return ("label", None) if "label" in schema.names else (None, None)


def object_names(schema: pa.Schema) -> list[str] | None:
    """The ``ClassLabel`` names of the ``category`` of an ``objects`` column (the Hub's detection layout,
    and our ``export --format hf``), from the ``huggingface`` metadata; None when there is none."""
    meta = (schema.metadata or {}).get(b"huggingface")
    try:
        objects = json.loads(meta).get("info", {}).get("features", {}).get("objects") if meta else None
    except (ValueError, AttributeError):
        return None
    while isinstance(objects, dict) and "category" not in objects and isinstance(objects.get("feature"), dict):
        objects = objects["feature"]  # Sequence({...}) or List({...}) around the struct
    category = objects.get("category") if isinstance(objects, dict) else None
    while isinstance(category, dict) and category.get("_type") != "ClassLabel":
        category = category.get("feature")  # List(ClassLabel) in datasets >= 4
    names = category.get("names") if isinstance(category, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else None


def row_boxes(objects: object, names: list[str] | None) -> tuple[tuple, tuple]:
    """(boxes, why each other entry was left out) of a row's ``objects``: ``bbox`` ``[x, y, w, h]`` in pixels
    (COCO's convention) -> ``(label, x1, y1, x2, y2)`` corners, labelled by ``category``'s name."""
    from eic_builder.scan.annotations import coco_corners

    if isinstance(objects, list):  # datasets >= 4 may store List({...}) as a list of structs
        objects = {"bbox": [o.get("bbox") if isinstance(o, dict) else None for o in objects],
                   "category": [o.get("category") if isinstance(o, dict) else None for o in objects]}
    if not isinstance(objects, dict):
        return (), ()
    bboxes, categories = objects.get("bbox") or [], objects.get("category") or []
    boxes, bad = [], []
    for k, bbox in enumerate(bboxes):
        category = categories[k] if k < len(categories) else None
        try:
            corners = coco_corners(bbox)
        except ValueError as exc:
            bad.append(f"object {k}: bad bbox ({exc})")
            continue
        if names is None or not isinstance(category, int) or not 0 <= category < len(names):
            bad.append(f"object {k}: category {category!r} names no class (the file's category names: "
                       f"{len(names) if names is not None else 'none'})")
            continue
        boxes.append((names[category], *corners))
    return tuple(boxes), tuple(bad)


def row_facts(path_value: str | None, label: object, names: list[str] | None) -> tuple[str | None, SampleFacts]:
    """(the image id a row's ``path`` gives, or None; what the row says of its class): a label that is a
    wnid, or whose ``ClassLabel`` name is one, else the ``_<wnid>`` suffix of ``path``, else the label
    index (named through a synset list later, :func:`~eic_builder.scan.samples.class_of`)."""
    stem, wnid = image_id_of(path_value, hub_name=True) if path_value else (None, None)
    if isinstance(label, str) and is_wnid(label):  # a label column of wnids (export --format hf)
        return stem, SampleFacts(wnid=label)
    index = label if isinstance(label, int) and not isinstance(label, bool) and label >= 0 else None
    if index is not None and names is not None and index < len(names) and is_wnid(str(names[index])):
        return stem, SampleFacts(wnid=str(names[index]))
    return stem, SampleFacts(wnid=wnid, class_index=index if wnid is None else None)


class ParquetImages:
    """Reads rows' image bytes from Parquet files, one row group per file held at a time (a reader going
    through a file in order reads each row group once); safe to share between threads (one lock)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple] = {}  # path -> (ParquetFile, column, row group starts, cached group)
        self._lock = threading.Lock()

    def read(self, path: str, row: int) -> bytes | None:
        """The image bytes of row ``row`` of the Parquet file ``path`` (None for a null image); raises
        ``OSError``/``ValueError`` (pyarrow's) for a file that cannot be read, ``IndexError`` past its end."""
        import bisect

        import pyarrow.parquet as pq

        with self._lock:
            entry = self._files.get(path)
            if entry is None:
                handle = pq.ParquetFile(path)
                column = image_column(handle.schema_arrow)
                if column is None:
                    raise ValueError(f"{path} has no Image column")
                starts, total = [], 0
                for g in range(handle.metadata.num_row_groups):
                    starts.append(total)
                    total += handle.metadata.row_group(g).num_rows
                entry = self._files[path] = [handle, column, starts, total, -1, None]
            handle, column, starts, total, held, images = entry
            if not 0 <= row < total:
                raise IndexError(f"row {row} is past the {total:,} rows of {path}")
            group = bisect.bisect_right(starts, row) - 1
            if group != held:
                table = handle.read_row_group(group, columns=[column])
                images = table.column(column).combine_chunks().field("bytes")
                entry[4], entry[5] = group, images
            value = images[row - starts[group]].as_py()
        return value

    def close(self) -> None:
        """Forget every open file."""
        self._files.clear()


def read_parquet_rows(path: str, rel: str):
    """Yield ``(member path, row, bytes or None, facts, problem)`` of every row of the Parquet file ``path``
    (``rel`` relative to the scan root), a row group at a time. The member path is ``<rel>/<image id>`` with
    the image's extension: the image id the row gives (``image_id`` column, else its ``path``), else its
    row number. ``problem`` is why the file cannot be read as an image table (then nothing else comes)."""
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        yield rel, None, None, None, f"not a readable Parquet file ({str(exc).splitlines()[0][:160]})"
        return
    schema = handle.schema_arrow
    column = image_column(schema)
    if column is None:
        yield rel, None, None, None, None  # no image here: a table of another kind
        return
    label_name, names = label_feature(schema)
    box_names = object_names(schema) if "objects" in schema.names else None
    columns = [column] + [c for c in (label_name, "image_id", "objects", "width", "height")
                          if c is not None and c in schema.names]
    row = 0
    for group in range(handle.metadata.num_row_groups):
        table = handle.read_row_group(group, columns=columns)
        for member, data, facts in _group_rows(table, column, label_name, names, box_names, rel, row):
            yield member, row, data, facts, None
            row += 1


def _group_rows(table: pa.Table, column: str, label_name: str | None, names: list[str] | None,
                box_names: list[str] | None, rel: str, first_row: int):
    """``(member path, bytes or None, facts)`` of each row of one row group (see :func:`read_parquet_rows`);
    ``first_row`` is the file's row number of its first row."""
    images = table.column(column).combine_chunks()
    data, paths = images.field("bytes"), images.field("path")

    def values(name: str | None) -> list:
        return table.column(name).to_pylist() if name in table.column_names else [None] * len(table)

    labels, ids, objects, widths, heights = (values(c) for c in (label_name, "image_id", "objects", "width",
                                                                 "height"))
    for k in range(len(table)):
        path_value = paths[k].as_py()
        stem, facts = row_facts(path_value, labels[k], names)
        if "objects" in table.column_names:  # boxes measured on the image the row states the size of
            boxes, bad = row_boxes(objects[k], box_names)
            stated = [v if isinstance(v, int) and v > 0 else None for v in (widths[k], heights[k])]
            facts = dataclasses.replace(facts, boxes=boxes, bad_boxes=bad, box_width=stated[0], box_height=stated[1])
        image_id = ids[k] or stem or f"{os.path.basename(rel)}-{first_row + k}"
        extension = os.path.splitext(path_value or "")[1] or ".jpg"
        yield f"{rel}/{image_id}{extension}", data[k].as_py(), facts
