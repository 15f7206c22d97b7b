"""``eic-build assemble``: the EIC train and val manifests, from ILSVRC-2012 and ImageNet-21K manifests.

Each input manifest's images play a role by their ``split``: ``train`` is
ILSVRC-2012 train, ``val`` is ILSVRC-2012 val, any other split (a scan of
``fall11_whole.tar`` is named ``fall11_whole``) is the *pool* the new classes
draw from. The rules, in this order, each counted in the report:

1. Only EIC classes (the ``--classes`` list). ILSVRC-2012 classes keep
   ILSVRC's own split, so they come from the train/val manifests; the new
   classes come from the pool.
2. Images without a file (annotation-only rows) are left out; a second row
   with an image id already taken (by an earlier manifest) is left out.
3. Every image gets a content hash (SHA-1 of its bytes): scans of archives
   record it; the rest are read here.
4. A pool image whose bytes are those of an ILSVRC val image is dropped:
   ImageNet-21K holds ILSVRC-2012 val images; so is one that is a resized,
   re-encoded or mirrored copy of one (the audit's pHash and mirror hash within
   ``max_hamming`` bits: the Hub's shards hold them resized and re-encoded).
5. Each new class orders its images by ``sha1(seed:image_id)``: the first
   ``val_per_class`` go to val, the rest are train candidates. A train image
   (new or ILSVRC) whose bytes equal any val image's is dropped; then at most
   ``max_train_per_class`` train images are kept per new class.
6. New classes with fewer than ``min_train_per_class`` train images are skipped
   (``short="skip"``), make the command fail (``"refuse"``), or stay (``"keep"``).

Boxes follow their images; images without boxes are kept (the paper's table
counts every image). Paths are rewritten relative to the deepest folder
holding every input's image root. The same inputs give the same bytes out.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from eic_builder.assemble.options import ILSVRC_SPLITS, AssembleOptions, AssembleResult
from eic_builder.assemble.report import write_report
from eic_builder.dataset.manifest import Manifest
from eic_builder.dataset.rows import RejectRow, rows_table
from eic_builder.dataset.schemas import IMAGES_SCHEMA
from eic_builder.dataset.tables import empty_table, read_table
from eic_builder.errors import OptionError
from eic_builder.image_source import ImageReader, image_refs
from eic_builder.output_folder import check_out
from eic_builder.progress import progress
from eic_builder.reference_lists import check_wnids
from eic_builder.seeded import rank_of

log = logging.getLogger(__name__)

def rank_key(image_id: str, seed: int) -> int:
    """The deterministic draw order of an image: the first 8 bytes of ``sha1(seed:image_id)``."""
    return rank_of(image_id, seed)


def _rebase(column: pa.ChunkedArray, prefix: str) -> pa.Array:
    if not prefix:
        return column
    return pc.if_else(pc.is_null(column), column, pc.binary_join_element_wise(prefix, column, "/"))


@dataclass
class _Inputs:
    """The input images that can be in EIC (a frame, paths rebased on the common root), each manifest's
    provenance, that root, and the counts of the rows left out while reading."""

    frame: pd.DataFrame
    manifests: list[Manifest]
    common: str
    not_eic: int = 0
    wrong_role: int = 0


def _read_inputs(paths: list[Path], source_of: dict[str, str]) -> _Inputs:
    """Read the input images an EIC class and its role can use, streamed: a 14-million-row ImageNet-21K
    manifest costs the rows of EIC classes, not its size. An ILSVRC class's images come from the
    train/val manifests and a new class's from the pool; the rest are counted, never held."""
    manifests = [Manifest.open(p) for p in paths]
    roots = [m.image_root(f"the images of {m.directory} must be where it was scanned (or scan them again)")
             for m in manifests]
    common = os.path.commonpath([os.path.abspath(r) for r in roots])
    eic = pa.array(sorted(source_of), pa.string())
    ilsvrc = pa.array(sorted(w for w, s in source_of.items() if s == "ilsvrc1k"), pa.string())
    counts = Counter()

    def usable(batch: pa.RecordBatch) -> pa.Array:
        listed = pc.fill_null(pc.is_in(batch["label"], eic), False)
        role_fits = pc.equal(pc.is_in(batch["split"], pa.array(ILSVRC_SPLITS)),
                             pc.fill_null(pc.is_in(batch["label"], ilsvrc), False))
        keep = pc.and_(listed, role_fits)
        n_listed, n_kept = (pc.sum(mask).as_py() or 0 for mask in (listed, keep))
        counts["not_eic"] += len(batch) - n_listed
        counts["wrong_role"] += n_listed - n_kept
        return keep

    frames = []
    for number, (manifest, root) in enumerate(zip(manifests, roots)):
        prefix = os.path.relpath(os.path.abspath(root), common).replace(os.sep, "/")
        prefix = "" if prefix == "." else prefix
        images = manifest.read_rows("images", usable)
        for name in ("path", "annotation", "archive"):
            images = images.set_column(images.schema.get_field_index(name), name, _rebase(images[name], prefix))
        frame = images.to_pandas()
        frame["manifest"] = number
        frames.append(frame)
    return _Inputs(pd.concat(frames, ignore_index=True), manifests, common, counts["not_eic"], counts["wrong_role"])


