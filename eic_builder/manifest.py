"""Every pyarrow schema of the toolkit and all of its Parquet I/O.

A manifest directory (one per split) holds three tables:

* ``images.parquet``  one row per accepted image (or annotation-only image),
* ``boxes.parquet``   one row per accepted box,
* ``rejects.parquet`` one row per refused file or box, with a reason.

Boxes use the toolkit's single convention: float pixel coordinates
``x1, y1, x2, y2``, 0-based, ``x2``/``y2`` exclusive (``w = x2 - x1``).

Each file carries JSON metadata under the key ``eic`` (toolkit version,
command line, source root, table kind). Writes are atomic: a temporary file in
the same folder, then ``os.replace``. Reads check the schema and raise
:class:`~eic_builder.errors.ManifestError` when it differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from eic_builder.errors import ManifestError, OptionError, choices_text, first_line

METADATA_KEY = b"eic"

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=True),  # image class: wnid or category name
        pa.field("wnid", pa.string(), nullable=True),  # set when the label is an ImageNet wnid
        pa.field("path", pa.string(), nullable=True),  # image file, relative to the scan root
        pa.field("annotation", pa.string(), nullable=True),  # annotation file, relative to the root
        pa.field("width", pa.int32(), nullable=False),  # pixels
        pa.field("height", pa.int32(), nullable=False),  # pixels
        pa.field("has_image", pa.bool_(), nullable=False),
        pa.field("n_boxes", pa.int32(), nullable=False),
        pa.field("archive", pa.string(), nullable=True),  # tar holding the image, relative to the root
        pa.field("offset", pa.int64(), nullable=True),  # bytes: start of the image's data in the archive
        pa.field("size", pa.int64(), nullable=True),  # bytes of the image file or member, when read
        pa.field("sha1", pa.string(), nullable=True),  # content hash, hex (archives always; files with --hash)
        pa.field("ann_width", pa.int32(), nullable=True),  # pixels: the size the annotation states, if any;
        pa.field("ann_height", pa.int32(), nullable=True),  # it may disagree with width/height (the header's)
    ]
)

BOXES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("box_index", pa.int32(), nullable=False),  # order within the annotation
        pa.field("label", pa.string(), nullable=False),
        pa.field("wnid", pa.string(), nullable=True),
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),  # exclusive
        pa.field("y2", pa.float32(), nullable=False),  # exclusive
        pa.field("area_ratio", pa.float32(), nullable=False),  # box area / image area, in [0, 1]
        pa.field("is_small", pa.bool_(), nullable=False),
        pa.field("is_twisted", pa.bool_(), nullable=False),
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),  # file, relative to the scan root
        pa.field("image_id", pa.string(), nullable=True),
        pa.field("level", pa.string(), nullable=False),  # "file" or "box"
        pa.field("reason", pa.string(), nullable=False),  # a short code, see SCHEMA.md
        pa.field("detail", pa.string(), nullable=False),
    ]
)

# --- class lists and the WordNet noun index -----------------------------------------------------

EIC_CLASSES_SCHEMA = pa.schema(
    [
        pa.field("wnid", pa.string(), nullable=False),
        pa.field("lemma", pa.string(), nullable=False),
        pa.field("gloss", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # "ilsvrc1k" or "expanded"
        pa.field("lexname", pa.string(), nullable=False),  # WordNet lexicographer file
        pa.field("depth", pa.int16(), nullable=False),  # shortest hypernym path to entity.n.01
        pa.field("nearest_ilsvrc", pa.string(), nullable=False),  # nearest ILSVRC class (itself for ILSVRC)
        pa.field("ilsvrc_hops", pa.int16(), nullable=False),  # hypernym/hyponym edges to it (-1: unconnected)
        pa.field("image_count", pa.int64(), nullable=True),  # images per class, when real counts were given
        pa.field("image_count_source", pa.string(), nullable=False),
    ]
)

NOUN_INDEX_SCHEMA = pa.schema(
    [
        pa.field("wnid", pa.string(), nullable=False),
        pa.field("lemma", pa.string(), nullable=False),  # first lemma, underscores as spaces
        pa.field("gloss", pa.string(), nullable=False),
        pa.field("lexname", pa.string(), nullable=False),  # lexicographer file, e.g. noun.animal
        pa.field("depth", pa.int16(), nullable=False),  # shortest hypernym path to entity.n.01 (0)
        pa.field("hypernyms", pa.list_(pa.string()), nullable=False),  # hypernyms + instance hypernyms
    ]
)

ILSVRC_SCHEMA = pa.schema(
    [
        pa.field("class_index", pa.int32(), nullable=False),  # 0..999, the usual ILSVRC-2012 order
        pa.field("wnid", pa.string(), nullable=False),
        pa.field("lemma", pa.string(), nullable=False),
        pa.field("gloss", pa.string(), nullable=False),
    ]
)


SCHEMAS: dict[str, pa.Schema] = {
    "images": IMAGES_SCHEMA,
    "boxes": BOXES_SCHEMA,
    "rejects": REJECTS_SCHEMA,
    "eic_classes": EIC_CLASSES_SCHEMA,
    "wordnet_nouns": NOUN_INDEX_SCHEMA,
    "ilsvrc_classes": ILSVRC_SCHEMA,
    # "features" and "proposals" are added below, beside their helpers
}


def _schema_for(kind: str) -> pa.Schema:
    if kind not in SCHEMAS:
        raise ManifestError(f"unknown table kind {kind!r}; known: {choices_text(sorted(SCHEMAS))}")
    return SCHEMAS[kind]


def command_line() -> str:
    """The command line of this process, for provenance metadata."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def build_metadata(kind: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record stored in every file the toolkit writes."""
    from eic_builder import __version__

    meta: dict[str, Any] = {"kind": kind, "toolkit_version": __version__}
    if extra:
        meta.update(extra)
    return meta


