"""webdataset samples: the ``.json`` and ``.cls`` members that describe the image of the same key.

timm's Hub shards (``timm/imagenet-1k-wds``, ``imagenet-12k-wds``, ``imagenet-22k-wds``,
``imagenet-w21-wds``) are plain tars in webdataset's layout: a sample is the members that share a key
(the member path up to the first dot of its base name), ``<key>.jpg`` (or ``.webp``, ``.png``), ``<key>.cls``
(the class index, ASCII) and ``<key>.json``. What the json holds:

* 22k/12k/w21: ``{label, class_name (the wnid), width, height}``, plus ``orig_width``/``orig_height``
  when the image was resized (short side capped at 600 px, 768 for Winter 2021);
* 1k: ``{filename: "n01440764/ILSVRC2012_val_00000293.JPEG", label, width, height}``.

An image's class is the json's ``class_name``, else the wnid its ``filename`` starts with, else its
``.cls`` index in a synset list (:func:`class_of`). The original size is the one boxes measured on the
original are scaled from (:mod:`eic_builder.boxes`). Each member is parsed where the archive is read
(:func:`read_sample_member`, in the scan's workers), into a :class:`SampleFacts`; the facts of a key's
members merge in the main process (:func:`merge_facts`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from eic_builder.scan.annotations import is_wnid

SAMPLE_SUFFIXES = (".json", ".cls")


def sample_key(path: str) -> str:
    """The webdataset key of a member path: the path up to the first dot of its base name."""
    folder, _, base = path.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{folder}/{stem}" if folder else stem


@dataclass(frozen=True)
class SampleFacts:
    """What a sample's metadata members say of its image; every field None where they say nothing.

    ``problem``: why a member could not be read (the image is then rejected, naming it). ``boxes``: the
    boxes a row of a Parquet image table carries (its ``objects``), each ``(label, x1, y1, x2, y2)`` in the
    toolkit's corners, measured on an image of ``box_width`` x ``box_height`` pixels (None: not stated);
    ``bad_boxes``: why each entry that is no box was left out."""

    wnid: str | None = None
    class_index: int | None = None
    orig_width: int | None = None
    orig_height: int | None = None
    problem: str | None = None
    boxes: tuple | None = None
    box_width: int | None = None
    box_height: int | None = None
    bad_boxes: tuple | None = None

    def as_list(self) -> list:
        return [self.wnid, self.class_index, self.orig_width, self.orig_height, self.problem, self.boxes,
                self.box_width, self.box_height, self.bad_boxes]


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def read_sample_member(name: str, data: bytes) -> SampleFacts:
    """The facts of one ``.json`` or ``.cls`` member ``name`` (its bytes ``data``)."""
    try:
        text = data.decode("utf-8")
        if name.lower().endswith(".cls"):
            return SampleFacts(class_index=int(text.strip()))
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return SampleFacts(problem=f"{name} does not parse ({str(exc).splitlines()[0][:120]})")
    if not isinstance(doc, dict):
        return SampleFacts(problem=f"{name} is not a JSON object")
    wnid = doc.get("class_name")
    if not (isinstance(wnid, str) and is_wnid(wnid)):
        filename = doc.get("filename")
        prefix = filename.split("/", 1)[0] if isinstance(filename, str) and "/" in filename else None
        wnid = prefix if prefix is not None and is_wnid(prefix) else None
    orig_w, orig_h = _positive_int(doc.get("orig_width")), _positive_int(doc.get("orig_height"))
    if (orig_w is None) != (orig_h is None):
        return SampleFacts(problem=f"{name} states one original side only")
    return SampleFacts(wnid=wnid, orig_width=orig_w, orig_height=orig_h)


def merge_facts(a: SampleFacts | None, b: SampleFacts) -> SampleFacts:
    """The facts of two members of one sample together (a field set by either; the first problem)."""
    if a is None:
        return b
    return SampleFacts(*(x if x is not None else y for x, y in zip(a.as_list(), b.as_list())))


def class_of(facts: SampleFacts, synsets: tuple[str, ...] | None) -> tuple[str | None, str | None]:
    """(wnid, problem): the sample's class by the json, else its ``.cls`` index in ``synsets`` (the class
    list in index order); a problem when the index is beyond the list, or no list was given."""
    if facts.wnid is not None or facts.class_index is None:
        return facts.wnid, None
    if synsets is None:
        return None, f"class index {facts.class_index} and no json class name: give the synset list (--synsets)"
    if not 0 <= facts.class_index < len(synsets):
        return None, (f"class index {facts.class_index} is beyond the {len(synsets):,} synsets of the list "
                      "(--synsets FILE names the list of these shards)")
    return synsets[facts.class_index], None
