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
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eic_builder.boxes import to_inclusive

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
        boxes.append(SyntheticBox(wnid, *(int(v) for v in to_inclusive(x1, y1, x2, y2))))
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
        raise OptionError(f"`n_classes`={n_classes} must be between 1 and {len(DEMO_WNIDS)}")
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


# Real EIC classes that are not ILSVRC classes (source "expanded" in data_manifests/eic_classes.parquet):
# European swift, barnacle, sand cat, leash.
EIC_NEW_WNIDS = ("n01832493", "n01998183", "n02125010", "n03652932")
# dog.n.01: an ancestor of ILSVRC classes, so never an EIC class (ImageNet-21K holds many such synsets).
NOT_EIC_WNID = "n02084071"
PLANTED_VAL_IMAGE = "ILSVRC2012_val_00000001"


@dataclass(frozen=True)
class SyntheticArchives:
    """What :func:`make_synthetic_archives` wrote: an ILSVRC tree and the two ImageNet-21K archives."""

    root: Path
    ilsvrc: SyntheticTree
    images_tar: Path  # fall11_whole.tar: a tar of per-synset tars of JPEGs
    annotations_tgz: Path  # Annotation.tar.gz: a gzip tar of per-synset .tar.gz of ILSVRC XMLs
    images_in_tar: int
    annotated_in_tar: int
    planted_copy: str  # the image id, in the tar, whose bytes are those of an ILSVRC val image


def _tar_bytes(members: list[tuple[str, bytes]], gzip_level: int | None = None,
               tar_format: int = tarfile.USTAR_FORMAT) -> bytes:
    """A tar (gzip-compressed when ``gzip_level`` is set) of (name, bytes) in ``tar_format`` (tarfile's
    USTAR, GNU or PAX), byte-identical for the same input."""
    import gzip
    import io

    raw = io.BytesIO()
    target = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=gzip_level) \
        if gzip_level is not None else raw
    with tarfile.open(fileobj=target, mode="w", format=tar_format) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    if gzip_level is not None:
        target.close()
    return raw.getvalue()