def derived_metadata(parents: Mapping[str, Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """The provenance record of a manifest made from others (``filter``, ``split``, ``assemble``):
    this command, the image root of its parents (one parent's, or ``extra["source_root"]``), and the
    lineage, each parent with its own command and lineage. ``parents`` maps a parent's path to its meta."""
    roots = {str(meta.get("source_root", "")) for meta in parents.values()}
    record: dict[str, Any] = {"command": command_line(),
                              "source_root": roots.pop() if len(roots) == 1 else None,
                              "lineage": [{"manifest": str(Path(path).resolve()), "command": meta.get("command"),
                                           "lineage": meta.get("lineage", [])} for path, meta in parents.items()]}
    record.update(extra)
    return record


def empty_table(kind: str) -> pa.Table:
    """A zero-row table with the schema of ``kind``."""
    return _schema_for(kind).empty_table()


def to_table(kind: str, columns: Mapping[str, Any]) -> pa.Table:
    """Build a table of ``kind`` from column arrays (lists or numpy arrays), checking the schema."""
    schema = _schema_for(kind)
    missing = [f.name for f in schema if f.name not in columns]
    extra = [c for c in columns if c not in schema.names]
    if missing or extra:
        raise ManifestError(f"{kind} columns differ from the schema: missing {missing}, unexpected {extra}")
    try:
        return pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in schema}, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ManifestError(f"{kind} columns do not fit the schema: {exc}") from exc


# fc6 vectors are float16 noise to a compressor (zstd saves ~9 %) but zstd decoding caps a streaming
# reader at ~600 MB/s; stored plain, ``distances`` and ``audit`` read them ~4.5x faster.
UNCOMPRESSED_COLUMNS = {("features", "feature"): "none"}


def write_table(
    table: pa.Table, path: str | os.PathLike[str], kind: str, meta: Mapping[str, Any] | None = None,
    row_group_size: int | None = None,
) -> Path:
    """Write ``table`` as Parquet at ``path`` atomically, after checking it has the schema of ``kind``.

    ``meta`` is merged into the provenance record (see :func:`build_metadata`);
    ``row_group_size`` bounds the rows a streaming reader holds at once.
    """
    schema = _schema_for(kind)
    if not table.schema.equals(schema, check_metadata=False):
        try:
            table = table.select(schema.names).cast(schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            raise ManifestError(f"cannot write {kind} table: schema {table.schema} does not match {schema}") from exc
    record = build_metadata(kind, meta)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(record, sort_keys=True).encode()})
    compression = {name: UNCOMPRESSED_COLUMNS.get((kind, name), "zstd") for name in schema.names}
    return _write_atomically(path, lambda tmp: pq.write_table(table, tmp, compression=compression,
                                                              row_group_size=row_group_size))


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path`` for writing it before a rename: ``.NAME.tmp-PID``, with NAME cut so
    that the whole stays within the file system's 255-byte limit (``path``'s own name may use all of it)."""
    name = path.name.encode()[:200].decode("utf-8", "ignore")
    return path.with_name(f".{name}.tmp-{os.getpid()}")


def _write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it to ``path``. A full disk or a
    read-only folder raises :class:`ManifestError` and leaves the old file, if any, as it was."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write a file (a report, a plot) atomically: a temporary file in the same folder, then a rename."""
    return _write_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`write_bytes` for text (UTF-8)."""
    return write_bytes(path, text.encode())


def _parquet_schema(path: Path) -> pa.Schema:
    """The schema of a Parquet file; a missing, empty, damaged or non-Parquet file is a ManifestError."""
    if not path.is_file():
        raise ManifestError(f"no such manifest file: {path}")
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ManifestError(f"{path} is not a readable Parquet file ({first_line(exc)})") from exc


def schema_difference(found: pa.Schema, expected: pa.Schema) -> str:
    """The first difference between two schemas, in a few words."""
    for i, field_ in enumerate(expected):
        if i >= len(found):
            return f"column {field_.name!r} ({field_.type}) is missing"
        other = found.field(i)
        if other.name != field_.name:
            return f"column {i} is {other.name!r}, expected {field_.name!r}"
        if not other.type.equals(field_.type) or other.nullable != field_.nullable:
            return f"column {field_.name!r} is {other.type}{'' if other.nullable else ' not null'}, expected " \
                   f"{field_.type}{'' if field_.nullable else ' not null'}"
    return f"it has {len(found) - len(expected)} more column(s): {', '.join(found.names[len(expected):])}"


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record of a Parquet file written by the toolkit."""
    raw = (_parquet_schema(Path(path)).metadata or {}).get(METADATA_KEY)
    try:
        return json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ManifestError(f"{path} holds damaged toolkit metadata: {exc}") from exc


