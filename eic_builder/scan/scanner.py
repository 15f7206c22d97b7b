"""``eic-build scan``: an ImageNet-style tree in, a manifest directory out.

The tree is indexed once (sorted walk), every image is paired with its
annotation by image id (the file stem), and the pairs are cut into units (one
or more whole folders, at most :data:`UNIT_SIZE` images each) that worker processes scan
in parallel. Each finished unit is kept under ``OUT/.scan-parts`` so that a
scan interrupted and run again redoes only the units that did not finish.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from eic_builder.atomic_files import write_text
from eic_builder.dataset.manifest import MANIFEST_FILES, read_manifest, write_manifest
from eic_builder.dataset.rows import RejectRow, rows_table
from eic_builder.dataset.tables import command_line, empty_table
from eic_builder.errors import InputNotFoundError, OptionError
from eic_builder.gzip_index import archive_record, check_index_dir, index_path
from eic_builder.output_folder import Run
from eic_builder.progress import progress
from eic_builder.rejects import Rejected
from eic_builder.scan.annotations import RawAnnotation, read_coco, read_loc_csv
from eic_builder.scan.archives import (
    SKIPPED_SYNSET,
    ArchiveEntries,
    ArchivePlan,
    ArchiveUnit,
    archive_kind,
    plan_archive,
    read_unit,
    synset_of,
    wanted_synset,
)
from eic_builder.scan.hub import hub_set, image_id_of
from eic_builder.scan.layout import (
    WNID_FORMATS,
    FileIndex,
    detect_format,
    index_sources,
    select_members,
    select_split,
)
from eic_builder.scan.options import ScanOptions
from eic_builder.scan.samples import sample_key
from eic_builder.scan.unit import ScanConfig, ScanItem, inputs_digest, scan_unit

log = logging.getLogger(__name__)

UNIT_SIZE = 2000
PARTS_DIR = ".scan-parts"


@dataclass
class ScanSummary:
    """What a scan found, for the log and the CLI's totals."""

    split: str
    format: str
    files_seen: int
    images: int
    boxes: int
    rejects: int
    ignored: dict[str, int]
    reject_reasons: dict[str, int] = field(default_factory=dict)
    units_resumed: int = 0
    units_total: int = 0
    size_disagreements: int = 0  # images whose annotation states another size than their header


def _first_by_stem(paths: list[str], kind: str, rejects: list[RejectRow]) -> dict[str, str]:
    """Map image id -> path; a later file with the same id is rejected as a duplicate."""
    out: dict[str, str] = {}
    for rel in paths:
        stem = image_id_of(rel)[0]
        if stem in out:
            rejects.append(RejectRow(rel, stem, "file", "duplicate_image_id",
                                     f"{kind} id {stem} already taken by {out[stem]}"))
        else:
            out[stem] = rel
    return out


def _items_from_tables(
    index: FileIndex, tables: list[str], reader, images: dict[str, str], rejects: list[RejectRow]
) -> list[ScanItem]:
    """Items of a tree annotated by whole-split files (LOC CSV or COCO JSON)."""
    annotations: dict[str, tuple[str, RawAnnotation]] = {}
    for rel in tables:
        try:
            result = reader(index.root / rel)
        except Rejected as exc:
            rejects.append(RejectRow(rel, None, "file", exc.reason, exc.detail))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            rejects.append(RejectRow(rel, None, "file", "unreadable", str(exc)))
            continue
        found, problems = result
        rejects += [RejectRow(rel, *problem) for problem in problems]
        for image_id, ann in found.items():
            if image_id in annotations:
                rejects.append(RejectRow(rel, image_id, "file", "duplicate_image_id",
                                f"annotated again; first in {annotations[image_id][0]}"))
                continue
            annotations[image_id] = (rel, ann)
    ids = sorted(set(images) | set(annotations))
    return [
        ScanItem(i, images.get(i), annotations[i][0] if i in annotations else None,
             annotations[i][1] if i in annotations else RawAnnotation(), probe=index.member_images.get(images.get(i)))
        for i in ids
    ]


