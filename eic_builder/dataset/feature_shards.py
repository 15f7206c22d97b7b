"""The fc6 feature-shard codec: ``part-*.parquet`` files of :data:`~eic_builder.dataset.schemas.FEATURES_SCHEMA`,
one 4,096-d float16 vector per row (8,192 bytes, little-endian), written by ``features`` and streamed by
``stats``, ``audit`` and ``distances``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from eic_builder.dataset.schemas import FEATURE_BYTES, FEATURE_DIM, FEATURE_ROW_GROUP, FEATURES_SCHEMA
from eic_builder.dataset.tables import parquet_errors_named, schema_difference
from eic_builder.errors import ManifestError


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