def _require_schema(path: Path, kind: str) -> pa.Schema:
    """The schema of ``kind``, after checking the Parquet file ``path`` has it (errors name the first difference)."""
    schema = _schema_for(kind)
    found = _parquet_schema(path).remove_metadata()
    if not found.equals(schema):
        raise ManifestError(f"{path} is not a {kind} table: {schema_difference(found, schema)}")
    return schema


def read_table(path: str | os.PathLike[str], kind: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file and check that it has the schema of ``kind`` (errors name the first difference)."""
    path = Path(path)
    _require_schema(path, kind)
    with parquet_errors_named(path):
        return pq.read_table(path, columns=columns)


@contextlib.contextmanager
def parquet_errors_named(path: str | os.PathLike[str], remedy: str = "write it again") -> Iterator[None]:
    """Turn pyarrow's and the file system's errors while reading the Parquet file ``path`` into one
    :class:`ManifestError` naming the file (damaged bytes, a truncated copy, a file that is no Parquet)."""
    try:
        yield
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ManifestError(f"{path} is damaged or not a Parquet file ({first_line(exc)}); {remedy}") from exc


@dataclass(frozen=True)
class Manifest:
    """The three tables of one manifest directory, as pyarrow tables."""

    root: Path
    images: pa.Table
    boxes: pa.Table
    rejects: pa.Table
    meta: dict[str, Any]


MANIFEST_FILES = {"images": "images.parquet", "boxes": "boxes.parquet", "rejects": "rejects.parquet"}


def manifest_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record of a manifest directory, after checking it is one, written whole (its three
    files from one write); the tables are read by :func:`read_manifest` or :func:`read_rows`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ManifestError(f"manifest directory {directory} does not exist")
    missing = [name for name in MANIFEST_FILES.values() if not (directory / name).is_file()]
    if missing:
        raise ManifestError(f"{directory} is not a manifest directory: missing {', '.join(missing)}")
    meta = read_metadata(directory / MANIFEST_FILES["images"])
    for name, size in meta.get("written_with", {}).items():
        found = (directory / name).stat().st_size
        if found != size:
            raise ManifestError(f"{directory} is a mix of two writes: its {name} ({found} bytes) is not the one "
                                f"its images.parquet was written with ({size} bytes); write the manifest again")
    return meta


def read_rows(path: str | os.PathLike[str], kind: str, keep: Callable[[pa.RecordBatch], pa.Array],
              batch_rows: int = 1 << 18) -> pa.Table:
    """The rows of the Parquet file ``path`` (schema ``kind``) for which ``keep(batch)`` (a boolean array per
    batch) is true, streamed batch by batch: the file is never held whole, so a 14-million-row manifest
    costs the rows kept, not its size."""
    path = Path(path)
    schema = _require_schema(path, kind)
    kept = []
    with parquet_errors_named(path):
        for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_rows):
            kept.append(batch.filter(keep(batch)))
    return pa.Table.from_batches(kept).replace_schema_metadata(None) if kept else schema.empty_table()


def read_manifest(directory: str | os.PathLike[str], box_columns: list[str] | None = None) -> Manifest:
    """Read ``images``, ``boxes`` and ``rejects`` from a manifest directory."""
    directory = Path(directory)
    meta = manifest_meta(directory)
    return Manifest(
        root=directory,
        images=read_table(directory / MANIFEST_FILES["images"], "images"),
        boxes=read_table(directory / MANIFEST_FILES["boxes"], "boxes", columns=box_columns),
        rejects=read_table(directory / MANIFEST_FILES["rejects"], "rejects"),
        meta=meta,
    )


FINGERPRINT_COLUMNS = ("image_id", "split", "label", "path", "archive", "offset", "size", "has_image")


def manifest_fingerprint(images: pa.Table) -> str:
    """A digest of what a manifest holds: each image's id, split, label and where its bytes lie, in order
    (16 hex digits). Two scans of the same files give the same fingerprint whatever their metadata; a
    rescan that changed any image gives another, so a stage can refuse results computed on other inputs."""
    import hashlib

    import pandas as pd

    frame = images.select(list(FINGERPRINT_COLUMNS)).to_pandas()
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha1(rows.tobytes() + str(len(frame)).encode()).hexdigest()[:16]


def manifest_name(directory: str | os.PathLike[str], images: pa.Table) -> str:
    """The name a manifest goes by in ``export`` and ``audit``: its one split, else its folder's name."""
    splits = sorted(set(images["split"].to_pylist()))
    return splits[0] if len(splits) == 1 else Path(directory).resolve().name


def check_distinct_names(named: Sequence[tuple[str, str | os.PathLike[str]]], remedy: str) -> None:
    """Raise :class:`OptionError` when two manifests of ``named`` ((name, directory) pairs) share a name;
    ``remedy`` ends the message."""
    seen: dict[str, str | os.PathLike[str]] = {}
    for name, directory in named:
        if name in seen:
            raise OptionError(f"manifests {seen[name]} and {directory} are both named {name!r} (their split); "
                              f"{remedy}")
        seen[name] = directory


def write_manifest(
    directory: str | os.PathLike[str],
    images: pa.Table,
    boxes: pa.Table,
    rejects: pa.Table,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write the three tables of a manifest directory as a whole or not at all.

    All three are written under temporary names first, so that a full disk or a kill leaves the old
    manifest as it was; then they are renamed into place, images.parquet last (its presence marks a
    complete manifest). images.parquet records the sizes of the other two, and :func:`read_manifest`
    refuses a directory whose files come from two different writes.
    """
    from eic_builder.rejects import REJECT_REASONS

    directory = Path(directory)
    unknown = sorted(set(rejects["reason"].to_pylist()) - REJECT_REASONS) if rejects.num_rows else []
    if unknown:  # a code nobody documented: a bug, caught before it reaches a user's table
        raise ManifestError(f"reject reason(s) {', '.join(unknown)} are not in eic_builder.rejects.REJECT_REASONS")
    meta = {k: v for k, v in (meta or {}).items() if k != "written_with"}  # a read manifest's own record
    staged = {name: directory / f".{name}.new-{os.getpid()}" for name in MANIFEST_FILES.values()}
    try:
        write_table(boxes, staged["boxes.parquet"], "boxes", meta)
        write_table(rejects, staged["rejects.parquet"], "rejects", meta)
        sizes = {name: staged[name].stat().st_size for name in ("boxes.parquet", "rejects.parquet")}
        write_table(images, staged["images.parquet"], "images", {**meta, "written_with": sizes})
        for name in ("boxes.parquet", "rejects.parquet", "images.parquet"):
            os.replace(staged[name], directory / name)
    except OSError as exc:
        raise ManifestError(f"cannot write the manifest {directory}: {exc.strerror or exc}") from exc
    finally:
        for path in staged.values():
            if path.exists():
                path.unlink()
    return directory


# --- fc6 feature shards -------------------------------------------------------------------------

FEATURE_DIM = 4096

FEATURE_BYTES = FEATURE_DIM * 2
# A feature is stored as 8,192 bytes: 4,096 little-endian float16 values. Parquet stores a
# fixed-size list with a repetition level per element, which reads about 10x slower than
# one fixed-size binary value per row (measured: 0.7 GiB in 8 s against 0.8 s).
FEATURES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("box_index", pa.int32(), nullable=False),  # -1 for whole-image features
        pa.field("label", pa.string(), nullable=True),  # the image's (or box's) class
        pa.field("feature", pa.binary(FEATURE_BYTES), nullable=False),  # fc6: 4096 x float16 ('<f2')
    ]
)
FEATURE_ROW_GROUP = 4096  # 32 MiB of features: what a streaming reader holds at once


def features_table(image_ids: list[str], box_index: list[int], labels: list[str | None], features) -> pa.Table:
    """A features table from N ids and an (N, 4096) array (stored as float16)."""
    import numpy as np

    feats = np.ascontiguousarray(features, dtype="<f2")
    if feats.ndim != 2 or feats.shape[1] != FEATURE_DIM or feats.shape[0] != len(image_ids):
        raise ManifestError(f"features must be ({len(image_ids)}, {FEATURE_DIM}); got {feats.shape}")
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(FEATURE_BYTES), len(feats),
                                                  [None, pa.py_buffer(feats.tobytes())])
    return pa.table({"image_id": pa.array(image_ids, pa.string()), "box_index": pa.array(box_index, pa.int32()),
                     "label": pa.array(labels, pa.string()), "feature": column}, schema=FEATURES_SCHEMA)


def feature_matrix(column: pa.Array | pa.ChunkedArray):
    """An (N, 4096) float16 numpy view of a ``feature`` column (zero-copy for one chunk)."""
    import numpy as np

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    data = column.buffers()[1]
    return np.frombuffer(data, dtype="<f2", count=len(column) * FEATURE_DIM,
                         offset=column.offset * FEATURE_BYTES).reshape(-1, FEATURE_DIM)


def feature_shards(directory: str | os.PathLike[str]) -> list[Path]:
    """The shard files of a features directory, in order; raises when there are none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ManifestError(f"features directory {directory} does not exist")
    shards = sorted(directory.glob("part-*.parquet"))
    if not shards:
        raise ManifestError(f"{directory} holds no feature shards (part-*.parquet); run `eic-build features` first")
    return shards


_FEATURES_REMEDY = "delete it and run `eic-build features` again (it makes the missing shards only)"


def _check_feature_shard(shard: Path) -> None:
    with parquet_errors_named(shard, _FEATURES_REMEDY):
        found = pq.read_schema(shard).remove_metadata()
    if not found.equals(FEATURES_SCHEMA):
        raise ManifestError(f"{shard} is not a features shard: {schema_difference(found, FEATURES_SCHEMA)}")


def iter_feature_batches(directory: str | os.PathLike[str], batch_rows: int = FEATURE_ROW_GROUP):
    """Stream (labels, (n, 4096) float16 array) over every shard, at most ``batch_rows`` rows at a time."""
    for shard in feature_shards(directory):
        _check_feature_shard(shard)
        with parquet_errors_named(shard, _FEATURES_REMEDY):
            # pre_buffer=False: read one row group at a time instead of the whole shard up front
            reader = pq.ParquetFile(shard, pre_buffer=False, buffer_size=8 << 20)
            for batch in reader.iter_batches(batch_size=batch_rows, columns=["label", "feature"]):
                yield batch.column("label").to_pylist(), feature_matrix(batch.column("feature"))


def read_image_features(directory: str | os.PathLike[str]) -> tuple[list[str], Any]:
    """(image ids, (n, 4096) float16 array) of the whole-image features (``box_index == -1``) in
    ``directory``, shard by shard; raises :class:`ManifestError` when it holds only box features."""
    import numpy as np
    import pyarrow.compute as pc

    ids: list[str] = []
    blocks = []
    for shard in feature_shards(directory):
        _check_feature_shard(shard)
        with parquet_errors_named(shard, _FEATURES_REMEDY):
            table = pq.read_table(shard, columns=["image_id", "box_index", "feature"])
        whole = table.filter(pc.equal(table["box_index"], -1))
        ids += whole["image_id"].to_pylist()
        blocks.append(np.array(feature_matrix(whole["feature"])) if whole.num_rows else
                      np.zeros((0, FEATURE_DIM), dtype="<f2"))
    if not ids:
        raise ManifestError(f"{directory} holds box features only; whole-image features come from "
                            "`eic-build features MANIFEST --on image`")
    return ids, np.concatenate(blocks)


# --- region proposals (eval-baseline) -----------------------------------------------------------

PROPOSALS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),  # 0 = best
        pa.field("score", pa.float32(), nullable=False),
        pa.field("x1", pa.float32(), nullable=False),  # original-image pixels, x2/y2 exclusive
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
    ]
)


