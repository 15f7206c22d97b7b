"""Readers for the annotation formats a scan understands.

Every reader returns boxes in the toolkit's convention (float pixels, 0-based,
``x2``/``y2`` exclusive), converted by :mod:`eic_builder.boxes`:

* ILSVRC XML and Kaggle LOC CSV: 0-based inclusive, so ``x2 = xmax + 1``;
* PASCAL VOC XML: 1-based inclusive, so ``x1 = xmin - 1`` and ``x2 = xmax``;
* COCO ``bbox = [x, y, w, h]``: ``x2 = x + w``.

XML with a document type declaration is parsed with defusedxml, which refuses
entity declarations (billion laughs) and external entities: they are never
expanded or fetched. XML without one cannot declare entities, so it takes
the fast C parser of the standard library (annotation XMLs have no DTD).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from xml.etree.ElementTree import fromstring as _fast_fromstring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as _defused_fromstring

from eic_builder.boxes import from_inclusive, from_one_based, from_xywh
from eic_builder.rejects import Rejected
from eic_builder.scan.hub import image_id_of

WNID_RE = re.compile(r"^n\d{8}$")

# (label, x1, y1, x2, y2) in the toolkit's box convention.
RawBox = tuple[str, float, float, float, float]


@dataclass
class RawAnnotation:
    """The boxes of one image as an annotation states them, size in pixels if stated."""

    width: int | None = None
    height: int | None = None
    boxes: list[RawBox] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)  # unparsable box entries, kept for rejects


def is_wnid(label: str) -> bool:
    """True when ``label`` has the form of an ImageNet/WordNet noun id (``n`` + 8 digits)."""
    return WNID_RE.match(label) is not None


def finite_number(value: object, text_allowed: bool = True) -> float:
    """``value`` as a finite float; raises ValueError naming it otherwise.

    Numbers of XML and CSV are text; a JSON value must be a number itself (``"1234"`` is not one,
    nor is ``true``). ``nan``, ``inf`` and overflowing text (``1e309``) are refused.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str) if text_allowed else (int, float)):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _int_text(node, tag: str) -> float:
    text = node.findtext(tag)
    if text is None:
        raise ValueError(f"missing <{tag}>")
    try:  # the common case inline (float() skips surrounding blanks): ten per image on the scan's hot path
        number = float(text)
        if math.isfinite(number):
            return number
    except (ValueError, OverflowError):
        pass
    return finite_number(text.strip())  # raises, naming the text


def _needs_defused(data: bytes) -> bool:
    # A DTD is the only place entities can be declared; a UTF-16/32 document could
    # hide "<!DOCTYPE" from a byte search, so any NUL byte sends it to defusedxml too.
    return b"<!DOCTYPE" in data or b"<!ENTITY" in data or b"\x00" in data[:512]


def parse_xml(data: bytes, flavour: str) -> RawAnnotation:
    """Parse an ILSVRC (``flavour="ilsvrc"``) or PASCAL VOC (``"voc"``) XML annotation."""
    try:
        if _needs_defused(data):
            root = _defused_fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
        else:
            root = _fast_fromstring(data)
    except DefusedXmlException as exc:
        raise Rejected("unsafe_xml", f"refused: {type(exc).__name__}") from exc
    except ParseError as exc:
        raise Rejected("malformed_xml", str(exc)) from exc
    if root.tag != "annotation":
        raise Rejected("malformed_xml", f"root element is <{root.tag}>, expected <annotation>")
    ann = RawAnnotation()
    size = root.find("size")
    if size is not None:
        try:
            w, h = int(_int_text(size, "width")), int(_int_text(size, "height"))
            if w > 0 and h > 0:
                ann.width, ann.height = w, h
        except ValueError:
            pass  # a broken <size> is as good as none: the image header decides
    convert = from_one_based if flavour == "voc" else from_inclusive
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        try:
            if bb is None:
                raise ValueError("missing <bndbox>")
            xmin, ymin = _int_text(bb, "xmin"), _int_text(bb, "ymin")
            xmax, ymax = _int_text(bb, "xmax"), _int_text(bb, "ymax")
        except ValueError as exc:
            ann.bad_rows.append(f"object {name or '?'}: {exc}")
            continue
        ann.boxes.append((name, *convert(xmin, ymin, xmax, ymax)))
    return ann


# A problem found in a whole-split table: (image id or None, level, reason, detail), for the rejects table.
TableProblem = tuple[str | None, str, str, str]