def build_items(index: FileIndex, fmt: str) -> tuple[list[ScanItem], list[RejectRow], Counter[str]]:
    """Pair images with annotations, and each image of a webdataset shard with its sample's metadata
    (:mod:`eic_builder.scan.samples`); returns items, rejects found on the way, and files ignored by rule."""
    items, rejects, ignored = _pair(index, fmt)
    if index.member_samples:
        # a box archive covers every shard set of ImageNet-21K: boxes of images in other shards are not ours
        other = sum(item.image_rel is None for item in items)
        if other:
            ignored["annotation of an image in none of the scanned webdataset shards"] += other
            items = [item for item in items if item.image_rel is not None]
        for item in items:
            item.sample = index.member_samples.get(sample_key(item.image_rel))
    return items, rejects, ignored


def _pair(index: FileIndex, fmt: str) -> tuple[list[ScanItem], list[RejectRow], Counter[str]]:
    rejects: list[RejectRow] = []
    ignored: Counter[str] = Counter(index.ignored)
    images = _first_by_stem(index.images, "image", rejects)
    probes = index.member_images
    if fmt in ("ilsvrc-xml", "voc-xml"):
        xmls = _first_by_stem(index.xmls, "annotation", rejects)
        for _ in index.loc_csvs + index.jsons:
            ignored[f"annotation of another format ({fmt} scan)"] += 1
        ids = sorted(set(images) | set(xmls))
        return [ScanItem(i, images.get(i), xmls.get(i), probe=probes.get(images.get(i)),
                     ann_bytes=index.member_xmls.get(xmls.get(i))) for i in ids], rejects, ignored
    for _ in index.member_xmls:
        ignored[f"XML annotation in an archive ({fmt} scan)"] += 1
    loose_xmls = [rel for rel in index.xmls if rel not in index.member_xmls]
    if fmt == "loc-csv":
        for _ in loose_xmls + index.jsons:
            ignored["annotation of another format (loc-csv scan)"] += 1
        return _items_from_tables(index, index.loc_csvs, read_loc_csv, images, rejects), rejects, ignored
    for _ in loose_xmls + index.loc_csvs:
        ignored["annotation of another format (coco scan)"] += 1
    return _items_from_tables(index, index.jsons, read_coco, images, rejects), rejects, ignored


def make_units(items: list[ScanItem], unit_size: int = UNIT_SIZE) -> list[tuple[str, list[ScanItem]]]:
    """Cut items into units of whole folders (of the image, else the annotation).

    Consecutive folders share a unit up to ``unit_size`` items; a larger folder
    is cut into chunks. A unit's name hashes its image ids, so a resumed scan
    reuses a finished unit only when it holds the same images.
    """
    by_folder: dict[str, list[ScanItem]] = {}
    for item in items:
        rel = item.image_rel or item.ann_rel or ""
        by_folder.setdefault(rel.rsplit("/", 1)[0] if "/" in rel else ".", []).append(item)
    chunks: list[list[ScanItem]] = []
    current: list[ScanItem] = []
    for folder in sorted(by_folder):
        group = by_folder[folder]
        if current and len(current) + len(group) > unit_size:
            chunks.append(current)
            current = []
        for start in range(0, len(group), unit_size):
            piece = group[start : start + unit_size]
            if len(piece) == unit_size:
                chunks.append(piece)
            else:
                current.extend(piece)
    if current:
        chunks.append(current)
    units = []
    for number, chunk in enumerate(chunks):
        digest = hashlib.sha1("\n".join(i.image_id for i in chunk).encode()).hexdigest()[:16]
        units.append((f"unit-{number:06d}-{digest}", chunk))
    return units


def _scan_run(cfg: ScanConfig) -> Run:
    """The scan's run identity: what changes the rows it writes (its units live under :attr:`Run.key`)."""
    return Run("scan", {
        "root": str(Path(cfg.root).resolve()), "fmt": cfg.fmt, "split": cfg.split,
        "verify": cfg.verify_images, "expected": cfg.images_expected, "hash": cfg.hash_files,
        "wnids": len(cfg.known_wnids) if cfg.known_wnids is not None else None,
        "synsets": hashlib.sha1("\n".join(cfg.synsets).encode()).hexdigest() if cfg.synsets else None,
    })


