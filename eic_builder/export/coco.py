"""COCO instances JSON: one file per exported manifest, as pycocotools, detectron2's ``load_coco_json``
and FiftyOne's COCO importer read it.

``bbox`` is COCO's ``[x, y, w, h]`` in pixels, ``w = x2 - x1`` of the manifest's corners (exact: the
difference of two float32 values is a float64 without rounding, so ``x + w`` gives ``x2`` back).
Image ids count from 1 in the manifest's order; categories from 1 in the order of their labels
(wnids sort as numbers). Keys that COCO does not define carry what it cannot say and start with
``eic_`` (readers ignore them): the manifest's image id and box index, the wnid behind a category
name, and for an image inside an archive that is not materialized, where its bytes are
(``eic_archive``, ``eic_offset``, ``eic_size``; only eic-build reads those).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from eic_builder.boxes import to_xywh
from eic_builder.export.source import ExportSplit
from eic_builder.scan.annotations import is_wnid


def number(value: float) -> int | float:
    """A pixel value as JSON writes it best: a whole number without ``.0``, any other exactly."""
    return int(value) if float(value).is_integer() else float(value)


def coco_document(split: ExportSplit, names: Mapping[str, str], file_names: Sequence[str], image_root: str,
                  reference_archives: bool) -> dict[str, Any]:
    """The COCO instances document of ``split``: ``file_names[i]`` is image ``i``'s path under
    ``image_root``; ``reference_archives`` adds the ``eic_archive`` keys to images inside archives."""
    from eic_builder import __version__

    labels = sorted(split.labels())
    category_ids = {label: k for k, label in enumerate(labels, start=1)}
    categories = []
    for label in labels:
        category: dict[str, Any] = {"id": category_ids[label], "name": names[label], "supercategory": ""}
        if is_wnid(label):
            category["eic_wnid"] = label
        categories.append(category)
    images, annotations = [], []
    for image_number, (image, file_name) in enumerate(zip(split.images, file_names), start=1):
        entry: dict[str, Any] = {"id": image_number, "file_name": file_name, "width": image.width,
                                 "height": image.height, "eic_image_id": image.image_id}
        if reference_archives and image.in_archive:
            entry.update(eic_archive=image.ref.archive, eic_offset=image.ref.offset, eic_size=image.ref.size)
        images.append(entry)
        for box in split.boxes.get(image.image_id, []):
            x, y, w, h = to_xywh(box.x1, box.y1, box.x2, box.y2)
            annotations.append({"id": len(annotations) + 1, "image_id": image_number,
                                "category_id": category_ids[box.label],
                                "bbox": [number(x), number(y), number(w), number(h)],
                                "area": number(w * h), "iscrowd": 0, "eic_box_index": box.box_index})
    info = {"description": f"EIC manifest {split.directory} ({split.name}), exported by eic-build",
            "version": __version__, "year": datetime.date.today().year,
            "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "eic_image_root": image_root, "eic_provenance": split.meta}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}
