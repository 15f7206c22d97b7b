"""Walk a tree, sort its files by role, and detect the annotation format.

Roles by file name (case-insensitive):

* images: ``.jpeg``, ``.jpg``, ``.png``;
* XML annotations: ``.xml``;
* Kaggle LOC tables: ``LOC_*_solution.csv``;
* COCO instances: ``.json``;
* everything else, and hidden files or folders (``.name``), is ignored by rule
  and counted in the scan's log.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from eic_builder.errors import FormatError, InputNotFoundError, OptionError
from eic_builder.scan.annotations import WNID_RE

FORMATS = ("auto", "ilsvrc-xml", "voc-xml", "loc-csv", "coco")
WNID_FORMATS = ("ilsvrc-xml", "loc-csv")  # formats whose box labels are ImageNet wnids
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})
LOC_CSV_RE = re.compile(r"^LOC_.*_solution\.csv$", re.IGNORECASE)
SPLIT_NAMES = ("train", "val", "test")
_NAME_RE = re.compile(rb"<name>\s*([^<]*?)\s*</name>")


@dataclass
class FileIndex:
    """The files of a tree by role, as paths relative to its root (``/``-separated, sorted)."""

    root: Path
    images: list[str] = field(default_factory=list)
    xmls: list[str] = field(default_factory=list)
    loc_csvs: list[str] = field(default_factory=list)
    jsons: list[str] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)

    @property
    def n_files(self) -> int:
        """Every file seen, ignored ones included."""
        return len(self.images) + len(self.xmls) + len(self.loc_csvs) + len(self.jsons) + sum(self.ignored.values())


def index_tree(root: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None) -> FileIndex:
    """Walk ``root`` in sorted order and sort its files by role; ``exclude`` is a folder to skip."""
    root = Path(root)
    if not root.exists():
        raise InputNotFoundError(f"ROOT {root} does not exist")
    if not root.is_dir():
        raise InputNotFoundError(f"ROOT {root} is not a directory")
    skip = Path(exclude).resolve() if exclude else None
    index = FileIndex(root=root)
    root_str = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(root_str):
        kept = []
        for d in sorted(dirnames):
            if d.startswith("."):
                index.ignored["hidden folder"] += 1
            elif skip is not None and Path(dirpath, d).resolve() == skip:
                continue
            else:
                kept.append(d)
        dirnames[:] = kept
        rel_dir = os.path.relpath(dirpath, root_str)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        images, xmls, jsons = index.images, index.xmls, index.jsons
        for name in sorted(filenames):
            dot = name.rfind(".")
            ext = name[dot:].lower() if dot > 0 else ""
            if name[0] == ".":
                index.ignored["hidden file"] += 1
            elif ext in IMAGE_EXTENSIONS:
                images.append(prefix + name)
            elif ext == ".xml":
                xmls.append(prefix + name)
            elif LOC_CSV_RE.match(name):
                index.loc_csvs.append(prefix + name)
            elif ext == ".json":
                jsons.append(prefix + name)
            else:
                index.ignored[f"not an image or annotation ({ext or 'no extension'})"] += 1
    return index


def _xml_flavour(root: Path, xmls: list[str], sample: int = 20) -> str:
    """``ilsvrc-xml`` when most objects in the sampled XMLs are named by wnid, else ``voc-xml``."""
    names: list[bytes] = []
    for rel in xmls[:sample]:
        try:
            names += _NAME_RE.findall((root / rel).read_bytes()[:65536])
        except OSError:
            continue
    n_wnids = sum(WNID_RE.match(n.decode("utf-8", "replace")) is not None for n in names)
    return "ilsvrc-xml" if not names or n_wnids * 2 > len(names) else "voc-xml"


def detect_format(index: FileIndex) -> str:
    """Pick the annotation format of a tree: COCO JSON, then LOC CSV, then XML (by flavour).

    A tree of images with no annotation at all scans as ``ilsvrc-xml`` (images
    with no boxes). Raises :class:`InputNotFoundError` when nothing is recognisable.
    """
    if index.jsons:
        return "coco"
    if index.loc_csvs:
        return "loc-csv"
    if index.xmls:
        return _xml_flavour(index.root, index.xmls)
    if index.images:
        return "ilsvrc-xml"
    raise InputNotFoundError(
        f"ROOT {index.root} holds no image (.JPEG/.jpg/.png) and no annotation (.xml, LOC_*_solution.csv, "
        f"COCO .json): {index.n_files} files seen"
    )


def split_of(rel_path: str, default: str | None = None) -> str | None:
    """The split named by the nearest ``train``/``val``/``test`` folder of a path (or by a
    ``LOC_<split>_solution.csv`` name), else ``default``."""
    parts = rel_path.split("/")[:-1]
    for part in reversed(parts):
        low = part.lower()
        if low in SPLIT_NAMES:
            return low
    name = rel_path.rsplit("/", 1)[-1]
    for split in SPLIT_NAMES:
        if name.lower().startswith(f"loc_{split}_"):
            return split
    return default


def check_format(fmt: str) -> str:
    """Validate a ``--format`` value."""
    if fmt not in FORMATS:
        raise FormatError(f"--format {fmt!r} is not known; choose one of {', '.join(FORMATS)}")
    return fmt


def select_split(index: FileIndex, split: str | None) -> tuple[FileIndex, str]:
    """Keep the files of one split and name it.

    A file's split is its nearest ``train``/``val``/``test`` folder; files with
    none (a COCO JSON at the root, say) belong to every split. With ``split``
    given, files of other splits are ignored by rule; without it, a tree that
    holds several splits is an error, and a tree with none is named after its
    root folder.
    """
    roles = ("images", "xmls", "loc_csvs", "jsons")
    splits = {role: [split_of(rel) for rel in getattr(index, role)] for role in roles}
    found = sorted({s for role in roles for s in splits[role] if s is not None})
    if split is None:
        if len(found) > 1:
            raise OptionError(
                f"ROOT {index.root} holds several splits ({', '.join(found)}); scan one at a time with --split NAME"
            )
        return index, found[0] if found else index.root.resolve().name
    if not found:
        return index, split
    kept = FileIndex(root=index.root, ignored=Counter(index.ignored))
    for role in roles:
        out = getattr(kept, role)
        for rel, s in zip(getattr(index, role), splits[role]):
            if s is None or s == split:
                out.append(rel)
            else:
                kept.ignored[f"other split ({s})"] += 1
    return kept, split