def _concat(parts: list[tuple[pa.Table, pa.Table, pa.Table]],
            extra_rejects: list[RejectRow]) -> tuple[pa.Table, pa.Table, pa.Table]:
    images = pa.concat_tables([p[0] for p in parts]) if parts else empty_table("images")
    boxes = pa.concat_tables([p[1] for p in parts]) if parts else empty_table("boxes")
    rejects_parts = [p[2] for p in parts]
    if extra_rejects:
        rejects_parts.append(rows_table("rejects", extra_rejects, RejectRow))
    rejects = pa.concat_tables(rejects_parts) if rejects_parts else empty_table("rejects")
    images = images.sort_by([("label", "ascending"), ("image_id", "ascending")])
    boxes = boxes.sort_by([("label", "ascending"), ("image_id", "ascending"), ("box_index", "ascending")])
    rejects = rejects.sort_by([("path", "ascending"), ("image_id", "ascending"), ("reason", "ascending"),
                               ("detail", "ascending")])
    return images, boxes, rejects


def _reads_files(items: list[ScanItem], cfg: ScanConfig) -> bool:
    """Whether scanning ``items`` reads files (loose images or XMLs), rather than only checking what the
    archive phase already read."""
    return cfg.verify_images or any(
        (item.image_rel is not None and item.probe is None)
        or (item.ann_rel is not None and item.pre is None and item.ann_bytes is None and cfg.fmt.endswith("xml"))
        for item in items)


def _run_units(work: Callable, jobs: list[tuple], n_workers: int, done: Callable) -> None:
    """Call ``work(*args)`` for each ``(key, args)`` of ``jobs``, in ``n_workers`` processes (in this one when
    there is a single worker or job), and ``done(key, result)`` as each finishes."""
    if n_workers == 1 or len(jobs) <= 1:
        for key, args in jobs:
            done(key, work(*args))
        return
    with ProcessPoolExecutor(max_workers=n_workers) as pool:
        futures = {pool.submit(work, *args): key for key, args in jobs}
        for future in as_completed(futures):
            done(futures[future], future.result())