# --- duplicates found by ``audit`` --------------------------------------------------------------

# One row per pair of images found alike by one method; side ``a`` comes first in the audit's order
# (manifests as given, images in manifest order). ``score``: 1.0 for ``exact`` (same SHA-1),
# ``1 - hamming / 64`` for ``perceptual`` (64-bit pHash), the cosine of the fc6 features for ``features``.
_SIDE = [("manifest", pa.string(), False), ("split", pa.string(), False), ("image_id", pa.string(), False),
         ("label", pa.string(), True)]
AUDIT_PAIRS_SCHEMA = pa.schema(
    [pa.field("method", pa.string(), nullable=False), pa.field("score", pa.float32(), nullable=False)]
    + [pa.field(f"{name}_{side}", kind, nullable=nullable) for side in "ab" for name, kind, nullable in _SIDE]
)
# One row per image in a group: the connected components of the pairs (all methods together).
AUDIT_GROUPS_SCHEMA = pa.schema(
    [pa.field("group", pa.int32(), nullable=False), pa.field("size", pa.int32(), nullable=False)]
    + [pa.field(name, kind, nullable=nullable) for name, kind, nullable in _SIDE]
)

SCHEMAS["features"] = FEATURES_SCHEMA
SCHEMAS["proposals"] = PROPOSALS_SCHEMA
SCHEMAS["audit_pairs"] = AUDIT_PAIRS_SCHEMA
SCHEMAS["audit_groups"] = AUDIT_GROUPS_SCHEMA


