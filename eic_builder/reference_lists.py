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

    Blank lines and ``#`` comments are skipped. Raises :class:`WordNetError` naming a malformed line.
    """
    from eic_builder.wordnet import offset_of

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"synset list {path} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        from eic_builder.dataset.tables import parquet_errors_named

        with parquet_errors_named(path, "give a class list with a wnid column, or a text file of wnids"):
            wnids = pq.read_table(path, columns=["wnid"])["wnid"].to_pylist()
    else:
        wnids = []
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                offset_of(text)
            except WordNetError as exc:
                raise WordNetError(f"{path}:{line_no}: {exc}") from exc
            wnids.append(text)
    return wnids


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
