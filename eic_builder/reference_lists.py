"""The committed facts under ``data_manifests/``: ImageNet synset lists and the ILSVRC-1k classes.

They are copied from well-kept sources, not typed in: timm's synset lists
(``timm/data/_info/``) and the ImageNet bounding-box synset list of chainercv
(``../shared/data/imagenet_bbox_synsets.txt``). Regenerate them with
``eic-build reference-lists``, which needs timm and WordNet 3.0 (for the lemma
and gloss of each ILSVRC class).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from eic_builder.dataset.schemas import ILSVRC_SCHEMA
from eic_builder.dataset.tables import read_table, write_table
from eic_builder.errors import InputNotFoundError, WordNetError

DATA_MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"
ILSVRC_CLASSES_FILE = "ilsvrc1k_classes.parquet"
POOL_FILES = {
    "bbox": "imagenet_bbox_synsets.txt",  # 3,627 synsets with bounding boxes (chainercv)
    "21k": "imagenet21k_synsets.txt",  # 21,841 fall-2011 synsets (timm imagenet22k_synsets.txt)
}
MIN500_FILE = "imagenet21k_miil_synsets.txt"  # ImageNet-21K-P classes with >= 500 images (timm)



def data_manifests_dir() -> Path:
    """The ``data_manifests/`` folder of this checkout (``EIC_DATA_MANIFESTS`` overrides it)."""
    return Path(os.environ.get("EIC_DATA_MANIFESTS", DATA_MANIFESTS))


def read_wnid_list(path: str | os.PathLike[str]) -> list[str]:
    """A synset list: one wnid per line (``.txt``), or the ``wnid`` column of a Parquet file.

    One rule for both (:func:`check_wnids`): every entry must be a wnid as written (``n`` and 8 digits:
    no stray whitespace, no upper case, no number), and the list must hold at least one. In a text file
    blank lines and ``#`` comments are skipped. Raises :class:`WordNetError` naming the file, the line or
    row and the bad value, or :class:`InputNotFoundError` for a missing file or an empty list.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"synset list {path} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        from eic_builder.dataset.tables import parquet_errors_named

        with parquet_errors_named(path, "give a class list with a wnid column, or a text file of wnids"):
            column = pq.read_table(path, columns=["wnid"])["wnid"]
        return check_wnids(path, column.to_pylist())
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputNotFoundError(f"synset list {path} cannot be read as UTF-8 text: {exc}") from exc
    entries = [(n, text) for n, line in enumerate(lines, start=1) if (text := line.split("#", 1)[0].strip())]
    return check_wnids(path, [text for _, text in entries], [f":{n}" for n, _ in entries])


def check_wnids(path: str | os.PathLike[str], values: list[object], places: list[str] | None = None) -> list[str]:
    """``values``, the wnids of the class list ``path`` (at ``places``, each written after the path:
    ``" row 3"`` by default, ``":3"`` for a text file's line 3), checked by the
    one rule of every class list: each a wnid as written, at least one. Raises :class:`WordNetError`
    naming the file, the place and the value, or :class:`InputNotFoundError` for an empty list."""
    from eic_builder.wordnet import offset_of

    places = places or [f" row {i}" for i in range(len(values))]
    for where, value in zip(places, values):
        if not isinstance(value, str):
            raise WordNetError(f"{path}{where}: {value!r} is not a wnid: expected the text 'n' followed by 8 "
                               "digits, e.g. 'n01440764'")
        try:
            offset_of(value)
        except WordNetError as exc:
            raise WordNetError(f"{path}{where}: {exc}") from None
    if not values:
        raise InputNotFoundError(f"synset list {path} holds no wnid: give one wnid a line (n01440764), or a "
                                 "Parquet file with a wnid column")
    return list(values)  # type: ignore[arg-type]  # each checked to be a str above


def ilsvrc_classes() -> pa.Table:
    """The committed ILSVRC-2012 classes (class_index, wnid, lemma, gloss)."""
    return read_table(data_manifests_dir() / ILSVRC_CLASSES_FILE, "ilsvrc_classes")


def write_reference_lists(out: Path, bbox_list: Path) -> list[Path]:
    """Write the lists from timm and ``bbox_list`` into ``out``; returns the files written."""
    from importlib.resources import files

    from eic_builder.wordnet import load_wordnet_index

    info = files("timm") / "data" / "_info"
    out.mkdir(parents=True, exist_ok=True)
    ilsvrc = [w.strip() for w in (info / "imagenet_synsets.txt").read_text().splitlines() if w.strip()]
    index = load_wordnet_index()
    rows = [index.position(w) for w in ilsvrc]
    table = pa.table({"class_index": pa.array(range(len(ilsvrc)), pa.int32()), "wnid": ilsvrc,
                      "lemma": [index.lemmas[i] for i in rows], "gloss": [index.glosses[i] for i in rows]},
                     schema=ILSVRC_SCHEMA)
    written = [write_table(table, out / ILSVRC_CLASSES_FILE, "ilsvrc_classes",
                           {"source": "timm/data/_info/imagenet_synsets.txt + WordNet 3.0"})]
    for name, src in ((POOL_FILES["21k"], info / "imagenet22k_synsets.txt"),
                      (MIN500_FILE, info / "imagenet21k_miil_synsets.txt"),
                      (POOL_FILES["bbox"], bbox_list)):
        wnids = [w.strip() for w in Path(str(src)).read_text().splitlines() if w.strip()]
        (out / name).write_text("".join(f"{w}\n" for w in wnids))
        written.append(out / name)
    return written