# --- Hugging Face export shards (``export --format hf``) -------------------------------------

# One row per image, as the Hugging Face ``datasets`` object-detection sets are laid out: the image
# (its encoded bytes), its size, and its boxes as ``objects`` (a struct of lists). ``bbox`` is
# ``[x, y, w, h]`` in pixels (COCO's convention, the one ``datasets`` detection sets use); ``category``
# indexes the class names stored in the ``huggingface`` schema metadata (a ``ClassLabel``).
HF_IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
HF_OBJECTS_TYPE = pa.struct([pa.field("bbox", pa.list_(pa.list_(pa.float32(), 4))),
                             pa.field("category", pa.list_(pa.int64()))])
HF_SCHEMA = pa.schema(
    [
        pa.field("image", HF_IMAGE_TYPE),
        pa.field("image_id", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("label", pa.string()),  # the image's class, named as --labels says; null without one
        pa.field("objects", HF_OBJECTS_TYPE),
    ]
)
HF_ROW_GROUP = 100  # images per row group: what the Hub's viewer and streaming readers expect of image sets


def hf_schema(class_names: list[str]) -> pa.Schema:
    """:data:`HF_SCHEMA` with the ``huggingface`` metadata ``datasets`` reads its features from.

    The features are written in the ``Sequence`` form that every ``datasets`` release since 2.0 reads
    (5.x still does; it writes ``List``), so that the files load there without conversion.
    """
    value = {"_type": "Value"}
    features = {
        "image": {"_type": "Image"},
        "image_id": {**value, "dtype": "string"},
        "width": {**value, "dtype": "int32"},
        "height": {**value, "dtype": "int32"},
        "label": {**value, "dtype": "string"},
        "objects": {"_type": "Sequence", "feature": {
            "bbox": {"_type": "Sequence", "length": 4, "feature": {**value, "dtype": "float32"}},
            "category": {"_type": "ClassLabel", "names": list(class_names)},
        }},
    }
    return HF_SCHEMA.with_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})


def write_hf_shard(table: pa.Table, path: str | os.PathLike[str], schema: pa.Schema) -> Path:
    """Write one shard of an ``export --format hf`` folder atomically, with ``schema`` (see :func:`hf_schema`)."""
    try:
        table = table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise ManifestError(f"cannot write {path}: schema {table.schema} does not match {schema}") from exc
    # zstd stores incompressible JPEG blocks raw at little cost, and shrinks the rest
    return _write_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="zstd",
                                                              row_group_size=HF_ROW_GROUP))