def make_synthetic_archives(
    root: str | os.PathLike[str],
    n_classes: int = 4,
    train_per_class: int = 12,
    val_per_class: int = 4,
    new_per_class: int = 30,
    other_per_class: int = 8,
    annotated_share: float = 0.7,
    seed: int = 0,
) -> SyntheticArchives:
    """Write the shapes of the real downloads under ``root``, small.

    * ``ROOT/ILSVRC/``: an ILSVRC-2012 tree (:func:`make_synthetic_tree`, ``n_classes`` classes);
    * ``ROOT/fall11_whole.tar``: per-synset tars ``<wnid>.tar`` of ``<wnid>_<n>.JPEG``, for the
      EIC-new classes :data:`EIC_NEW_WNIDS` (``new_per_class`` images each), two of the ILSVRC
      classes and :data:`NOT_EIC_WNID` (``other_per_class`` each);
    * ``ROOT/Annotation.tar.gz``: per-synset ``<wnid>.tar.gz`` of ``Annotation/<wnid>/<wnid>_<n>.xml``
      for ``annotated_share`` of those images;
    * one planted copy: the bytes of the ILSVRC val image :data:`PLANTED_VAL_IMAGE` stored as
      one more image of the first EIC-new class, as ImageNet-21K holds ILSVRC val images.
    """
    from eic_builder.errors import OptionError

    for name, value in (("new_per_class", new_per_class), ("other_per_class", other_per_class)):
        if value < 1:
            raise OptionError(f"`{name}`={value} must be >= 1")
    if not 0 <= annotated_share <= 1:
        raise OptionError(f"`annotated_share`={annotated_share} must be in [0, 1]")
    root = Path(root)
    ilsvrc = make_synthetic_tree(root / "ILSVRC", n_classes, train_per_class, val_per_class, seed)
    rng = np.random.default_rng(seed + 1)
    synsets = [(w, new_per_class) for w in EIC_NEW_WNIDS]
    synsets += [(w, other_per_class) for w in DEMO_WNIDS[: min(2, n_classes)]] + [(NOT_EIC_WNID, other_per_class)]
    image_tars: list[tuple[str, bytes]] = []
    annotation_tars: list[tuple[str, bytes]] = []
    n_images = n_annotated = 0
    planted = f"{EIC_NEW_WNIDS[0]}_{new_per_class + 1}"
    for wnid, count in sorted(synsets):
        images: list[tuple[str, bytes]] = []
        xmls: list[tuple[str, bytes]] = []
        for n in range(1, count + 1):
            w, h = (int(v) for v in rng.integers(160, 321, size=2))
            image, boxes = draw_image(rng, w, h, int(rng.integers(1, 4)), wnid)
            stem = f"{wnid}_{n}"
            buf = _jpeg_bytes(image)
            images.append((f"{stem}.JPEG", buf))
            if rng.random() < annotated_share:
                xmls.append((f"Annotation/{wnid}/{stem}.xml", ilsvrc_xml(wnid, stem, w, h, boxes).encode()))
        if wnid == EIC_NEW_WNIDS[0]:
            images.append((f"{planted}.JPEG", (root / "ILSVRC/val" / f"{PLANTED_VAL_IMAGE}.JPEG").read_bytes()))
        n_images += len(images)
        n_annotated += len(xmls)
        image_tars.append((f"{wnid}.tar", _tar_bytes(images)))
        if xmls:
            annotation_tars.append((f"{wnid}.tar.gz", _tar_bytes(xmls, gzip_level=6)))
    images_tar = root / "fall11_whole.tar"
    images_tar.write_bytes(_tar_bytes(image_tars))
    annotations_tgz = root / "Annotation.tar.gz"
    annotations_tgz.write_bytes(_tar_bytes(annotation_tars, gzip_level=6))
    return SyntheticArchives(root, ilsvrc, images_tar, annotations_tgz, n_images, n_annotated, planted)