def _refs(frame: pd.DataFrame) -> list:
    """The :class:`~eic_builder.image_source.ImageRef` of each row (pandas holds a nullable integer column as
    floats: the images schema types them back)."""
    columns = ["path", "archive", "offset", "size", "sha1"]
    schema = pa.schema([IMAGES_SCHEMA.field(c) for c in columns])
    return image_refs(pa.Table.from_pandas(frame[columns], schema=schema, preserve_index=False))


def _fill_hashes(frame: pd.DataFrame, common: str, workers: int) -> int:
    """Compute the SHA-1 of rows that have none (reading their bytes); returns how many."""
    missing = frame.index[frame["sha1"].isna()]
    if len(missing) == 0:
        return 0
    log.info("hashing %d images that their scan did not hash (scan --hash avoids this)", len(missing))
    reader = ImageReader(common)
    refs = _refs(frame.loc[missing])
    bar = progress(total=len(refs), desc="hash", unit="img")

    def digest(ref) -> str:
        value = hashlib.sha1(reader.read(ref)).hexdigest()
        bar.update(1)
        return value

    with ThreadPoolExecutor(max_workers=workers) as pool:
        frame.loc[missing, "sha1"] = list(pool.map(digest, refs))
    bar.close()
    reader.close()
    return len(missing)


