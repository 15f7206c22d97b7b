"""All of the toolkit's Parquet I/O: tables written atomically with their schema checked and their
provenance record (JSON under the key ``eic``), read back with the schema checked (errors name the
first difference), streamed by row batch, or wrapped so that a damaged file is named.

Schemas: :mod:`eic_builder.dataset.schemas`; manifests: :mod:`eic_builder.dataset.manifest`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from eic_builder.atomic_files import write_atomically
from eic_builder.dataset.schemas import HF_ROW_GROUP, METADATA_KEY, SCHEMAS
from eic_builder.errors import ManifestError, choices_text, first_line
from eic_builder.version import __version__


def _schema_for(kind: str) -> pa.Schema:
    if kind not in SCHEMAS:
        raise ManifestError(f"unknown table kind {kind!r}; known: {choices_text(sorted(SCHEMAS))}")
    return SCHEMAS[kind]


def command_line() -> str:
    """The command line of this process, for provenance metadata."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def build_metadata(kind: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record stored in every file the toolkit writes."""
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
    return write_atomically(path, lambda tmp: pq.write_table(table, tmp, compression=compression,
                                                              row_group_size=row_group_size))


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



def write_hf_shard(table: pa.Table, path: str | os.PathLike[str], schema: pa.Schema) -> Path:
    """Write one shard of an ``export --format hf`` folder atomically, with ``schema`` (see :func:`hf_schema`)."""
    try:
        table = table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise ManifestError(f"cannot write {path}: schema {table.schema} does not match {schema}") from exc
    # zstd stores incompressible JPEG blocks raw at little cost, and shrinks the rest
    return write_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="zstd",
                                                              row_group_size=HF_ROW_GROUP))