def _jpeg_bytes(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@dataclass(frozen=True)
class SyntheticDownloads:
    """What :func:`make_synthetic_downloads` wrote: the files image-net.org ships today, small, the four
    ILSVRC-2012 files side by side in ``ROOT/ILSVRC2012/``, the ImageNet-21K ones in ``ROOT/``."""

    root: Path
    img_train: Path  # ILSVRC2012_img_train.tar: a tar of per-class tars <wnid>.tar of <wnid>_<n>.JPEG
    img_val: Path  # ILSVRC2012_img_val.tar: flat ILSVRC2012_val_<8 digits>.JPEG
    bbox_train: Path  # ILSVRC2012_bbox_train_v2.tar.gz: <wnid>/<wnid>_<n>.xml
    bbox_val: Path  # ILSVRC2012_bbox_val_v3.tgz: val/ILSVRC2012_val_<8 digits>.xml
    winter21: Path  # winter21_whole.tar.gz: a gzip of a tar of winter21_whole/<wnid>.tar
    annotations: Path  # Annotation.tar.gz: per-synset <wnid>.tar.gz of Annotation/<wnid>/<wnid>_<n>.xml
    train_images: int
    val_images: int
    winter21_images: int


def make_synthetic_downloads(root: str | os.PathLike[str], n_classes: int = 4, train_per_class: int = 12,
                             val_per_class: int = 4, new_per_class: int = 30, seed: int = 0,
                             gzip_level: int = 6) -> SyntheticDownloads:
    """Write, under ``root``, the downloads of today shaped exactly as image-net.org ships them (see
    :class:`SyntheticDownloads` for where each goes), from the data of :func:`make_synthetic_archives`
    with the same arguments: the four official ILSVRC-2012 files side by side, ImageNet-21K as
    ``winter21_whole.tar.gz`` and the bounding-box archive ``Annotation.tar.gz``."""
    import shutil

    root = Path(root)
    build = root / ".build"
    made = make_synthetic_archives(build, n_classes, train_per_class, val_per_class, new_per_class, seed=seed)
    tree = made.ilsvrc.root

    def files(folder: Path, pattern: str, prefix: str = "") -> list[tuple[str, bytes]]:
        return [(prefix + p.name, p.read_bytes()) for p in sorted(folder.glob(pattern))]

    wnids = sorted(p.name for p in (tree / "train").iterdir())
    ilsvrc = root / "ILSVRC2012"
    ilsvrc.mkdir(parents=True, exist_ok=True)
    out = SyntheticDownloads(root, ilsvrc / "ILSVRC2012_img_train.tar", ilsvrc / "ILSVRC2012_img_val.tar",
                             ilsvrc / "ILSVRC2012_bbox_train_v2.tar.gz", ilsvrc / "ILSVRC2012_bbox_val_v3.tgz",
                             root / "winter21_whole.tar.gz", root / "Annotation.tar.gz",
                             made.ilsvrc.train_images, made.ilsvrc.val_images, made.images_in_tar)
    out.img_train.write_bytes(_tar_bytes([(f"{w}.tar", _tar_bytes(files(tree / "train" / w, "*.JPEG")))
                                          for w in wnids]))
    out.img_val.write_bytes(_tar_bytes(files(tree / "val", "*.JPEG")))
    out.bbox_train.write_bytes(_tar_bytes([m for w in wnids for m in files(tree / "Annotations/train" / w, "*.xml",
                                                                           f"{w}/")], gzip_level=gzip_level))
    out.bbox_val.write_bytes(_tar_bytes(files(tree / "Annotations/val", "*.xml", "val/"), gzip_level=gzip_level))
    with tarfile.open(made.images_tar) as tf:
        synsets = [(f"winter21_whole/{m.name}", tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]
    out.winter21.write_bytes(_tar_bytes(synsets, gzip_level=gzip_level))
    shutil.move(made.annotations_tgz, out.annotations)
    shutil.rmtree(build)
    return out


@dataclass(frozen=True)
class SyntheticHub:
    """What :func:`make_synthetic_hub` wrote: ImageNet as the Hugging Face Hub holds it, small.

    * ``in22k/imagenet22k-train-{0000,0001}.tar``: timm's webdataset shards of ImageNet-21K (the synsets of
      :func:`make_synthetic_archives`): per sample ``<wnid>_<n>.jpg`` resized so that its short side is at
      most ``short_side`` (bicubic, JPEG q90), ``.cls`` (its index in timm's imagenet22k order) and
      ``.json`` (``label``, ``class_name``, ``width``, ``height``, ``orig_width``, ``orig_height``), one of
      them a resized, re-encoded copy of the ILSVRC val image :data:`PLANTED_VAL_IMAGE`;
      ``in22k-val/imagenet22k-validation-0000.tar``: held-out samples of the same synsets;
      ``Annotation.tar.gz``: their boxes, in the original images' pixels (XML ``<size>`` the original's);
    * ``in1k/imagenet1k-validation-00.tar``: the ILSVRC val images at their size, samples keyed by image
      id with the 1k json (``filename`` ``<wnid>/<id>.JPEG``, ``label``, ``width``, ``height``) and ``.cls``
      (its index among the sorted 1,000 wnids), and ``in1k/LOC_val_solution.csv`` (their boxes);
    * ``hf/val_images.tar.gz``: ``ILSVRC/imagenet-1k``'s archive of the same images named
      ``<id>_<wnid>.JPEG``, with ``hf/LOC_val_solution.csv``; ``hf-parquet/data/validation-00000-of-00001.parquet``:
      its Parquet layout of them (Image column, ``ClassLabel`` of lemmas in the sorted wnids' order, row groups
      of 5), with ``hf-parquet/LOC_val_solution.csv``.
    """

    root: Path
    in22k_train: list[Path]
    in22k_validation: Path
    annotations: Path
    in1k_validation: Path
    hf_val: Path
    hf_parquet: Path
    train_samples: int
    resized: int
    val_images: int
    planted: str  # the key of the resized copy of PLANTED_VAL_IMAGE


def _loc_csv(rows: list[tuple[str, list[tuple[str, float, float, float, float]]]]) -> bytes:
    """A Kaggle LOC CSV of (image id, boxes in the toolkit's convention): 0-based inclusive corners."""
    lines = ["ImageId,PredictionString"]
    for image_id, boxes in rows:
        cells = " ".join(f"{label} {' '.join(f'{v:g}' for v in to_inclusive(*corners))}"
                         for label, *corners in boxes)
        lines.append(f"{image_id},{cells}")
    return ("\n".join(lines) + "\n").encode()


def _resized(data: bytes, short_side: int) -> tuple[bytes, int, int, int, int]:
    """(JPEG bytes, width, height, original width, original height): the image shrunk, as timm's shards
    hold it, so that its short side is at most ``short_side`` (bicubic, JPEG quality 90)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as src:
        image = src.convert("RGB")
    ow, oh = image.size
    scale = short_side / min(ow, oh)
    if scale < 1:
        image = image.resize((max(1, round(ow * scale)), max(1, round(oh * scale))), Image.Resampling.BICUBIC)
    return _jpeg_bytes(image), image.width, image.height, ow, oh


def make_synthetic_hub(root: str | os.PathLike[str], n_classes: int = 4, val_per_class: int = 4,
                       new_per_class: int = 12, short_side: int = 128, seed: int = 0) -> SyntheticHub:
    """Write, under ``root``, ImageNet in the Hub's shapes (see :class:`SyntheticHub`), from the data of
    :func:`make_synthetic_archives`."""
    import json
    import shutil

    from eic_builder.reference_lists import POOL_FILES, data_manifests_dir, ilsvrc_classes, read_wnid_list
    from eic_builder.scan.annotations import parse_xml

    root = Path(root)
    build = root / ".build"
    made = make_synthetic_archives(build, n_classes, 1, val_per_class, new_per_class, seed=seed)
    index_22k = {w: i for i, w in enumerate(read_wnid_list(data_manifests_dir() / POOL_FILES["21k"]))}
    index_1k = {w: i for i, w in enumerate(ilsvrc_classes()["wnid"].to_pylist())}
    planted = f"{EIC_NEW_WNIDS[0]}_{new_per_class + 1}"
    samples, n_resized = _in22k_samples(made.images_tar, short_side, index_22k)
    # a held-out part of the synsets, as imagenet22k-validation is; the planted copy stays in train
    out = [k % 5 == 0 and not sample[0][0].startswith(planted + ".") for k, sample in enumerate(samples)]
    held_out = [s for s, o in zip(samples, out) if o]
    train = [s for s, o in zip(samples, out) if not o]
    (root / "in22k").mkdir(parents=True, exist_ok=True)
    (root / "in22k-val").mkdir(parents=True, exist_ok=True)
    half = (len(train) + 1) // 2
    shards = [root / "in22k" / f"imagenet22k-train-{k:04d}.tar" for k in range(2)]
    for shard, part in zip(shards, (train[:half], train[half:])):
        shard.write_bytes(_tar_bytes([m for sample in part for m in sample]))
    validation = root / "in22k-val" / "imagenet22k-validation-0000.tar"
    validation.write_bytes(_tar_bytes([m for sample in held_out for m in sample]))
    annotations = root / "Annotation.tar.gz"
    shutil.copy(made.annotations_tgz, annotations)

    tree = made.ilsvrc.root
    val_rows, in1k, hf = [], [], []
    for xml in sorted((tree / "Annotations" / "val").glob("*.xml")):
        ann = parse_xml(xml.read_bytes(), "ilsvrc")
        image_id, wnid = xml.stem, ann.boxes[0][0]
        data = (tree / "val" / f"{image_id}.JPEG").read_bytes()
        val_rows.append((image_id, ann.boxes))
        meta = {"filename": f"{wnid}/{image_id}.JPEG", "label": index_1k[wnid], "width": ann.width,
                "height": ann.height}
        in1k += [(f"{image_id}.cls", str(index_1k[wnid]).encode()), (f"{image_id}.jpg", data),
                 (f"{image_id}.json", json.dumps(meta).encode())]
        hf.append((f"{image_id}_{wnid}.JPEG", data))
    (root / "in1k").mkdir(exist_ok=True)
    (root / "hf").mkdir(exist_ok=True)
    in1k_validation = root / "in1k" / "imagenet1k-validation-00.tar"
    in1k_validation.write_bytes(_tar_bytes(in1k))
    hf_val = root / "hf" / "val_images.tar.gz"
    hf_val.write_bytes(_tar_bytes(hf, gzip_level=6))
    hf_parquet = _write_hf_parquet(root / "hf-parquet" / "data" / "validation-00000-of-00001.parquet",
                                   [(name.rsplit(".", 1)[0], data) for name, data in hf], index_1k)
    for folder in ("in1k", "hf", "hf-parquet"):
        (root / folder / "LOC_val_solution.csv").write_bytes(_loc_csv(val_rows))
    shutil.rmtree(build)
    return SyntheticHub(root, shards, validation, annotations, in1k_validation, hf_val, hf_parquet, len(train),
                        n_resized, len(val_rows), planted)


def _in22k_samples(images_tar: Path, short_side: int,
                   index_22k: dict[str, int]) -> tuple[list[list[tuple[str, bytes]]], int]:
    """The webdataset samples (``.cls``, ``.jpg`` resized as timm's 22k shards are, ``.json``) of every image
    of a tar of per-synset tars, and how many were resized."""
    import json

    samples: list[list[tuple[str, bytes]]] = []
    n_resized = 0
    with tarfile.open(images_tar) as outer:
        for synset in outer.getmembers():
            with tarfile.open(fileobj=outer.extractfile(synset)) as inner:
                for member in inner.getmembers():
                    key = member.name.rsplit(".", 1)[0]
                    wnid = key.split("_", 1)[0]
                    data, w, h, ow, oh = _resized(inner.extractfile(member).read(), short_side)
                    n_resized += (w, h) != (ow, oh)
                    meta = {"label": index_22k[wnid], "class_name": wnid, "width": w, "height": h}
                    if (w, h) != (ow, oh):
                        meta.update(orig_width=ow, orig_height=oh)
                    samples.append([(f"{key}.cls", str(index_22k[wnid]).encode()), (f"{key}.jpg", data),
                                    (f"{key}.json", json.dumps(meta).encode())])
    return samples, n_resized


def _write_hf_parquet(path: Path, images: list[tuple[str, bytes]], index_1k: dict[str, int]) -> Path:
    """``ILSVRC/imagenet-1k``'s Parquet layout: an Image column (``{bytes, path}``, ``path`` the image's
    file name) and a ``ClassLabel`` label whose names are the classes' lemmas, in the 1,000 sorted wnids'
    order (``images``: (``<id>_<wnid>``, bytes))."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from eic_builder.dataset.schemas import HF_IMAGE_TYPE
    from eic_builder.reference_lists import ilsvrc_classes

    lemmas = ilsvrc_classes()["lemma"].to_pylist()
    features = {"image": {"_type": "Image"}, "label": {"names": lemmas, "_type": "ClassLabel"}}
    schema = pa.schema([pa.field("image", HF_IMAGE_TYPE), pa.field("label", pa.int64())]).with_metadata(
        {b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    rows = {"image": [{"bytes": data, "path": f"{stem.rsplit('_', 1)[0]}.JPEG"} for stem, data in images],
            "label": [index_1k[stem.rsplit("_", 1)[1]] for stem, _ in images]}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows, schema=schema), path, row_group_size=5)
    return path
