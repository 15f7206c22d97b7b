"""``eic-build export``: hand manifests to the tools people train with, as COCO, PASCAL VOC or a
Hugging Face dataset folder.

Layouts under ``--out`` (``NAME`` is each manifest's split, or its folder's name):

* ``coco``: ``annotations/instances_NAME.json``; the images stay where they are (``file_name``
  relative to the image root the JSON's ``info.eic_image_root`` names), or with ``--materialize``
  are copied to ``images/NAME/`` (and ``eic_image_root`` names that folder);
* ``voc``: ``Annotations/ID.xml``, ``JPEGImages/ID.ext`` (symbolic links to the loose files, or
  copies with ``--materialize``: VOC cannot point into an archive, so images inside one need it),
  ``ImageSets/Main/NAME.txt``;
* ``hf``: ``data/NAME-i-of-n.parquet`` with the images' bytes inside, and a ``README.md`` dataset card.

Only images with a file are exported (annotation-only images have nothing to train on); how many
were left out, with their boxes, is part of the result. Annotation files are rewritten on each run;
materialized images are kept when already complete, so an interrupted export resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eic_builder.choices import EXPORT_FORMATS
from eic_builder.dataset.manifest import check_distinct_names
from eic_builder.errors import OptionError, check_choice
from eic_builder.export.files import Placement, link_images, materialize_images
from eic_builder.export.labels import LABEL_STYLES, label_names
from eic_builder.export.source import ExportSplit, load_split
from eic_builder.output_folder import Run, check_out
from eic_builder.progress import progress
from eic_builder.safe_names import child_path, path_component

__all__ = ["EXPORT_FORMATS", "LABEL_STYLES", "ExportResult", "export_manifests"]


OWNED_ENTRIES = {"coco": ("annotations", "images"), "voc": ("Annotations", "JPEGImages", "ImageSets"),
                 "hf": ("data", "README.md")}  # what each format writes under --out


@dataclass
class ExportResult:
    """What an export wrote: per manifest ``(name, images, boxes)``, the annotation/data files, the image
    root of each COCO file, the images and boxes left out (no image file), and the image files placed."""

    fmt: str
    out: Path
    splits: list[tuple[str, int, int]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    image_roots: dict[str, str] = field(default_factory=dict)
    without_file: int = 0
    boxes_without_file: int = 0
    placement: Placement = field(default_factory=Placement)
    archive_references: int = 0  # COCO images left inside archives (eic_archive keys): --materialize for others


def _export_coco(splits: Sequence[ExportSplit], out: Path, names: dict[str, str], materialize: bool,
                 result: ExportResult) -> None:
    from eic_builder.atomic_files import write_text
    from eic_builder.export.coco import coco_document

    for split in splits:
        root = split.root if split.images else ""
        if materialize:
            folder = child_path(out / "images", split.name)
            file_names = [path_component(i.image_id, i.extension) for i in split.images]
            result.placement += materialize_images(split.images, [folder / f for f in file_names], root)
            image_root = str(folder.resolve())
        else:
            file_names = [i.ref.path for i in split.images]
            image_root = str(Path(root).resolve()) if root else ""
            result.archive_references += sum(i.in_archive for i in split.images)
        doc = coco_document(split, names, file_names, image_root, reference_archives=not materialize)
        path = child_path(out / "annotations", f"instances_{split.name}", suffix=".json")
        result.files.append(write_text(path, json.dumps(doc, separators=(",", ":"))))
        result.image_roots[split.name] = image_root


def _check_voc(splits: Sequence[ExportSplit], materialize: bool) -> None:
    """Refuse what VOC cannot hold, before anything is written: one image id in two splits (one
    Annotations/ folder serves all), and images inside archives without ``materialize``."""
    owner: dict[str, str] = {}
    for split in splits:
        for image in split.images:
            if image.image_id in owner:
                raise OptionError(f"image id {image.image_id!r} is in both {owner[image.image_id]!r} and "
                                  f"{split.name!r}; VOC keeps one Annotations/ folder for all splits: export them "
                                  "separately")
            owner[image.image_id] = split.name
        in_archives = sum(i.in_archive for i in split.images)
        if in_archives and not materialize:
            raise OptionError(f"{in_archives:,} images of {split.directory} lie inside archives, which VOC cannot "
                              "point into; add `materialize` to write them out once")


def _export_voc(splits: Sequence[ExportSplit], out: Path, names: dict[str, str], materialize: bool,
                result: ExportResult) -> None:
    from eic_builder.atomic_files import write_text
    from eic_builder.export.voc import voc_xml

    for split in splits:
        file_names = [path_component(i.image_id, i.extension) for i in split.images]
        dests = [out / "JPEGImages" / f for f in file_names]
        root = split.root if split.images else ""
        place = materialize_images if materialize else link_images
        result.placement += place(split.images, dests, root)
        folder = out / "Annotations"
        folder.mkdir(parents=True, exist_ok=True)
        # one small file per image, rewritten whole on every run: plain writes (a rename each would
        # double the metadata work) whose last run always completes them
        for image, file_name in progress(list(zip(split.images, file_names)), desc=f"voc {split.name}", unit="img"):
            text = voc_xml(image, file_name, split.boxes.get(image.image_id, []), names, folder=split.name)
            child_path(folder, image.image_id, suffix=".xml").write_text(text, encoding="utf-8")
        ids = "".join(f"{i.image_id}\n" for i in split.images)
        result.files.append(write_text(child_path(out / "ImageSets" / "Main", split.name, suffix=".txt"), ids))
    result.files.insert(0, out / "Annotations")


def _export_hf(splits: Sequence[ExportSplit], out: Path, names: dict[str, str], result: ExportResult) -> None:
    from eic_builder.dataset.tables import command_line
    from eic_builder.export.hf import check_split_names, write_card, write_split_shards
    from eic_builder.stats import compute_split_stats, render

    check_split_names([split.name for split in splits])
    box_labels = sorted({b.label for split in splits for boxes in split.boxes.values() for b in boxes})
    categories = [names[label] for label in box_labels]
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        result.files += write_split_shards(split, names, categories, data_dir)
    table = render([compute_split_stats(split.name, split.directory) for split in splits], "md")
    result.files.append(write_card(out, splits, table, command_line()))


@dataclass(frozen=True)
class ExportOptions:
    """The knobs of ``export``: ``fmt`` (coco, voc, hf), ``materialize`` (copy the images beside the
    annotations), ``labels`` (``wnid`` as in the manifest, or ``name``: WordNet lemmas, see
    :mod:`eic_builder.export.labels`, read from ``wordnet_dir`` when given), ``root`` (the image root when
    the manifests' recorded one moved)."""

    fmt: str = "coco"
    materialize: bool = False
    labels: str = "wnid"
    root: str | os.PathLike[str] | None = None
    wordnet_dir: str | os.PathLike[str] | None = None

    def validate(self) -> None:
        """Refuse options that cannot be run (before any manifest is read)."""
        check_choice("fmt", self.fmt, EXPORT_FORMATS)
        check_choice("labels", self.labels, LABEL_STYLES)
        if self.fmt == "hf" and self.materialize:
            raise OptionError("`materialize` is for `fmt` coco and voc; `fmt` hf always stores the images' "
                              "bytes in its Parquet shards")


def export_manifests(manifests: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                     options: ExportOptions | None = None) -> ExportResult:
    """Export each manifest directory of ``manifests`` to ``out`` as ``options`` say (see the module's doc)."""
    options = options or ExportOptions()
    options.validate()
    fmt, materialize, labels = options.fmt, options.materialize, options.labels
    if not manifests:
        raise OptionError("give at least one MANIFEST directory to export")
    out = check_out(out, {f"the manifest {m}": m for m in manifests})
    splits = [load_split(m, options.root) for m in manifests]
    check_distinct_names([(s.name, s.directory) for s in splits],
                         "export them one at a time into different `out` folders")
    names = label_names(set().union(*(s.labels() for s in splits)), labels, options.wordnet_dir)
    result = ExportResult(fmt, out, [(s.name, len(s.images), s.n_boxes) for s in splits],
                          without_file=sum(s.without_file for s in splits),
                          boxes_without_file=sum(s.boxes_without_file for s in splits))
    # files of another export left beside these (other ids' annotations, other images) would be read as ours
    # (switching --materialize or --labels rewrites the same files: the same run)
    if fmt == "voc":
        _check_voc(splits, materialize)
    Run("export", {"format": fmt, "manifests": {s.name: s.fingerprint for s in splits}}).claim(
        out, owned=OWNED_ENTRIES[fmt])
    if fmt == "coco":
        _export_coco(splits, out, names, materialize, result)
    elif fmt == "voc":
        _export_voc(splits, out, names, materialize, result)
    else:
        _export_hf(splits, out, names, result)
    return result
