"""Readers for the annotation formats a scan understands.

Every reader returns boxes in the toolkit's convention (float pixels, 0-based,
``x2``/``y2`` exclusive) and says how it converted:

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
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import fromstring as _fast_fromstring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as _defused_fromstring

WNID_RE = re.compile(r"^n\d{8}$")

# (label, x1, y1, x2, y2) in the toolkit's box convention.
RawBox = tuple[str, float, float, float, float]


class AnnotationError(Exception):
    """An annotation file cannot be used; ``reason`` is a rejects code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


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


def _int_text(node, tag: str) -> float:
    text = node.findtext(tag)
    if text is None:
        raise ValueError(f"missing <{tag}>")
    return float(text.strip())


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
        raise AnnotationError("unsafe_xml", f"refused: {type(exc).__name__}") from exc
    except ParseError as exc:
        raise AnnotationError("malformed_xml", str(exc)) from exc
    if root.tag != "annotation":
        raise AnnotationError("malformed_xml", f"root element is <{root.tag}>, expected <annotation>")
    ann = RawAnnotation()
    size = root.find("size")
    if size is not None:
        try:
            w, h = int(_int_text(size, "width")), int(_int_text(size, "height"))
            if w > 0 and h > 0:
                ann.width, ann.height = w, h
        except ValueError:
            pass  # a broken <size> is as good as none: the image header decides
    shift_lo, shift_hi = (-1.0, 0.0) if flavour == "voc" else (0.0, 1.0)
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
        ann.boxes.append((name, xmin + shift_lo, ymin + shift_lo, xmax + shift_hi, ymax + shift_hi))
    return ann


def read_loc_csv(path: str | os.PathLike[str]) -> dict[str, RawAnnotation]:
    """Read a Kaggle ``LOC_*_solution.csv``: ``ImageId,PredictionString`` with repeated
    ``wnid x1 y1 x2 y2`` (0-based inclusive). Returns annotations by image id (no sizes)."""
    out: dict[str, RawAnnotation] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise AnnotationError("malformed_csv", f"header {header!r} is not 'ImageId,PredictionString'")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            image_id = row[0].strip()
            ann = out.setdefault(image_id, RawAnnotation())
            parts = row[1].split() if len(row) > 1 else []
            if len(parts) % 5:
                ann.bad_rows.append(f"line {line_no}: {len(parts)} fields, not a multiple of 5")
                parts = parts[: len(parts) - len(parts) % 5]
            for i in range(0, len(parts), 5):
                label = parts[i]
                try:
                    x1, y1, x2, y2 = (float(v) for v in parts[i + 1 : i + 5])
                except ValueError:
                    ann.bad_rows.append(f"line {line_no}: non-numeric box {parts[i:i + 5]}")
                    continue
                ann.boxes.append((label, x1, y1, x2 + 1.0, y2 + 1.0))
    return out


def read_coco(path: str | os.PathLike[str]) -> tuple[dict[str, RawAnnotation], list[str]]:
    """Read a COCO instances JSON.

    Returns annotations keyed by image file stem, and a description of each
    annotation whose ``image_id`` the file does not list (so none is lost).
    The label of a box is its category name; ``bbox = [x, y, w, h]`` converts directly.
    """
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
        images = {img["id"]: img for img in doc["images"]}
        names = {cat["id"]: cat["name"] for cat in doc.get("categories", [])}
        anns = doc.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise AnnotationError("malformed_json", f"not a COCO instances file: {exc}") from exc
    out: dict[str, RawAnnotation] = {}
    orphans: list[str] = []
    by_id: dict[object, RawAnnotation] = {}
    for image_key, img in images.items():
        stem = Path(str(img.get("file_name", ""))).stem
        ann = RawAnnotation(width=img.get("width"), height=img.get("height"))
        out[stem] = ann
        by_id[image_key] = ann
    for a in anns:
        ann = by_id.get(a.get("image_id"))
        if ann is None:
            orphans.append(f"annotation {a.get('id')}: image_id {a.get('image_id')!r} is not in 'images'")
            continue
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
            label = str(names.get(a["category_id"], a["category_id"]))
        except (KeyError, TypeError, ValueError):
            ann.bad_rows.append(f"annotation {a.get('id')}: bad bbox {a.get('bbox')!r}")
            continue
        ann.boxes.append((label, x, y, x + w, y + h))
    return out, orphans