def _csv_fields(line: str) -> list[str]:
    """The fields of one CSV line, quoted or not (a stray quote is kept as text, as the csv module does)."""
    return next(csv.reader([line]), [])


def read_loc_csv(path: str | os.PathLike[str]) -> tuple[dict[str, RawAnnotation], list[TableProblem]]:
    """Read a Kaggle ``LOC_*_solution.csv``: ``ImageId,PredictionString`` with repeated
    ``wnid x1 y1 x2 y2`` (0-based inclusive). Returns annotations by image id (no sizes) and the
    rows it could not use.

    It is read line by line, each line with the csv module's quoting (``"ILSVRC2012_val_00000001","n01440764
    1 1 50 50"`` is the same row as without the quotes): a bad line (not UTF-8, not two columns) is a
    problem of its own and the other lines stay; a UTF-8 byte order mark is allowed.
    """
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    header = _csv_fields(lines[0].decode("utf-8-sig", "replace").strip()) if lines else []
    if [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"] or len(header) != 2:
        raise Rejected("malformed_csv", f"header {header!r} is not 'ImageId,PredictionString'")
    out: dict[str, RawAnnotation] = {}
    problems: list[TableProblem] = []
    for line_no, raw in enumerate(lines[1:], start=2):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            problems.append((None, "box", "malformed_row", f"line {line_no}: not UTF-8 ({exc.reason} at byte "
                             f"{exc.start}): {raw[:80]!r}"))
            continue
        if not line.strip():
            continue
        row = _csv_fields(line)
        # a row the csv module cannot split in two (an unterminated quote) still names its image for the reject
        image_id = row[0].strip() if len(row) >= 2 else line.split(",", 1)[0].strip().strip('"')
        if len(row) != 2 or not image_id:
            problems.append((image_id or None, "box", "malformed_row",
                             f"line {line_no}: {len(row)} columns, expected ImageId,PredictionString: {line[:80]!r}"))
            continue
        ann = out.setdefault(image_id, RawAnnotation())
        parts = row[1].split()
        if len(parts) % 5:
            ann.bad_rows.append(f"line {line_no}: {len(parts)} fields, not a multiple of 5")
            parts = parts[: len(parts) - len(parts) % 5]
        for i in range(0, len(parts), 5):
            label = parts[i]
            try:
                x1, y1, x2, y2 = (finite_number(v) for v in parts[i + 1 : i + 5])
            except ValueError as exc:
                ann.bad_rows.append(f"line {line_no}: non-numeric box {parts[i:i + 5]} ({exc})")
                continue
            ann.boxes.append((label, *from_inclusive(x1, y1, x2, y2)))
    return out, problems


def _image_size(img: dict) -> tuple[int | None, int | None, str | None]:
    """(width, height, problem) of a COCO image entry: positive whole numbers, or a problem text."""
    try:
        w, h = (finite_number(img.get(k), text_allowed=False) for k in ("width", "height"))
    except ValueError as exc:
        return None, None, f"width/height {img.get('width')!r}/{img.get('height')!r}: {exc}"
    if w <= 0 or h <= 0 or w != int(w) or h != int(h):
        return None, None, f"width/height {img.get('width')!r}/{img.get('height')!r} are not positive whole numbers"
    return int(w), int(h), None


def load_json(path: str | os.PathLike[str]) -> object:
    """The parsed JSON document ``path``; raises :class:`Rejected` (``malformed_json``) for every way a JSON
    file can fail to parse: bad syntax or a cut-off file, bytes that are not UTF-8, nesting deeper than the
    parser's recursion limit, a number too long to convert. ``OSError`` (unreadable) passes."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        what = "nested too deep to parse" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:200]
        raise Rejected("malformed_json", f"not valid JSON: {what}") from None


def read_coco(path: str | os.PathLike[str]) -> tuple[dict[str, RawAnnotation], list[TableProblem]]:
    """Read a COCO instances JSON.

    Returns annotations keyed by image file stem, and the problems that keep an image's entry or a
    box out, so that none is lost or moved: an image id or file stem given twice (the entries
    concerned are refused, with their boxes, since a box cannot be told which one it is of; an image
    file of that stem then scans without boxes), a size that is not a
    positive whole number, an annotation whose ``image_id`` is not listed (``orphan_annotation``),
    whose ``category_id`` is not among ``categories`` (``unknown_category``), or whose ``bbox`` is
    not four finite numbers (``malformed_box``). The label of a box is its category name;
    ``bbox = [x, y, w, h]`` converts directly.
    """
    doc = load_json(path)
    try:
        image_list = list(doc["images"])
        names = {cat["id"]: str(cat["name"]) for cat in doc.get("categories", [])}
        anns = list(doc.get("annotations", []))
    except (KeyError, TypeError) as exc:
        raise Rejected("malformed_json", f"not a COCO instances file: {type(exc).__name__}: {exc}") from None
    problems: list[TableProblem] = []
    images = [img for img in image_list if isinstance(img, dict)]
    if len(images) != len(image_list):
        problems.append((None, "file", "malformed_json", f"{len(image_list) - len(images)} entries of 'images' "
                         "are not objects"))
    out, by_id = _coco_images(images, problems)
    known = ", ".join(repr(k) for k in list(names)[:5]) + (" ..." if len(names) > 5 else "") or "none"
    for a in anns:
        _add_coco_box(a, by_id, names, known, problems)
    return out, problems


def _file_stem(image: dict) -> str:
    """The image id a COCO ``images`` entry names: its ``file_name``'s, by the one rule of image ids."""
    return image_id_of(str(image.get("file_name", "")).rstrip("/"), hub_name=False)[0]


def _coco_images(images: list[dict], problems: list[TableProblem]) -> tuple[dict[str, RawAnnotation],
                                                                           dict[str, RawAnnotation | None]]:
    """(annotation by file stem, the same by ``repr`` of the image id, None for a refused entry) of a COCO
    file's ``images``; an id or stem given twice, or a bad size, is a problem and refuses the entry."""
    ids = Counter(repr(img.get("id")) for img in images)
    stems = Counter(_file_stem(img) for img in images)
    out: dict[str, RawAnnotation] = {}
    by_id: dict[str, RawAnnotation | None] = {}
    for img in images:
        key, stem = repr(img.get("id")), _file_stem(img)
        if ids[key] > 1 or stems[stem] > 1:
            twice = f"image id {img.get('id')!r}" if ids[key] > 1 else f"file stem {stem!r}"
            problems.append((stem or None, "file", "duplicate_image_id",
                             f"{twice} is given {max(ids[key], stems[stem])} times in 'images': which image a "
                             "box belongs to is unknown, so none is used"))
            by_id[key] = None
            continue
        width, height, bad_size = _image_size(img)
        if bad_size:
            problems.append((stem, "file", "malformed_size", f"image {img.get('id')!r}: {bad_size}"))
            by_id[key] = None
            continue
        out[stem] = by_id[key] = RawAnnotation(width=width, height=height)
    return out, by_id


def _add_coco_box(a: object, by_id: dict[str, RawAnnotation | None], names: dict, known: str,
                  problems: list[TableProblem]) -> None:
    """Add the box of the COCO annotation ``a`` to its image's annotation, or say why it cannot be."""
    if not isinstance(a, dict):
        problems.append((None, "box", "malformed_box", f"annotation {a!r} is not an object"))
        return
    key = repr(a.get("image_id"))
    if key not in by_id:
        problems.append((None, "box", "orphan_annotation",
                         f"annotation {a.get('id')}: image_id {a.get('image_id')!r} is not in 'images'"))
        return
    ann = by_id[key]
    if ann is None:
        problems.append((None, "box", "image_rejected",
                         f"annotation {a.get('id')} of the refused image {a.get('image_id')!r}"))
        return
    category = a.get("category_id")
    if category not in names:
        problems.append((None, "box", "unknown_category", f"annotation {a.get('id')}: category_id "
                         f"{category!r} is not in 'categories' (known: {known})"))
        return
    try:
        corners = coco_corners(a.get("bbox"))
    except ValueError as exc:
        ann.bad_rows.append(f"annotation {a.get('id')}: bad bbox ({exc})")
        return
    ann.boxes.append((names[category], *corners))


def coco_corners(bbox: object) -> tuple[float, float, float, float]:
    """A COCO ``bbox`` ``[x, y, w, h]`` (pixels, top-left corner) -> the toolkit's corners ``(x1, y1, x2, y2)``;
    raises ``ValueError`` naming it unless it is a list of four finite numbers (text refused)."""
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"{bbox!r} is not a list of 4 numbers")
    x, y, w, h = (finite_number(v, text_allowed=False) for v in bbox)
    return from_xywh(x, y, w, h)
