"""Walk a tree, sort its files by role, and detect the annotation format.

Roles by file name (case-insensitive):

* images: ``.jpeg``, ``.jpg``, ``.png``;
* XML annotations: ``.xml``;
* Kaggle LOC tables: ``LOC_*_solution.csv``;
* COCO instances: ``.json``;
* archives: ``.tar``, ``.tar.gz``, ``.tgz`` (read in place, see :mod:`eic_builder.scan.archives`);
* everything else, and hidden files or folders (``.name``), is ignored by rule
  and counted in the scan's log.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from eic_builder.choices import SCAN_FORMATS as FORMATS
from eic_builder.dataset.rows import RejectRow
from eic_builder.errors import FormatError, InputNotFoundError, OptionError
from eic_builder.rejects import Rejected
from eic_builder.scan.annotations import WNID_RE, is_wnid, load_json
from eic_builder.scan.archives import ImageProbe, archive_kind, strip_archive_suffix
from eic_builder.scan.hub import hub_set, hub_split
from eic_builder.scan.parquet_images import PARQUET_SUFFIX
from eic_builder.scan.samples import SampleFacts

log = logging.getLogger(__name__)

WNID_FORMATS = ("ilsvrc-xml", "loc-csv")  # formats whose box labels are ImageNet wnids
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png", ".webp"})
LOC_CSV_RE = re.compile(r"^LOC_.*_solution\.csv$", re.IGNORECASE)
SPLIT_NAMES = ("train", "val", "test")
# the official ILSVRC downloads name their split: ILSVRC2012_img_train.tar, ILSVRC2012_img_train_t3.tar,
# ILSVRC2012_img_val.tar, ILSVRC2012_img_test_v10102019.tar, ILSVRC2012_bbox_train_v2.tar.gz, ILSVRC2012_bbox_val_v3.tgz
OFFICIAL_RE = re.compile(r"^ilsvrc\d{4}_(?:img|bbox)_(train|val|test)(?:_[a-z0-9]+)*\.(?:tar|tar\.gz|tgz)$")
_NAME_RE = re.compile(rb"<name>\s*([^<]*?)\s*</name>")
_DATABASE_RE = re.compile(rb"<database>\s*([^<]*?)\s*</database>")


@dataclass
class FileIndex:
    """The files of a tree by role, as paths relative to its root (``/``-separated, sorted).

    ``archives`` are tars found (or given); once read, their image and XML members join ``images``
    and ``xmls`` with their probes in ``member_images`` and their bytes in ``member_xmls``.
    """

    root: Path
    name: str = ""  # the split name when no split folder is found: the (first) source's name
    images: list[str] = field(default_factory=list)
    xmls: list[str] = field(default_factory=list)
    loc_csvs: list[str] = field(default_factory=list)
    jsons: list[str] = field(default_factory=list)
    archives: list[str] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    rejects: list[RejectRow] = field(default_factory=list)  # rows of the rejects table found while walking
    member_images: dict[str, ImageProbe] = field(default_factory=dict)
    member_xmls: dict[str, bytes] = field(default_factory=dict)
    member_samples: dict[str, SampleFacts] = field(default_factory=dict)  # webdataset key -> its metadata

    @property
    def n_files(self) -> int:
        """Every file seen, ignored ones included (archives count once, their members are counted when read)."""
        return (len(self.images) + len(self.xmls) + len(self.loc_csvs) + len(self.jsons) + len(self.archives)
                + sum(self.ignored.values()))

    def add_file(self, rel: str) -> None:
        """Sort one file, ``rel`` relative to the root, by its role."""
        name = rel.rsplit("/", 1)[-1]
        dot = name.rfind(".")
        ext = name[dot:].lower() if dot > 0 else ""
        if name[0] == ".":
            self.ignored["hidden file"] += 1
        elif ext in IMAGE_EXTENSIONS:
            self.images.append(rel)
        elif ext == ".xml":
            self.xmls.append(rel)
        elif LOC_CSV_RE.match(name):
            self.loc_csvs.append(rel)
        elif ext == ".json":
            self.jsons.append(rel)
        elif archive_kind(name) is not None or ext == PARQUET_SUFFIX:  # a Parquet image table reads like one
            self.archives.append(rel)
        else:
            self.ignored[f"not an image or annotation ({ext or 'no extension'})"] += 1


OUTPUT_FILES = frozenset({"images.parquet", "boxes.parquet", "rejects.parquet"})  # a manifest's files


def _walk(index: FileIndex, folder: str, prefix: str, skip: Path | None) -> None:
    """Add the files under ``folder`` (sorted, depth first, without recursion, so any depth works) with
    paths ``prefix + relative path``; in the folder ``skip`` (the scan's --out) the manifest files are left
    out. Symlinked folders are followed, once each (a loop is counted);
    an unreadable folder is a reject; FIFOs, sockets, devices and broken links are counted, never opened."""
    def identity(path: str) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_dev, st.st_ino

    # folders by (device, inode): one stat each, where a realpath would walk every level of a deep tree
    seen = {identity(folder)}
    out_id = identity(skip) if skip is not None and skip.is_dir() else None
    stack = [(folder, prefix)]
    while stack:
        path, sub = stack.pop()
        in_out = identity(path) == out_id
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            index.rejects.append(RejectRow(sub.rstrip("/") or ".", None, "file", "unreadable",
                                  f"folder not readable: {exc.strerror}; its files are not scanned"))
            continue
        folders = []
        for entry in entries:
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:  # bytes that are not UTF-8: no Parquet string can hold the name
                shown = entry.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                index.rejects.append(RejectRow(sub + shown, None, "file", "bad_file_name",
                                      "the name is not UTF-8; rename it (its bytes are shown escaped)"))
                continue
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()  # both follow symlinks
            except OSError:
                is_dir = is_file = False
            if is_dir:
                st = entry.stat()
                if entry.name.startswith("."):
                    index.ignored["hidden folder"] += 1
                elif (st.st_dev, st.st_ino) in seen:
                    index.ignored["symlinked folder already scanned (a loop or a second link)"] += 1
                else:
                    seen.add((st.st_dev, st.st_ino))
                    folders.append((entry.path, f"{sub}{entry.name}/"))
            elif is_file and in_out and entry.name in OUTPUT_FILES:
                # --out inside a source: only the manifest this scan writes is left out; the source's own
                # images there (a class folder given as --out) are scanned like any other
                index.ignored["the manifest this scan writes (--out inside a source)"] += 1
            elif is_file:
                index.add_file(sub + entry.name)
            else:
                index.ignored["not a regular file (FIFO, socket, device or broken link)"] += 1
        stack.extend(reversed(folders))


def index_tree(root: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None) -> FileIndex:
    """Walk ``root`` in sorted order and sort its files by role; ``exclude`` is a folder to skip."""
    return index_sources([root], exclude)


def index_sources(sources: Sequence[str | os.PathLike[str]],
                  exclude: str | os.PathLike[str] | None = None) -> FileIndex:
    """Index every SOURCE (a folder, an archive, or an annotation file) under one root.

    One folder is its own root (paths relative to it); otherwise the root is the
    deepest folder holding every source, and each source's paths start with its
    place under it (``fall11_whole.tar/n01440764.tar/n01440764_1.JPEG``).
    """
    paths = _checked_sources(sources)
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
    else:
        root = Path(os.path.commonpath([os.fspath((p if p.is_dir() else p.parent).resolve()) for p in paths]))
    skip = Path(exclude).resolve() if exclude else None
    index = FileIndex(root=root, name=_source_name(paths[0]))
    seen: set[str] = set()
    for path in paths:
        rel = "" if path.is_dir() and path.resolve() == root.resolve() else \
            os.path.relpath(path.resolve(), root.resolve()).replace(os.sep, "/")
        if rel in seen:
            raise InputNotFoundError(f"SOURCE {path} is given twice")
        seen.add(rel)
        if path.is_dir():
            _walk(index, os.fspath(path), rel + "/" if rel else "", skip)
        else:
            index.add_file(rel)
    for role in ("images", "xmls", "loc_csvs", "jsons", "archives"):
        getattr(index, role).sort()
    keep_coco_jsons(index)
    return index


def _checked_sources(sources: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The SOURCEs as paths; raises :class:`InputNotFoundError` for none, a missing one or one of another kind."""
    if not sources:
        raise InputNotFoundError("give at least one SOURCE (a folder, a .tar or a .tar.gz)")
    paths = [Path(s) for s in sources]
    for path in paths:
        if not path.exists():
            raise InputNotFoundError(f"SOURCE {path} does not exist")
        if not (path.is_dir() or path.is_file()):
            raise InputNotFoundError(f"SOURCE {path} is neither a folder nor a regular file")
    return paths


def _source_name(first: Path) -> str:
    """The name a scan of ``first`` (its first SOURCE) goes by: a folder's name, an archive's without suffix."""
    first = first.resolve()
    if first.is_dir():
        return first.name
    return strip_archive_suffix(first.name) if archive_kind(first.name) else first.stem


COCO_KEYS = (b'"images"', b'"annotations"', b'"categories"')


def is_coco_json(path: Path) -> bool:
    """Whether the JSON file ``path`` names ``images``, ``annotations`` and ``categories`` (looked for in its
    bytes, so a 500 MB file is not parsed twice). An unreadable file counts as COCO: the COCO reader then
    reports it as a reject, with its reason."""
    import mmap

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return False
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return all(data.find(key) >= 0 for key in COCO_KEYS)
    except OSError:
        return True


def keep_coco_jsons(index: FileIndex) -> None:
    """Keep the COCO instances files among the JSON files; a JSON file that does not parse (cut short,
    not UTF-8, nested too deep) is a ``malformed_json`` reject, and only one that parses and lacks COCO's
    keys (``imagenet_class_index.json`` sits in many ImageNet folders) is counted as ignored by rule: one
    stray JSON must not turn a tree of XML or LOC CSV annotations into a COCO scan."""
    coco = []
    for rel in index.jsons:
        if is_coco_json(index.root / rel):
            coco.append(rel)
            continue
        try:
            load_json(index.root / rel)
        except Rejected as exc:
            index.rejects.append(RejectRow(rel, None, "file", exc.reason, exc.detail))
            continue
        except OSError:  # read a moment ago: the COCO reader reports it, with its reason
            coco.append(rel)
            continue
        index.ignored["JSON that is not COCO instances (no images, annotations and categories)"] += 1
    index.jsons = coco


def _xml_flavour(root: Path, xmls: list[str], members: dict[str, bytes], sample: int = 20) -> str:
    """``voc-xml`` or ``ilsvrc-xml``, the two XML conventions (1-based vs 0-based corners), by the sampled XMLs.

    A ``<database>`` that names its dataset decides (``The VOC2012 Database``, ``ILSVRC_2012``, and the
    ``eic-build export --format voc`` files, which name PASCAL VOC): the convention belongs to the
    dataset, not to its labels, and VOC-style XML labelled by wnid is common. Without one, the labels
    decide: ``ilsvrc-xml`` when most objects are named by wnid.
    """
    names: list[bytes] = []
    votes: Counter[str] = Counter()
    for rel in xmls[:sample]:
        try:
            data = members[rel] if rel in members else (root / rel).read_bytes()
        except OSError:
            continue
        head = data[:65536]
        names += _NAME_RE.findall(head)
        database = _DATABASE_RE.search(head)
        if database is not None:
            text = database.group(1).upper()
            if b"VOC" in text:
                votes["voc-xml"] += 1
            elif b"ILSVRC" in text or b"IMAGENET" in text:
                votes["ilsvrc-xml"] += 1
    if votes:
        return votes.most_common(1)[0][0]
    n_wnids = sum(WNID_RE.match(n.decode("utf-8", "replace")) is not None for n in names)
    return "ilsvrc-xml" if not names or n_wnids * 2 > len(names) else "voc-xml"


def detect_format(index: FileIndex) -> str:
    """Pick the annotation format of a tree: COCO JSON, then LOC CSV, then XML (by flavour).

    Parquet image tables whose rows carry boxes (``objects``) named by words scan as ``coco`` (their
    convention; no wnid check). A tree of images with no other annotation scans as ``ilsvrc-xml`` (images
    with no boxes, or boxes named by wnids). Raises :class:`InputNotFoundError` when nothing is recognisable.
    """
    if index.jsons:
        return "coco"
    if index.loc_csvs:
        return "loc-csv"
    if index.xmls:
        return _xml_flavour(index.root, index.xmls, index.member_xmls)
    labels = {box[0] for facts in index.member_samples.values() for box in facts.boxes or ()}
    if labels and not all(is_wnid(str(label)) for label in labels):
        return "coco"  # Parquet rows' own boxes (COCO's convention) named by words, not wnids
    if index.images:
        return "ilsvrc-xml"
    raise InputNotFoundError(
        f"{index.root} holds no image (.JPEG/.jpg/.png) and no annotation (.xml, LOC_*_solution.csv, "
        f"COCO .json), in folders or archives: {index.n_files} files seen"
    )


def split_of(rel_path: str, default: str | None = None) -> str | None:
    """The split a path names, nearest part first: a ``train``/``val``/``test`` folder, or an official
    ILSVRC download (``ILSVRC2012_img_train.tar``, ``ILSVRC2012_bbox_val_v3.tgz``) or its Hub form
    (:func:`~eic_builder.scan.hub.hub_split`: ``imagenet1k-validation-07.tar``, ``val_images.tar.gz``),
    the archive and everything inside it, or a ``LOC_<split>_solution.csv`` file; else ``default``."""
    parts = rel_path.split("/")
    for k, part in enumerate(reversed(parts)):
        low = part.lower()
        if k > 0 and low in SPLIT_NAMES:
            return low
        official = OFFICIAL_RE.match(low)
        if official is not None:
            return official.group(1)
        hub = hub_split(part)
        if hub is not None:
            return hub
    name = parts[-1].lower()
    for split in SPLIT_NAMES:
        if name.startswith(f"loc_{split}_"):
            return split
    return default


def check_format(fmt: str) -> str:
    """Validate a ``--format`` value."""
    if fmt not in FORMATS:
        raise FormatError(f"`fmt` {fmt!r} is not known; choose one of {', '.join(FORMATS)}")
    return fmt


def select_split(index: FileIndex, split: str | None) -> tuple[FileIndex, str]:
    """Keep the files of one split and name it.

    A file's split is what its path names (:func:`split_of`). Annotation files that name none (a COCO
    JSON at the root, say) serve every split: they only give boxes to images of the split. Images and
    archives that name none, beside others that do, cannot be told apart: with ``split`` given that is
    an error naming them (never "of every split"), without it a warning. With ``split`` given, files of
    other splits are ignored by rule; without it, a tree that holds several splits is an error, and a
    tree with none is named after its root folder.
    """
    roles = ("images", "xmls", "loc_csvs", "jsons", "archives")
    splits = {role: [split_of(rel) for rel in getattr(index, role)] for role in roles}
    found = sorted({s for role in roles for s in splits[role] if s is not None})
    _check_untold(index, splits, found, split)
    if split is None:
        if len(found) > 1:
            raise OptionError(
                f"{index.root} holds several splits ({', '.join(found)}); scan one at a time with `split` NAME"
            )
        return index, found[0] if found else _shard_set_name(index) or index.name or index.root.resolve().name
    if not found:
        return index, split
    if split not in found:
        raise _no_file_of(index.root, split, found)
    return _files_of(index, splits, split), split


def _check_untold(index: FileIndex, splits: dict[str, list[str | None]], found: list[str], split: str | None) -> None:
    """Images and archives that name no split beside others that do: an error with ``split`` given, else
    a warning."""
    untold = [rel for role in ("images", "archives") for rel, s in zip(getattr(index, role), splits[role])
              if s is None] if found else []
    if not untold:
        return
    what = (f"{len(untold):,} image file(s) or archive(s) name no split ({', '.join(untold[:3])}"
            f"{', ...' if len(untold) > 3 else ''}) beside others that name {', '.join(found)}")
    if split is not None:
        raise OptionError(f"{index.root}: {what}; put them in a train/val/test folder, give them their "
                          "official names (ILSVRC2012_img_train.tar, ...), or scan them on their own")
    log.warning("%s: %s; they are scanned as %s", index.root, what, found[0] if len(found) == 1 else "?")


def _files_of(index: FileIndex, splits: dict[str, list[str | None]], split: str) -> FileIndex:
    """A new index of the files of ``split`` (and those that name none); the others counted as ignored."""
    kept = FileIndex(root=index.root, name=index.name, ignored=Counter(index.ignored), rejects=list(index.rejects))
    for role, names in splits.items():
        out = getattr(kept, role)
        for rel, s in zip(getattr(index, role), names):
            if s is None or s == split:
                out.append(rel)
            else:
                kept.ignored[f"other split ({s})"] += 1
    return kept


def _shard_set_name(index: FileIndex) -> str | None:
    """The name of the webdataset shard set among a source's archives, if there is one
    (``imagenet22k-validation``: a split of its own, never ILSVRC val); several are an error."""
    sets = sorted({hub_set(rel) for rel in index.archives} - {None})
    if len(sets) > 1:
        raise OptionError(f"{index.root} holds the shards of several sets ({', '.join(sets)}): scan one set at a "
                          "time (its shard files as SOURCEs), or name the split with `split` NAME")
    return sets[0] if sets else None


def _no_file_of(root: Path, split: str, found: list[str]) -> OptionError:
    return OptionError(f"{root} holds no file of split {split!r}: its images and annotations are of split(s) "
                       f"{', '.join(found)}; give `split` one of those")


# a path part that may name a split (a train/val/test folder, an official ILSVRC name, a LOC table)
_MAY_NAME_SPLIT = re.compile(r"(^|/)(train|val|test)/|ilsvrc\d{4}_(img|bbox)_|loc_(train|val|test)_|"
                             r"(^|/)(train|val|test)_images|imagenet-?1k-(train|validation)-|"
                             r"(^|/)(train|validation|val|test)-\d+-of-\d+\.parquet",
                             re.IGNORECASE | re.MULTILINE)
_SPLIT_WORDS = ("train", "val", "test", "ilsvrc", "loc_")  # one of them is in every match of _MAY_NAME_SPLIT


def _member_splits(members: list[str]) -> dict[str, str | None]:
    """The split each archive member's path names (None: none), by :func:`split_of`."""
    text = "\n".join(members)
    # one search over all paths, most archives name no split; every match holds one of _SPLIT_WORDS, which
    # str's own search finds many times faster than the pattern (ASCII only: lower() keeps its length)
    lower = text.lower() if text.isascii() else None
    if (lower is not None and not any(word in lower for word in _SPLIT_WORDS)) or not _MAY_NAME_SPLIT.search(text):
        return dict.fromkeys(members)
    return {rel: split_of(rel) for rel in members}


def _without_members(index: FileIndex, other: dict[str, str]) -> FileIndex:
    """``index`` less the members ``other`` (path -> the other split it names), each counted as ignored."""
    ignored = Counter(index.ignored)
    ignored.update(f"other split ({s})" for s in other.values())
    return replace(index, images=[rel for rel in index.images if rel not in other],
                   xmls=[rel for rel in index.xmls if rel not in other],
                   member_images={rel: p for rel, p in index.member_images.items() if rel not in other},
                   member_xmls={rel: x for rel, x in index.member_xmls.items() if rel not in other},
                   ignored=ignored)


def select_members(index: FileIndex, split: str | None, name: str) -> tuple[FileIndex, str]:
    """After the archives are read, apply :func:`select_split` to their members, whose own folders can
    name a split (a tar of a whole ILSVRC tree holds ``train/`` and ``val/``): with ``split`` given,
    members of other splits are ignored by rule; without it, members of several splits are an error.
    Returns the index of the split's files and the split's name (a split the members name wins over the
    archive's own name)."""
    named = _member_splits([*index.member_images, *index.member_xmls])
    if split is None:
        loose = {split_of(rel) for rel in (*index.images, *index.xmls) if rel not in named}
        found = sorted(({s for s in named.values()} | loose) - {None})
        if len(found) > 1:
            raise OptionError(f"{index.root} holds several splits ({', '.join(found)}) inside its archives; scan "
                              "one at a time with `split` NAME")
        return index, found[0] if found else name
    other = {rel: s for rel, s in named.items() if s is not None and s != split}
    if other and len(other) == len(named) and not any(rel not in named for rel in index.images):
        raise _no_file_of(index.root, split, sorted(set(other.values())))
    return _without_members(index, other), split