def assemble(manifests: list[str | os.PathLike[str]], classes_file: str | os.PathLike[str],
             out: str | os.PathLike[str], options: AssembleOptions | None = None) -> AssembleResult:
    """Write ``OUT/train``, ``OUT/val`` and ``OUT/report.md`` from the input ``manifests``."""
    options = options or AssembleOptions()
    options.validate()
    if not manifests:
        raise OptionError("give at least one MANIFEST (ILSVRC train/val scans and ImageNet-21K scans)")
    paths = [Path(m) for m in manifests]
    out = check_out(out, {f"the input manifest {k + 1}": path for k, path in enumerate(paths)})
    classes = read_table(classes_file, "eic_classes").select(["wnid", "source"]).to_pandas()
    check_wnids(classes_file, classes["wnid"].tolist())
    source_of = dict(zip(classes["wnid"], classes["source"]))
    inputs = _read_inputs(paths, source_of)
    frame, common = inputs.frame, inputs.common
    effects: Counter[str] = Counter()

    frame["role"] = np.where(frame["split"].isin(ILSVRC_SPLITS), frame["split"], "pool")
    effects["not an EIC class"] = inputs.not_eic
    effects["ILSVRC class image in a pool manifest, or new class image in an ILSVRC split"] = inputs.wrong_role
    # classes the downloads lack (Winter 2021 dropped 2,674 synsets of Fall 2011): said, never silent
    absent = sorted(set(source_of) - set(frame.loc[frame["has_image"], "label"].unique()))
    effects["no image file (annotation-only row)"] = int((~frame["has_image"]).sum())
    frame = frame[frame["has_image"]]
    duplicated = frame["image_id"].duplicated(keep="first")
    rejects = [_reject_row(r, "duplicate_image_id", "image id taken by an earlier manifest")
               for r in frame[duplicated].itertuples()]
    effects["image id already taken by an earlier manifest"] = int(duplicated.sum())
    frame = frame[~duplicated].copy()
    effects["content hashes computed here (not in the scan)"] = _fill_hashes(frame, common, options.hash_workers)

    ilsvrc_val = frame[frame["role"] == "val"]
    ilsvrc_val_hash = dict(zip(ilsvrc_val["sha1"], ilsvrc_val["image_id"]))
    pool = _without_val_copies(frame[frame["role"] == "pool"], ilsvrc_val, common, options, rejects, effects)
    pool = pool.copy()
    pool["rank"] = [rank_key(i, options.seed) for i in pool["image_id"]]
    pool = pool.sort_values(["label", "rank", "image_id"], kind="stable")
    pool["place"] = pool.groupby("label").cumcount()
    new_val = pool[pool["place"] < options.val_per_class]
    val_hash = {**dict(zip(new_val["sha1"], new_val["image_id"])), **ilsvrc_val_hash}

    train_candidates = pd.concat([frame[frame["role"] == "train"], pool[pool["place"] >= options.val_per_class]])
    copies = train_candidates["sha1"].isin(val_hash.keys())
    rejects += [_reject_row(r, "copy_of_val_image", f"same bytes as val image {val_hash[r.sha1]}")
                for r in train_candidates[copies].itertuples()]
    effects["training image with the bytes of a val image"] = int(copies.sum())
    train = train_candidates[~copies].copy()
    is_new = train["role"] == "pool"
    place = train[is_new].groupby("label").cumcount()
    over = pd.Series(False, index=train.index)
    over.loc[place.index] = place >= options.max_train_per_class
    effects[f"over --max-train-per-class={options.max_train_per_class} (new classes)"] = int(over.sum())
    train = train[~over]
    val = pd.concat([frame[frame["role"] == "val"], new_val])

    short = _short_classes(train, pool, source_of, options)
    if short and options.short == "skip":
        dropped = {w for w, _ in short}
        effects["images of classes skipped for too few training images"] = int(
            train["label"].isin(dropped).sum() + val["label"].isin(dropped).sum())
        train, val = train[~train["label"].isin(dropped)], val[~val["label"].isin(dropped)]
    present = set(train["label"]) | set(val["label"])
    missing = sorted(set(source_of) - present)

    first, *others = inputs.manifests
    step = {"source_root": common, "assembled_from": [str(p) for p in paths], "seed": options.seed,
            "val_per_class": options.val_per_class, "max_train_per_class": options.max_train_per_class,
            "min_train_per_class": options.min_train_per_class}
    counts: dict[str, dict] = {"classes": {}, "images": {}, "boxes": {}, "per_class": {}}
    box_tables = _boxes_of(inputs.manifests, [train, val])
    for split, part in (("train", train), ("val", val)):
        images, boxes = _split_tables(split, part, box_tables)
        split_rejects = _rejects_table([r.row for r in rejects if r.split == split])
        made = first.derive(images, boxes, split_rejects, parents=others, **step)
        made.write(out / split, part=split)
        meta = made.meta
        per = part["label"].value_counts()
        counts["classes"][split] = len(per)
        counts["images"][split] = len(images)
        counts["boxes"][split] = len(boxes)
        counts["per_class"][split] = (int(per.min()), int(per.max())) if len(per) else (0, 0)
    result = AssembleResult(out, len(source_of), counts["classes"], counts["images"], counts["boxes"],
                            counts["per_class"], dict(effects), short, missing, absent)

    write_report(result, out / "report.md", options, meta)
    return result


def _without_val_copies(pool: pd.DataFrame, ilsvrc_val: pd.DataFrame, common: str, options: AssembleOptions,
                        rejects: list, effects: Counter[str]) -> pd.DataFrame:
    """The pool without copies of ILSVRC val images: the same bytes, and with ``perceptual`` resized,
    re-encoded or mirrored copies (pHash); each left out is a reject row and counted in ``effects``."""
    val_hash = dict(zip(ilsvrc_val["sha1"], ilsvrc_val["image_id"]))
    copies = pool["sha1"].isin(val_hash.keys())
    rejects += [_reject_row(r, "copy_of_val_image", f"same bytes as ILSVRC val image {val_hash[r.sha1]}")
                for r in pool[copies].itertuples()]
    effects["pool image with the bytes of an ILSVRC val image"] = int(copies.sum())
    pool = pool[~copies]
    if options.perceptual:
        copies, found = _perceptual_copies(ilsvrc_val, pool, common, options.hash_workers, options.max_hamming)
        rejects += [_reject_row(r, "copy_of_val_image", f"a resized, re-encoded or mirrored copy of ILSVRC val image "
                                f"{val_id} (pHash within {bits} of 64 bits)")
                    for r, (val_id, bits) in zip(pool[copies].itertuples(), found)]
        effects["pool image that is a resized, re-encoded or mirrored copy of an ILSVRC val image (pHash)"] = \
            int(copies.sum())
        pool = pool[~copies]
    return pool


