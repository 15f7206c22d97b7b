"""PASCAL VOC: one XML per image in ``Annotations/``, the images in ``JPEGImages/``, and the image ids
of each exported manifest in ``ImageSets/Main/<name>.txt``, as VOC readers (torchvision's
``VOCDetection``, detectron2, mmdetection) expect.

VOC corners are 1-based and inclusive: ``xmin = x1 + 1`` and ``xmax = x2`` of the manifest's 0-based,
``x2``-exclusive corners (what ``scan`` reads back, to the pixel). The ``<database>`` names PASCAL VOC,
so that ``scan`` reads the files with VOC's convention whatever their labels (wnids included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

from eic_builder.boxes import to_one_based
from eic_builder.export.coco import number
from eic_builder.export.source import ExportBox, ExportImage

DATABASE = "EIC, exported by eic-build (PASCAL VOC format)"


def voc_xml(image: ExportImage, file_name: str, boxes: Sequence[ExportBox], names: Mapping[str, str],
            folder: str) -> str:
    """The VOC annotation of one image; ``file_name`` is its name in ``JPEGImages/``."""
    objects = []
    for box in boxes:
        corners = to_one_based(box.x1, box.y1, box.x2, box.y2)
        coords = "".join(f"<{tag}>{number(v)}</{tag}>" for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), corners))
        objects.append(f"  <object><name>{escape(names[box.label])}</name><pose>Unspecified</pose>"
                       f"<truncated>0</truncated><difficult>0</difficult><bndbox>{coords}</bndbox></object>\n")
    return (f"<annotation>\n  <folder>{escape(folder)}</folder>\n  <filename>{escape(file_name)}</filename>\n"
            f"  <source><database>{DATABASE}</database></source>\n"
            f"  <size><width>{image.width}</width><height>{image.height}</height><depth>3</depth></size>\n"
            f"  <segmented>0</segmented>\n{''.join(objects)}</annotation>\n")
