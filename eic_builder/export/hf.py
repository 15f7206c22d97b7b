"""A Hugging Face dataset folder: Parquet shards with the images inside, and a dataset card.

``data/<split>-<i>-of-<n>.parquet`` holds one row per image (schema: :data:`eic_builder.dataset.schemas.HF_SCHEMA`):
the image's encoded bytes, its id, size, class, and its boxes as ``objects`` (``bbox`` in COCO's
``[x, y, w, h]`` pixels, ``category`` a ``ClassLabel``), the layout of the Hub's object-detection
sets. ``datasets.load_dataset(DIR)`` reads the card's ``configs``; ``load_dataset("parquet",
data_files=...)`` reads the same features from the shards' metadata. The bytes go in whatever the
source is (a loose file or an archive member): a dataset to share carries its images.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa

from eic_builder.atomic_files import write_text
from eic_builder.boxes import to_xywh
from eic_builder.dataset.schemas import hf_schema
from eic_builder.dataset.tables import write_hf_shard
from eic_builder.errors import OptionError
from eic_builder.export.source import ExportSplit
from eic_builder.progress import progress
from eic_builder.safe_names import child_path, path_component

SHARD_BYTES = 256 << 20  # image bytes per shard: small enough to upload and stream, few enough files
SPLIT_NAME_RE = re.compile(r"^\w+(\.\w+)*$")  # what `datasets` accepts as a split name


def check_split_names(names: Sequence[str]) -> None:
    """Raise :class:`OptionError` for a manifest name that ``datasets`` refuses as a split name."""
    for name in names:
        if not SPLIT_NAME_RE.match(name):
            raise OptionError(f"split name {name!r} is not one datasets accepts (letters, digits, _ and "
                              "dots between them); give the manifest a split with `scan --split NAME`")


def write_split_shards(split: ExportSplit, names: Mapping[str, str], categories: Sequence[str], data_dir: Path,
                       shard_bytes: int = SHARD_BYTES) -> list[Path]:
    """Write ``split`` as shards ``data_dir/<name>-<i>-of-<n>.parquet``; returns their paths in order.

    ``names`` maps a label to its exported name; ``categories`` are the exported class names in
    ``ClassLabel`` order.
    """
    schema = hf_schema(list(categories))
    position = {name: k for k, name in enumerate(categories)}
    category_of = {label: position[name] for label, name in names.items() if name in position}
    reader = split.manifest.reader() if split.images else None
    # an earlier export's shards: replaced, not mixed
    for stale in data_dir.glob(f"{glob.escape(path_component(split.name))}-*.parquet"):
        stale.unlink()
    written: list[Path] = []
    rows: dict[str, list] = {name: [] for name in schema.names}
    held = 0

    def flush() -> None:
        nonlocal held
        path = child_path(data_dir, f"{split.name}-{len(written):05d}", suffix=".parquet.part")
        written.append(write_hf_shard(pa.table(rows), path, schema))
        for column in rows.values():
            column.clear()
        held = 0

    try:
        for image in progress(split.images, desc=f"hf {split.name}", unit="img"):
            data = reader.read(image.ref)
            boxes = split.boxes.get(image.image_id, [])
            rows["image"].append({"bytes": data, "path": path_component(image.image_id, image.extension)})
            rows["image_id"].append(image.image_id)
            rows["width"].append(image.width)
            rows["height"].append(image.height)
            rows["label"].append(names[image.label] if image.label is not None else None)
            rows["objects"].append({"bbox": [list(to_xywh(b.x1, b.y1, b.x2, b.y2)) for b in boxes],
                                    "category": [category_of[b.label] for b in boxes]})
            held += len(data)
            if held >= shard_bytes:
                flush()
        if rows["image_id"] or not written:
            flush()
    finally:
        split.manifest.close()
    final = []
    for i, part in enumerate(written):
        path = child_path(data_dir, f"{split.name}-{i:05d}-of-{len(written):05d}", suffix=".parquet")
        part.replace(path)
        final.append(path)
    return final


def dataset_card(splits: Sequence[ExportSplit], table_md: str, command: str) -> str:
    """The README.md of the folder: the ``configs`` that ``load_dataset(DIR)`` reads, how to load it,
    the box convention, the dataset table, and each manifest's provenance."""
    from eic_builder import __version__

    data_files = "".join(f"  - split: {s.name}\n    path: \"data/{s.name}-*.parquet\"\n" for s in splits)
    provenance = {s.name: {"manifest": str(s.directory.resolve()), **s.meta} for s in splits}
    first = splits[0].name if splits else "train"
    return (
        "---\nconfigs:\n- config_name: default\n  data_files:\n" + data_files +
        "task_categories:\n- object-detection\n---\n\n"
        f"# EIC, exported by eic-build {__version__}\n\n"
        f"Made with `{command}`.\n\n"
        "## Loading\n\n```python\nfrom datasets import load_dataset\n\n"
        f"ds = load_dataset(\"path/to/this/folder\")          # splits: {', '.join(s.name for s in splits)}\n"
        f"ds[\"{first}\"][0][\"image\"]                            # a PIL image\n```\n\n"
        "One row per image: `image` (the encoded bytes), `image_id`, `width`, `height` (pixels), `label` "
        "(the image's class) and `objects`: `bbox` as `[x, y, w, h]` in pixels (COCO's convention: "
        "`x, y` the top-left corner, 0-based) and `category` (a `ClassLabel`).\n\n"
        "## Dataset table\n\n" + table_md.rstrip() + "\n\n"
        "## Provenance\n\nEach split's manifest and how it was made (command, source, lineage):\n\n"
        "```json\n" + json.dumps(provenance, indent=2, sort_keys=True, default=str) + "\n```\n"
    )


def write_card(out: Path, splits: Sequence[ExportSplit], table_md: str, command: str) -> Path:
    """Write the dataset card ``out/README.md``."""
    return write_text(out / "README.md", dataset_card(splits, table_md, command))