def _short_classes(train: pd.DataFrame, pool: pd.DataFrame, source_of: dict[str, str],
                   options: AssembleOptions) -> list[tuple[str, int]]:
    """(wnid, training images) of each new class of the pool with fewer than ``min_train_per_class``;
    raises :class:`OptionError` listing them when ``short`` is refuse."""
    new_classes = sorted(w for w, s in source_of.items() if s != "ilsvrc1k")
    train_counts = train[train["role"] == "pool"]["label"].value_counts()
    in_pool = set(pool["label"].unique())
    short = [(w, int(train_counts.get(w, 0))) for w in new_classes
             if w in in_pool and train_counts.get(w, 0) < options.min_train_per_class]
    if short and options.short == "refuse":
        listed = ", ".join(f"{w} ({n})" for w, n in short[:10])
        raise OptionError(f"{len(short)} new classes have fewer than `min_train_per_class`="
                          f"{options.min_train_per_class} training images: {listed}"
                          f"{' ...' if len(short) > 10 else ''}; use `short` skip or keep")
    return short


def _perceptual_copies(val: pd.DataFrame, pool: pd.DataFrame, common: str, workers: int,
                       max_hamming: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Which ``pool`` rows are a resized, re-encoded or mirrored copy of a ``val`` image: the audit's pHash
    of each image and of its mirror image (:mod:`eic_builder.audit.perceptual`), within ``max_hamming``
    bits. Returns (a mask over ``pool``, the (val image id, bits) of each copy in ``pool`` order)."""
    from eic_builder.audit.perceptual import hamming_pairs, hash_refs

    if val.empty or pool.empty:
        return np.zeros(len(pool), dtype=bool), []
    refs = _refs(pd.concat([val, pool]))
    hashes = hash_refs([(common, refs)], workers)
    rows = np.flatnonzero(hashes.valid)
    i, j, bits, _ = hamming_pairs(hashes.direct[rows], max_hamming, mirrored=hashes.mirrored[rows])
    i, j = rows[i], rows[j]  # i < j: a val image (rows before len(val)) and a pool image
    across = (i < len(val)) & (j >= len(val))
    nearest: dict[int, tuple[int, int]] = {}
    for a, b, d in sorted(zip(i[across], j[across] - len(val), bits[across]), key=lambda t: t[2], reverse=True):
        nearest[int(b)] = (int(a), int(d))  # the closest val image last, so it stays
    mask = np.zeros(len(pool), dtype=bool)
    mask[list(nearest)] = True
    val_ids = val["image_id"].tolist()
    return mask, [(val_ids[nearest[b][0]], nearest[b][1]) for b in np.flatnonzero(mask)]


class _LeftOut(NamedTuple):
    """The reject row of an image left out, and the output (``train`` or ``val``) it would have gone to."""

    row: RejectRow
    split: str


def _reject_row(row, reason: str, detail: str) -> _LeftOut:
    return _LeftOut(RejectRow(row.path, row.image_id, "file", reason, detail),
                    "train" if row.role in ("train", "pool") else "val")


def _rejects_table(rows: list[RejectRow]) -> pa.Table:
    return rows_table("rejects", sorted(rows), RejectRow)


def _boxes_of(manifests: list[Manifest], parts: list[pd.DataFrame]) -> list[pa.Table]:
    """The boxes of the images of ``parts``, per input manifest, streamed (only those rows are held)."""
    tables = []
    for number, manifest in enumerate(manifests):
        ids = pa.array(pd.concat([p.loc[p["manifest"] == number, "image_id"] for p in parts]).tolist(), pa.string())
        tables.append(manifest.read_rows("boxes", lambda batch, ids=ids: pc.is_in(batch["image_id"], ids)))
    return tables


def _split_tables(split: str, part: pd.DataFrame, box_tables: list[pa.Table]) -> tuple[pa.Table, pa.Table]:
    """The images and boxes tables of one output split (rows in (label, image_id) order)."""
    part = part.sort_values(["label", "image_id"], kind="stable").assign(split=split)
    images = pa.Table.from_pandas(part[IMAGES_SCHEMA.names], schema=IMAGES_SCHEMA, preserve_index=False)
    boxes = []
    for number, table in enumerate(box_tables):
        ids = pa.array(part.loc[part["manifest"] == number, "image_id"].tolist(), pa.string())
        if len(ids):
            boxes.append(table.filter(pc.is_in(table["image_id"], ids)))
    box_table = pa.concat_tables(boxes) if boxes else empty_table("boxes")
    box_table = box_table.sort_by([("label", "ascending"), ("image_id", "ascending"), ("box_index", "ascending")])
    return images, box_table
