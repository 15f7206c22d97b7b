"""A small synthetic ImageNet-style tree, for the demo, the tests and the benchmarks.

Layout (as in the ILSVRC/Kaggle download)::

    ROOT/train/<wnid>/<wnid>_<n>.JPEG
    ROOT/Annotations/train/<wnid>/<wnid>_<n>.xml     (ILSVRC XML, 0-based inclusive)
    ROOT/val/ILSVRC2012_val_<n>.JPEG
    ROOT/Annotations/val/ILSVRC2012_val_<n>.xml

Each image is a textured background with 1-3 solid objects (rectangles or
ellipses) whose boxes are written to the XML; a share of them are small
(< 32 px) or twisted (aspect > 4 or < 1/4), like real data. Deterministic for a seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Real ILSVRC-2012 wnids (the Imagenette classes), so WordNet checks accept them.
DEMO_WNIDS = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)


@dataclass(frozen=True)
class SyntheticBox:
    """A box in ILSVRC XML terms: 0-based inclusive pixel bounds."""

    wnid: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int


def ilsvrc_xml(folder: str, filename: str, width: int, height: int, boxes: list[SyntheticBox]) -> str:
    """An ILSVRC-style annotation XML."""
    objects = "".join(
        f"<object><name>{b.wnid}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{b.xmin}</xmin><ymin>{b.ymin}</ymin><xmax>{b.xmax}</xmax><ymax>{b.ymax}</ymax></bndbox>"
        "</object>"
        for b in boxes
    )
    return (
        f"<annotation><folder>{folder}</folder><filename>{filename}</filename>"
        "<source><database>ILSVRC_2012</database></source>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{objects}</annotation>\n"
    )


def _random_box(rng: np.random.Generator, width: int, height: int, kind: str) -> tuple[int, int, int, int]:
    if kind == "small":
        w, h = int(rng.integers(12, 30)), int(rng.integers(12, 30))
    elif kind == "twisted":
        long_side = int(rng.integers(int(0.5 * min(width, height)), int(0.9 * min(width, height))))
        short = max(8, long_side // int(rng.integers(5, 8)))
        w, h = (long_side, short) if rng.random() < 0.5 else (short, long_side)
    else:
        w = int(rng.integers(int(0.2 * width), int(0.7 * width)))
        h = int(np.clip(w * rng.uniform(0.5, 2.0), 0.2 * height, 0.8 * height))
    x = int(rng.integers(0, width - w + 1))
    y = int(rng.integers(0, height - h + 1))
    return x, y, x + w, y + h  # exclusive end


def draw_image(rng: np.random.Generator, width: int, height: int, n_objects: int, wnid: str,
               small_share: float = 0.15, twisted_share: float = 0.15):
    """An RGB image with ``n_objects`` drawn objects and their boxes (ILSVRC inclusive bounds)."""
    from PIL import Image, ImageDraw

    base = rng.integers(60, 150, size=3)
    noise = rng.normal(0, 12, size=(height // 8 + 1, width // 8 + 1, 3))
    bg = np.clip(base + np.kron(noise, np.ones((8, 8, 1)))[:height, :width], 0, 255).astype(np.uint8)
    image = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(image)
    boxes = []
    for _ in range(n_objects):
        r = rng.random()
        kind = "small" if r < small_share else "twisted" if r < small_share + twisted_share else "normal"
        x1, y1, x2, y2 = _random_box(rng, width, height, kind)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        outline = tuple(255 - c for c in colour)
        if rng.random() < 0.5:
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=colour, outline=outline, width=2)
        else:
            draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=colour, outline=outline, width=2)
        boxes.append(SyntheticBox(wnid, x1, y1, x2 - 1, y2 - 1))
    return image, boxes


@dataclass(frozen=True)
class SyntheticTree:
    """What :func:`make_synthetic_tree` wrote (counts)."""

    root: Path
    train_images: int
    val_images: int
    train_boxes: int
    val_boxes: int


def make_synthetic_tree(
    root: str | os.PathLike[str],
    n_classes: int = 4,
    train_per_class: int = 12,
    val_per_class: int = 4,
    seed: int = 0,
    size_range: tuple[int, int] = (160, 320),
    unannotated_per_class: int = 1,
) -> SyntheticTree:
    """Write a synthetic ILSVRC-layout tree under ``root``.

    ``unannotated_per_class`` train images per class get no XML (most real
    ImageNet train images have none).
    """
    from eic_builder.errors import OptionError

    if not 1 <= n_classes <= len(DEMO_WNIDS):
        raise OptionError(f"n_classes={n_classes} must be between 1 and {len(DEMO_WNIDS)}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    counts = {"train": [0, 0], "val": [0, 0]}
    val_index = 0
    for wnid in DEMO_WNIDS[:n_classes]:
        for split, n in (("train", train_per_class), ("val", val_per_class)):
            for i in range(n):
                w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
                image, boxes = draw_image(rng, w, h, int(rng.integers(1, 4)), wnid)
                if split == "train":
                    stem, img_dir, ann_dir = f"{wnid}_{i + 1}", root / "train" / wnid, root / "Annotations/train" / wnid
                else:
                    val_index += 1
                    stem, img_dir, ann_dir = f"ILSVRC2012_val_{val_index:08d}", root / "val", root / "Annotations/val"
                img_dir.mkdir(parents=True, exist_ok=True)
                image.save(img_dir / f"{stem}.JPEG", quality=90)
                counts[split][0] += 1
                if split == "train" and i < unannotated_per_class:
                    continue
                ann_dir.mkdir(parents=True, exist_ok=True)
                (ann_dir / f"{stem}.xml").write_text(ilsvrc_xml(wnid if split == "train" else "val", stem, w, h, boxes))
                counts[split][1] += len(boxes)
    return SyntheticTree(root, counts["train"][0], counts["val"][0], counts["train"][1], counts["val"][1])