def _size_disagreements(images: pa.Table) -> int:
    """Images with a file whose annotation states another size than the file's header."""
    stated = pc.and_(images["has_image"], pc.is_valid(images["ann_width"]))
    differ = pc.or_(pc.not_equal(images["ann_width"], images["width"]),
                    pc.not_equal(images["ann_height"], images["height"]))
    return int(pc.sum(pc.and_(stated, differ)).as_py() or 0)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` -> (K, N) with 0 <= K < N; None stays None."""
    if text is None:
        return None
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit() or not 0 <= int(k) < int(n):
        raise OptionError(f"`shard` {text!r} is not K/N with 0 <= K < N (e.g. 0/4 ... 3/4)")
    return int(k), int(n)


def shard_of(name: str, n_shards: int) -> int:
    """The shard of an image id or file name: by its synset when it has one, so that a synset's images
    and boxes share a shard; else by the name itself."""
    return zlib.crc32((synset_of(name) or name).encode()) % n_shards


def _indexed(unit: ArchiveUnit) -> bool:
    """Whether a unit is a whole ``.tar.gz`` file, read once and indexed for reading in place."""
    return unit.compression == "tar.gz" and unit.start == 0 and unit.members is None


def gzip_records(index: FileIndex) -> dict[str, dict]:
    """Per ``.tar.gz`` file of the scan that holds images: its size, mtime and seek index (manifest metadata)."""
    archives = sorted({probe.archive for probe in index.member_images.values()})
    return {rel: archive_record(index.root / rel) for rel in archives
            if (index.root / rel).is_file() and archive_kind(rel) == "tar.gz"}


def _plan_units(index: FileIndex, shard: tuple[int, int] | None,
                classes: frozenset[str] | None) -> tuple[ArchivePlan, Counter[str]]:
    """The units of work of every archive of ``index``, and the files it leaves out by rule: per-synset
    archives of other shards, or of synsets not in ``classes``, and what planning ignored."""
    plan = ArchivePlan()
    ignored: Counter[str] = Counter()
    for rel in index.archives:
        if wanted_synset(rel, classes):
            plan_archive(index.root, rel, plan)
        else:
            ignored[SKIPPED_SYNSET] += 1
    if shard is not None:  # per-synset units of other shards are not read at all
        plan.units = [u for u in plan.units if synset_of(u.prefix) is None or shard_of(u.prefix, shard[1]) == shard[0]]
    wanted = [u for u in plan.units if wanted_synset(u.prefix, classes)]  # a listed tar's: seeked past
    ignored[SKIPPED_SYNSET] += len(plan.units) - len(wanted)
    plan.units = wanted
    ignored.update(plan.ignored)
    return plan, ignored


def _with_members(index: FileIndex, entries: ArchiveEntries, ignored: Counter[str]) -> FileIndex:
    """``index`` with what its archives held: images (probed), XMLs and webdataset samples, and the files
    ``ignored`` by rule on the way (zero counts dropped)."""
    images = {m.path: m.probe for m in entries.images}
    return replace(index, images=sorted(index.images + list(images)), xmls=sorted(index.xmls + list(entries.xmls)),
                   member_images=images, member_xmls=dict(entries.xmls), member_samples=dict(entries.samples),
                   ignored=index.ignored + ignored + entries.ignored)


@dataclass(frozen=True)
class ArchivesRead:
    """What the archive phase returns: the index with the archives' members, the rejects it found, and its
    units (resumed from an earlier run, in all)."""

    index: FileIndex
    rejects: list[RejectRow]
    resumed: int
    total: int


def _read_archives(index: FileIndex, parts_root: Path, n_workers: int, shard: tuple[int, int] | None = None,
                   classes: frozenset[str] | None = None) -> ArchivesRead:
    """Read every archive of ``index`` (units in parallel, each kept under ``parts_root`` for resuming);
    per-synset archives of other shards, or of synsets not in ``classes``, are not read."""
    plan, ignored = _plan_units(index, shard, classes)
    root = os.fspath(index.root)
    stats = {rel: (index.root / rel).stat() for rel in index.archives if (index.root / rel).is_file()}
    only = "" if classes is None else "-" + hashlib.sha1(",".join(sorted(classes)).encode()).hexdigest()[:12]
    keyed = [(f"archive-{unit.key(stats[unit.archive])}{only}.json", unit) for unit in plan.units]
    entries = ArchiveEntries()
    # a finished unit of a whole .tar.gz counts only with its seek index (a cleared cache reads it again)
    done = {name for name, unit in keyed if (parts_root / name).is_file()
            and (not _indexed(unit) or index_path(index.root / unit.archive).is_file())}
    for name in sorted(done):
        entries.extend(ArchiveEntries.from_json((parts_root / name).read_text()))
    todo = [(name, unit) for name, unit in keyed if name not in done]
    if any(_indexed(unit) for _, unit in todo):
        check_index_dir()  # before any decoding: an unwritable folder is one error, not a corrupt archive
    bar = progress(total=sum(u.n_bytes for _, u in todo), desc="archives", unit="B", unit_scale=True)

    def keep(job: tuple[str, ArchiveUnit], found: ArchiveEntries) -> None:
        name, unit = job
        write_text(parts_root / name, found.to_json())
        entries.extend(found)
        bar.update(unit.n_bytes)

    # a whole .tar.gz decodes in parallel threads: the cores are shared among those read at once
    threads = max(1, n_workers // max(1, min(n_workers, sum(_indexed(u) for _, u in todo))))
    _run_units(read_unit, [((name, unit), (root, unit, threads, classes)) for name, unit in todo], n_workers, keep)
    bar.close()
    return ArchivesRead(_with_members(index, entries, ignored), [*plan.rejects, *entries.rejects], len(done),
                        len(keyed))


def scan(root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
         options: ScanOptions | None = None, **fields: Any) -> ScanSummary:
    """Scan the SOURCE(s) ``root`` (folders, tars, ``.tar.gz``, annotation files) into the manifest ``out``,
    as :class:`~eic_builder.scan.options.ScanOptions` say (``fields`` make them where ``options`` is not
    given: ``scan(src, out, split="val")``). Every file seen ends in ``images`` or ``rejects``, or is
    counted as ignored in the summary.
    """
    options = options or ScanOptions(**fields)
    options.validate()
    fmt, split, verify_images, workers = options.fmt, options.split, options.verify_images, options.workers
    known_wnids, hash_files, shard = options.known_wnids, options.hash_files, options.shard
    classes, synsets = options.classes, options.synsets
    sources = [root] if isinstance(root, (str, os.PathLike)) else list(root)
    out = Path(out)
    index, split_name = select_split(index_sources(sources, exclude=out), split)
    n_workers = workers or os.cpu_count() or 1
    archive_parts = out / PARTS_DIR / "archives"
    archive_parts.mkdir(parents=True, exist_ok=True)
    archives = _read_archives(index, archive_parts, n_workers, shard, classes)
    index, split_name = select_members(archives.index, split, split_name)
    resolved = _resolve_format(index, fmt, bool(archives.rejects or index.rejects))
    items, rejects, ignored = build_items(index, resolved)
    rejects += archives.rejects + index.rejects
    if not items and not rejects:
        raise InputNotFoundError(f"{index.root} holds no {resolved} annotation or image to scan")
    if callable(known_wnids):
        known_wnids = known_wnids() if resolved in WNID_FORMATS else None
    if synsets is None and any(f.class_index is not None for f in index.member_samples.values()):
        synsets = default_synsets(index.archives)
    cfg = ScanConfig(root=os.fspath(index.root), fmt=resolved, split=split_name, verify_images=verify_images,
                     images_expected=bool(index.images), known_wnids=known_wnids, hash_files=hash_files,
                     synsets=tuple(synsets) if synsets is not None else None)
    items, rejects = _select_items(items, rejects, ignored, shard, classes)
    units = make_units(items, UNIT_SIZE)
    results, resumed = _scan_units(units, cfg, out / PARTS_DIR / _scan_run(cfg).key, n_workers)
    images, boxes, rejected = _concat([results[name] for name, _ in units], rejects)
    meta = {"command": command_line(), "source_root": str(index.root.resolve()), "format": resolved,
            "gzip_indexes": gzip_records(index),
            "shard": f"{shard[0]}/{shard[1]}" if shard else None,
            "ignored": dict(sorted(ignored.items()))}
    write_manifest(out, images, boxes, rejected, meta)
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
    reasons = Counter(rejected.column("reason").to_pylist())
    summary = ScanSummary(
        split=split_name, format=resolved, files_seen=index.n_files, images=len(images), boxes=len(boxes),
        rejects=len(rejected), ignored=dict(sorted(ignored.items())), reject_reasons=dict(sorted(reasons.items())),
        units_resumed=resumed + archives.resumed, units_total=len(units) + archives.total,
        size_disagreements=_size_disagreements(images),
    )
    log.info("scanned %s (%s): %d files seen; %d images, %d boxes, %d rejects, %d ignored",
             index.root, resolved, summary.files_seen, summary.images, summary.boxes, summary.rejects,
             sum(summary.ignored.values()))
    return summary


def default_synsets(archives: Sequence[str]) -> tuple[str, ...] | None:
    """The class list of the ``.cls`` indexes of timm's shard sets among ``archives``: timm's
    ``imagenet22k_synsets.txt`` order for ``imagenet22k-*`` shards, the 1,000 sorted ILSVRC wnids for
    ``imagenet1k-*`` ones and unnamed shards; None for other sets (12k, Winter 2021), whose json names each
    class (else ``--synsets FILE``)."""
    from eic_builder.reference_lists import POOL_FILES, data_manifests_dir, ilsvrc_classes, read_wnid_list

    sets = {s.lower().replace("-", "") for s in map(hub_set, archives) if s is not None}
    if sets and all(s.startswith("imagenet22k") for s in sets):
        return tuple(read_wnid_list(data_manifests_dir() / POOL_FILES["21k"]))
    if not sets or all(s.startswith("imagenet1k") for s in sets):
        return tuple(ilsvrc_classes()["wnid"].to_pylist())
    return None


def _resolve_format(index: FileIndex, fmt: str, has_rejects: bool) -> str:
    """The annotation format to read: ``fmt``, or the one detected with ``auto``. A source holding nothing
    recognisable is an error, unless it held only damaged input (whose rejects are then the manifest)."""
    try:
        if fmt == "auto":
            return detect_format(index)
        if not (index.images or index.xmls or index.loc_csvs or index.jsons):
            detect_format(index)  # raises the "nothing recognisable" error
        return fmt
    except InputNotFoundError:
        if not has_rejects:
            raise
        return fmt if fmt != "auto" else "ilsvrc-xml"


def _select_items(items: list[ScanItem], rejects: list[RejectRow], ignored: Counter, shard: tuple[int, int] | None,
                  classes: frozenset[str] | None) -> tuple[list[ScanItem], list[RejectRow]]:
    """The items (and rejects) of ``shard`` and of the synsets ``classes``; loose images of other synsets
    are counted in ``ignored``, never read."""
    if shard is not None:  # an empty shard is a valid (empty) manifest
        items = [item for item in items if shard_of(item.image_id, shard[1]) == shard[0]]
        rejects = [r for r in rejects if shard_of(r.image_id or r.path, shard[1]) == shard[0]]
    if classes is not None:  # loose images of other synsets (by their ids, n01440764_18) are not read
        kept = [item for item in items if wanted_synset(item.image_id, classes)]
        if len(kept) < len(items):
            ignored["image of a class not in --classes (not read)"] += len(items) - len(kept)
        items = kept
    return items, rejects


def _scan_units(units: list[tuple[str, list[ScanItem]]], cfg: ScanConfig, parts_root: Path,
                n_workers: int) -> tuple[dict[str, tuple], int]:
    """The (images, boxes, rejects) tables of every unit by name, and how many were resumed: a unit kept
    under ``parts_root`` by an earlier run is reused if its input files are unchanged, the others are scanned
    (those that read files in ``n_workers`` processes)."""
    parts_root.mkdir(parents=True, exist_ok=True)
    kept: dict[str, tuple] = {}

    def recorded(name: str) -> str | None:  # the digest a unit's part manifest records, its tables kept
        if not (parts_root / name / MANIFEST_FILES["images"]).is_file():
            return None
        part = read_manifest(parts_root / name)
        kept[name] = (part.images, part.boxes, part.rejects)
        return part.meta.get("inputs")

    chunks = dict(units)
    done, stale = Run.finished(chunks, recorded, lambda name: inputs_digest(chunks[name], cfg.root))
    results = {name: kept[name] for name in done}
    todo = [(name, chunk) for name, chunk in units if name not in results]
    resumed = len(results)
    if resumed or stale:
        log.info("resuming: %d of %d units already scanned (%d redone: their files changed)", resumed,
                 len(units), len(stale))
    bar = progress(total=sum(len(c) for _, c in todo), desc="scan", unit="img")

    def keep(job: tuple[str, int], tables: tuple) -> None:
        results[job[0]] = tables
        bar.update(job[1])

    # Units of archive members were read in the archive phase: what is left is checking boxes, cheaper
    # here than sending the items to a worker process and their rows back.
    jobs = [((name, len(chunk)), (os.fspath(parts_root / name), chunk, cfg)) for name, chunk in todo]
    read_already = [job for job in jobs if not _reads_files(job[1][1], cfg)]
    _run_units(scan_unit, read_already, 1, keep)
    _run_units(scan_unit, [job for job in jobs if _reads_files(job[1][1], cfg)], n_workers, keep)
    bar.close()
    return results, resumed
