"""The ``eic-build`` command line: parse options, call one library function, print its result.

Errors the user can fix (:class:`~eic_builder.errors.EICError`) print one line
and exit with code 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from eic_builder import __version__, choices
from eic_builder.errors import EICError

if TYPE_CHECKING:
    from baseline.config import TrainConfig


def _one_line(message: str) -> str:
    """An error message on one line: an error raised in a DataLoader worker arrives wrapped in the
    worker's traceback, whose last line is the error itself."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    if len(lines) > 1 and any(line.startswith("Original Traceback") for line in lines):
        return re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1])
    return " ".join(lines)


def _option_names(command: click.Command) -> dict[str, str]:
    """Keyword -> what the user typed for it: ``--hash-workers`` for an option, ``MANIFEST`` for an argument."""
    names = {}
    for param in command.params:
        if isinstance(param, click.Option):
            long = [opt for opt in param.opts if opt.startswith("--")]
            names[param.name] = (long or param.opts)[0]
        elif param.name:
            names[param.name] = param.name.upper()
    return names


class _Command(click.Command):
    """A sub-command whose errors name its options as the user typed them (see :meth:`EICError.render`)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EICError as exc:
            exc.cli_names = _option_names(self)
            raise


class _Group(click.Group):
    """Every error a user can fix, ours, click's (a bad option, a missing argument) or the operating
    system's (a full disk, a read-only folder), is one line on stderr and exit code 2; anything else is
    a bug and keeps its traceback."""

    command_class = _Command

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # `eic-build` alone: the help, as usual
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.ClickException as exc:
            click.echo(f"eic-build: error: {_one_line(exc.format_message())}", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("eic-build: aborted", err=True)
            sys.exit(1)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EICError as exc:
            click.echo(f"eic-build: error: {_one_line(exc.render(getattr(exc, 'cli_names', {})))}", err=True)
            sys.exit(2)
        except OSError as exc:  # the machine's refusal (a full disk, a read-only or missing folder): not a bug
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"eic-build: error: {exc.strerror or _one_line(str(exc))}{where}", err=True)
            sys.exit(2)


def _field_default(source: str) -> object:
    """The default of the field ``"module:Class.field"`` of an options class."""
    import dataclasses
    import importlib

    module, _, path = source.partition(":")
    cls_name, _, name = path.partition(".")
    field = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), cls_name))}[name]
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def _shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


# the options classes whose fields are the defaults of their stage's options (see _Defaulted)
_FEATURES = "eic_builder.features:FeatureConfig"
_PROPOSALS = "baseline.config:ProposalConfig"
_EVAL = "baseline.config:EvalOptions"
_ASSEMBLE = "eic_builder.assemble.options:AssembleOptions"
_AUDIT = "eic_builder.audit:AuditOptions"
_EXPORT = "eic_builder.export:ExportOptions"
_EXPAND = "eic_builder.expand:ExpandOptions"
_FILTER = "eic_builder.filters:FilterOptions"
_SCAN = "eic_builder.scan.options:ScanOptions"
_STATS = "eic_builder.stats:StatsOptions"
_HOLD_OUT = "eic_builder.holdout:HoldOutOptions"
_PLANT = "eic_builder.planted_copies:PlantOptions"


def _option(options_class: str, field: str, *decls: str, **kwargs: object):
    """``click.option(*decls)`` whose default is ``field`` of ``options_class`` (``"module:Class"``)."""
    return click.option(*decls, cls=_Defaulted, source=f"{options_class}.{field}", **kwargs)


class _Defaulted(click.Option):
    """An option whose default is a field of the stage's options class (``source``: ``"module:Class.field"``),
    read when it is needed (parsing, that command's --help), never when the CLI is imported: the options
    class is the one place the default lives. ``as_text`` gives the option the default as its text form
    (``--scales``: ``200,400,...``); ``shown`` is what --help says of a None default."""

    def __init__(self, *decls: str, source: str, as_text: bool = False, shown: str | None = None,
                 **kwargs: object) -> None:
        self.source, self.as_text, self.none_shown = source, as_text, shown
        super().__init__(*decls, default=self._default, show_default=False, **kwargs)

    def _default(self) -> object:
        value = _field_default(self.source)
        return _shown(value) if self.as_text and value is not None else value

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        value = _field_default(self.source)
        if isinstance(value, bool) and self.is_flag and not self.secondary_opts:
            return record  # a plain flag: off unless given
        shown = self.none_shown if value is None else _shown(value)
        return record if shown is None else (record[0], f"{record[1]}  [default: {shown}]".strip())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="eic-build")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings only.")
@click.option("--no-progress", is_flag=True, help="No progress bars (also EIC_NO_PROGRESS=1).")
def main(verbose: bool, quiet: bool, no_progress: bool) -> None:
    """Build, audit and measure the Extended ImageNet Classification (EIC) dataset.

    Data flow: expand-classes -> scan -> assemble -> filter -> features -> stats, and
    pretrain -> train-baseline -> eval-baseline for the hourglass RPN, experiment for the paper's
    result tables; export hands a manifest to COCO, VOC or Hugging Face tools. See CLI.md.
    """
    from eic_builder.progress import set_progress

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    set_progress(not no_progress)


@main.command("synth")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--layout", default="tree", show_default=True, type=click.Choice(choices.SYNTH_LAYOUTS),
              help="tree: an ILSVRC-style folder tree; archives: that tree under ROOT/ILSVRC plus the shapes of "
              "the ImageNet-21K downloads, ROOT/fall11_whole.tar and ROOT/Annotation.tar.gz; downloads: the files "
              "of today, the four official ILSVRC-2012 files in ROOT/ILSVRC2012 and ROOT/winter21_whole.tar.gz "
              "with ROOT/Annotation.tar.gz; hub: ImageNet as the Hugging Face Hub holds it, timm's webdataset "
              "shards (ROOT/in22k, ROOT/in22k-val: resized copies; ROOT/in1k with LOC_val_solution.csv) and "
              "ILSVRC/imagenet-1k's ROOT/hf/val_images.tar.gz and its Parquet layout in ROOT/hf-parquet, with "
              "ROOT/Annotation.tar.gz.")
@click.option("--classes", "n_classes", default=4, show_default=True,
              type=click.IntRange(1, 10), help="Number of ILSVRC classes (1-10, real wnids).")
@click.option("--train-per-class", default=12, show_default=True, type=click.IntRange(1),
              help="Train images per class.")
@click.option("--val-per-class", default=4, show_default=True, type=click.IntRange(1), help="Val images per class.")
@click.option("--new-per-class", default=30, show_default=True, type=click.IntRange(1),
              help="archives, downloads, hub: images per EIC-new synset of ImageNet-21K.")
@click.option("--seed", default=0, show_default=True, help="Random seed: same seed, same bytes.")
def synth_cmd(root: Path, layout: str, n_classes: int, train_per_class: int, val_per_class: int,
              new_per_class: int, seed: int) -> None:
    """Write small synthetic ImageNet-style data under ROOT (JPEGs + ILSVRC XML boxes).

    tree: ROOT/train/<wnid>/*.JPEG, ROOT/val/*.JPEG and ROOT/Annotations/{train,val}/...xml.
    archives: that tree in ROOT/ILSVRC, plus ROOT/fall11_whole.tar (a tar of per-synset tars: four
    EIC-new classes, two ILSVRC classes, one non-EIC synset, and one planted copy of an ILSVRC val
    image) and ROOT/Annotation.tar.gz (per-synset .tar.gz of XMLs). Used by `make demo` and the tests.
    """
    from eic_builder.synthetic import make_synthetic_archives, make_synthetic_tree

    if layout == "downloads":
        from eic_builder.synthetic import make_synthetic_downloads

        got = make_synthetic_downloads(root, n_classes, train_per_class, val_per_class, new_per_class, seed=seed)
        for path in (got.img_train, got.img_val, got.bbox_train, got.bbox_val, got.winter21, got.annotations):
            click.echo(f"wrote {path}")
        click.echo(f"{got.train_images} train and {got.val_images} val images in the ILSVRC-2012 files, "
                   f"{got.winter21_images} in {got.winter21.name}")
        return
    if layout == "hub":
        from eic_builder.synthetic import make_synthetic_hub

        hub = make_synthetic_hub(root, n_classes, val_per_class, new_per_class, seed=seed)
        for path in (*hub.in22k_train, hub.in22k_validation, hub.annotations, hub.in1k_validation, hub.hf_val,
                     hub.hf_parquet):
            click.echo(f"wrote {path}")
        click.echo(f"{hub.train_samples} samples in the imagenet22k-train shards ({hub.resized} resized; planted "
                   f"copy of an ILSVRC val image: {hub.planted}), {hub.val_images} ILSVRC val images")
        return
    if layout == "archives":
        made = make_synthetic_archives(root, n_classes, train_per_class, val_per_class, new_per_class, seed=seed)
        tree = made.ilsvrc
        click.echo(f"wrote {made.images_tar} ({made.images_in_tar} images, {made.annotated_in_tar} annotated in "
                   f"{made.annotations_tgz.name}; planted copy of an ILSVRC val image: {made.planted_copy})")
    else:
        tree = make_synthetic_tree(root, n_classes, train_per_class, val_per_class, seed)
    click.echo(f"wrote {tree.train_images} train images ({tree.train_boxes} boxes) and "
               f"{tree.val_images} val images ({tree.val_boxes} boxes) under {tree.root}")


@main.command("scan")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Manifest directory to write (images/boxes/rejects.parquet).")
@click.option("--split", default=None, help="Split to scan (train, val, ...) when the sources hold several; "
              "otherwise the name given to every image. Default: the split found, else the first SOURCE's name.")
@_option(_SCAN, "fmt", "--format", "fmt", type=click.Choice(choices.SCAN_FORMATS),
         help="Annotation format; auto detects COCO JSON, then LOC CSV, then XML.")
@click.option("--verify-images", is_flag=True, help="Decode every image fully (slow) instead of reading headers.")
@click.option("--hash", "hash_files", is_flag=True,
              help="Record the SHA-1 of loose image files too (archive members always get one); reads them whole.")
@click.option("--workers", type=int, default=None, help="Worker processes. Default: one per CPU core.")
@click.option("--shard", default=None, metavar="K/N",
              help="Scan only the synsets of shard K of N (0 <= K < N), for one scan split over machines; "
              "assemble merges the shard manifests.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A class list (data_manifests/eic_classes.parquet, or a text file of wnids): per-synset "
              "archives (<wnid>.tar) and images (<wnid>_<n>) of other synsets are not read, and counted.")
@click.option("--synsets", "synsets_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The class list of webdataset shards' .cls indexes, in index order (a text file of wnids, or "
              "a Parquet wnid column), for samples whose .json names no class.  [default: timm's order for "
              "imagenet22k-* shards, the 1,000 sorted ILSVRC wnids for imagenet1k-* and unnamed ones]")
@click.option("--wordnet-check/--no-wordnet-check", default=True, show_default=True,
              help="Reject ILSVRC/LOC boxes whose wnid is not a WordNet 3.0 noun (needs WordNet data; "
              "not loaded for VOC/COCO).")
@click.option("--wordnet-dir", type=click.Path(path_type=Path), default=None,
              help="WordNet 3.0 folder for --wordnet-check (default: EIC_WORDNET_DIR, nltk data, Debian's).")
def scan_cmd(sources: tuple[Path, ...], out: Path, split: str | None, fmt: str, verify_images: bool,
             hash_files: bool, workers: int | None, shard: str | None, classes_file: Path | None,
             synsets_file: Path | None, wordnet_check: bool, wordnet_dir: Path | None) -> None:
    """Scan ImageNet-style SOURCEs (folders, .tar, .tar.gz, annotation files) into Parquet manifests.

    Reads ILSVRC/Kaggle folders with XML boxes, a LOC_*_solution.csv, PASCAL VOC
    XML or a COCO instances JSON, and tars (nested to any depth, as ImageNet-21K's
    fall11_whole.tar) and .tar.gz (Annotation.tar.gz) in place, extracting nothing;
    also ImageNet as the Hugging Face Hub holds it: timm's webdataset shards (class
    and original size from each sample's .json/.cls) and ILSVRC/imagenet-1k's
    archives. Images and annotations of all SOURCEs pair by image id, boxes scaled
    to the stored image: `eic-build scan fall11_whole.tar Annotation.tar.gz --out m/21k`.
    Every file ends in images.parquet or rejects.parquet (with a reason), or is
    counted as ignored. An interrupted scan resumes: run the same command again.
    """
    from eic_builder.scan.options import ScanOptions
    from eic_builder.scan.scanner import parse_shard, scan

    known = None
    if wordnet_check:
        from eic_builder.wordnet import load_wordnet_index

        def known() -> frozenset[str]:
            return load_wordnet_index(wordnet_dir).noun_wnids()

    from eic_builder.reference_lists import read_wnid_list

    classes = frozenset(read_wnid_list(classes_file)) if classes_file is not None else None
    synsets = read_wnid_list(synsets_file) if synsets_file is not None else None
    s = scan(list(sources), out, ScanOptions(fmt=fmt, split=split, verify_images=verify_images, workers=workers,
                                             known_wnids=known, hash_files=hash_files, shard=parse_shard(shard),
                                             classes=classes, synsets=synsets))
    named = " ".join(str(p) for p in sources)
    click.echo(f"{named} ({s.format}, split {s.split}): {s.files_seen} files seen -> {s.images} images, "
               f"{s.boxes} boxes, {s.rejects} rejects, {sum(s.ignored.values())} ignored; wrote {out}")
    for reason, n in s.reject_reasons.items():
        click.echo(f"  rejected {n:>8}  {reason}")
    for rule, n in s.ignored.items():
        click.echo(f"  ignored  {n:>8}  {rule}")
    if s.size_disagreements:
        click.echo(f"  {s.size_disagreements} images whose box source states another size than the stored image: "
                   "their boxes are scaled to it where it is a resized copy, else size_mismatch rejects "
                   "(ann_width/ann_height keep the stated size)")
    if s.units_resumed:
        click.echo(f"  resumed {s.units_resumed} of {s.units_total} units from an earlier run")


@main.command("assemble")
@click.argument("manifests", nargs=-1, required=True, metavar="MANIFEST...", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for OUT/train, OUT/val (manifests) and OUT/report.md.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="EIC class list (expand-classes output). Default: data_manifests/eic_classes.parquet.")
@_option(_ASSEMBLE, "val_per_class", "--val-per-class", type=int, help="Val images per new class.")
@_option(_ASSEMBLE, "max_train_per_class", "--max-train-per-class", type=int,
         help="At most this many train images per new class.")
@_option(_ASSEMBLE, "min_train_per_class", "--min-train-per-class", type=int,
         help="New classes with fewer train images are short (see --short-classes).")
@_option(_ASSEMBLE, "short", "--short-classes", "short",
         type=click.Choice(choices.SHORT_POLICIES),
         help="skip short classes (listed in the report), refuse (exit with an error), or keep them.")
@_option(_ASSEMBLE, "seed", "--seed", type=int, help="Seed of the per-class draw: same seed, same bytes out.")
@_option(_ASSEMBLE, "hash_workers", "--hash-workers", type=int,
         help="Threads reading images whose scan recorded no hash (scan --hash avoids this), and processes "
         "computing the pHashes of --perceptual.")
@_option(_ASSEMBLE, "perceptual", "--perceptual/--no-perceptual",
         help="Also keep out pool images that are resized, re-encoded or mirrored copies of ILSVRC val images "
         "(pHash of each image and its mirror, as audit; reads every pool and val image once).")
@_option(_ASSEMBLE, "max_hamming", "--max-hamming", type=int,
         help="--perceptual: copies whose pHashes differ in at most N of 64 bits (audit's default).")
def assemble_cmd(manifests: tuple[Path, ...], out: Path, classes_file: Path | None, val_per_class: int,
                 max_train_per_class: int, min_train_per_class: int, short: str, seed: int, hash_workers: int,
                 perceptual: bool, max_hamming: int) -> None:
    """Build the EIC train/val manifests from ILSVRC-2012 and ImageNet-21K manifests.

    Each MANIFEST's images play the role of their split: `train` (ILSVRC-2012 train), `val`
    (ILSVRC-2012 val), anything else (a scan of fall11_whole.tar) is the pool of the new
    classes. ILSVRC classes keep ILSVRC's split; each new class draws --val-per-class val
    images and at most --max-train-per-class train images by hash of (seed, image id). No
    image is in both splits, no training image has the bytes of any val image, and no pool
    image is a resized, re-encoded or mirrored copy of an ILSVRC val image. See CLI.md.
    """
    from eic_builder.assemble import AssembleOptions, assemble
    from eic_builder.reference_lists import data_manifests_dir

    options = AssembleOptions(val_per_class=val_per_class, max_train_per_class=max_train_per_class,
                              min_train_per_class=min_train_per_class, seed=seed, short=short,
                              hash_workers=hash_workers, perceptual=perceptual, max_hamming=max_hamming)
    r = assemble(list(manifests), classes_file or data_manifests_dir() / "eic_classes.parquet", out, options)
    for split in ("train", "val"):
        low, high = r.per_class[split]
        click.echo(f"{split}: {r.images[split]:,} images, {r.boxes[split]:,} boxes, {r.classes[split]:,} classes "
                   f"({low:,}-{high:,} images per class) -> {out / split}")
    for rule, n in r.effects.items():
        click.echo(f"  {n:>10,}  {rule}")
    if r.short_classes:
        click.echo(f"  {len(r.short_classes):>10,}  classes short of --min-train-per-class ({short})")
    from eic_builder.assemble.report import absent_line

    click.echo(absent_line(r, 10))
    click.echo(f"report: {out / 'report.md'}")


@main.command("filter")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="New manifest directory.")
@click.option("--drop", default=None, help="Drop boxes with any of these flags: small, twisted (comma list).")
@click.option("--keep", default=None, help="Keep only boxes with one of these flags: small, twisted.")
@_option(_FILTER, "min_side", "--min-side", type=float, help="Drop boxes whose shorter side is under PX pixels.")
@_option(_FILTER, "small_px", "--small-px", type=float, help="Small: both sides under PX pixels.")
@_option(_FILTER, "twisted_ratio", "--twisted-ratio", type=float,
         help="Twisted: aspect above R or below 1/R.")
@click.option("--exclude-audit", "audit_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="An `audit` folder: remove the images of SRC (not of a val/test split) that have a copy in a "
                   "val/test split; each becomes a reject row naming the copy.")
@click.option("--keep-one", is_flag=True,
              help="With --exclude-audit: of each group of copies inside one split of SRC, keep only the first.")
def filter_cmd(src: Path, out: Path, drop: str | None, keep: str | None, min_side: float, small_px: float,
               twisted_ratio: float, audit_dir: Path | None, keep_one: bool) -> None:
    """Write a filtered copy of the manifest SRC (boxes, and images left without boxes, removed)."""
    from eic_builder.filters import FilterOptions, filter_manifest, parse_flags

    exclude = None
    if keep_one and audit_dir is None:
        raise click.UsageError("--keep-one needs --exclude-audit DIR")
    if audit_dir is not None:
        from eic_builder.audit.exclude import images_to_exclude

        exclude = images_to_exclude(src, audit_dir, keep_one)
    r = filter_manifest(src, out, FilterOptions(drop=parse_flags(drop), keep=parse_flags(keep), min_side=min_side,
                                                small_px=small_px, twisted_ratio=twisted_ratio, exclude=exclude))
    if audit_dir is not None:
        click.echo(f"excluded {r.excluded_images} images found in the audit {audit_dir} (now rows of rejects.parquet)")
    click.echo(f"removed {r.removed_boxes} boxes, {r.removed_images} images; "
               f"{r.kept_boxes} boxes, {r.kept_images} images left; wrote {out}")


@main.command("stats")
@click.argument("manifests", nargs=-1, metavar="NAME=DIR...")
@_option(_STATS, "fmt", "--format", "fmt", type=click.Choice(choices.STATS_FORMATS), help="Output format.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the table to FILE instead of standard output.")
@_option(_STATS, "small_px", "--small-px", type=float, help="Small: both sides under PX pixels.")
@_option(_STATS, "twisted_ratio", "--twisted-ratio", type=float, help="Twisted: aspect above R or below 1/R.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An EIC class list (expand-classes output): adds a row counting its classes present.")
@click.option("--features", "features", multiple=True, metavar="NAME=FEATDIR",
              help="fc6 shards (from `features`) of the manifest NAME: fills the two distance rows. Repeatable.")
@_option(_STATS, "inter", "--inter-distance", "inter", type=click.Choice(choices.INTER_DISTANCES),
         help="The inter-class row: cosine, the mean over class pairs of 1 - cos between centroids (at most "
                   "1 + 1/(C-1)); euclidean, the mean Euclidean distance between the L2-normalised centroids (0 "
                   "to 2), our best reading of the paper's 1.12-1.55.")
@click.option("--paper", is_flag=True, help="Add the paper's four columns (EIC and ILSVRC-2012 train/val) beside ours.")
def stats_cmd(manifests: tuple[str, ...], fmt: str, out: Path | None, small_px: float, twisted_ratio: float,
              classes_file: Path | None, features: tuple[str, ...], inter: str, paper: bool) -> None:
    """Print the paper's dataset table, one column per manifest directory NAME=DIR."""
    from eic_builder.stats import dataset_table

    eic = None
    if classes_file is not None:
        from eic_builder.reference_lists import read_wnid_list

        eic = frozenset(read_wnid_list(classes_file))
    from eic_builder.stats import StatsOptions, parse_named_dirs

    text = dataset_table(list(manifests), StatsOptions(
        fmt=fmt, small_px=small_px, twisted_ratio=twisted_ratio, paper=paper, inter=inter, eic_wnids=eic,
        features=dict(parse_named_dirs(features)) if features else None))
    if out is None:
        click.echo(text, nl=False)
    else:
        from eic_builder.atomic_files import write_text

        write_text(out, text)
        click.echo(f"wrote {out}")


# `--dtype auto`'s rule (eic_builder.hardware.resolve_dtype), in the help of every command that has it
_DTYPE_AUTO = ("auto: bfloat16 on GPUs that have it and on CPUs with native bf16 (AVX512-BF16/AMX), float32 "
               "elsewhere (emulated bf16 is several times slower).")
_DTYPE_HELP = "bfloat16: autocast in bf16. " + _DTYPE_AUTO


@main.command("features")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the fc6 shards (part-NNNNNN.parquet).")
@_option(_FEATURES, "weights", "--weights",
         help="imagenet (torchvision VGG16_Weights.IMAGENET1K_V1), random (seeded, for tests) "
         "or a state-dict FILE.")
@_option(_FEATURES, "on", "--on", "on", type=click.Choice(choices.FEATURE_TARGETS),
         help="Embed whole images, or each box crop.")
@_option(_FEATURES, "layer", "--layer", type=click.Choice(choices.FEATURE_LAYERS),
         help="fc6 before (default) or after its ReLU.")
@_option(_FEATURES, "device", "--device", type=click.Choice(choices.DEVICES))
@_option(_FEATURES, "batch_size", "--batch-size", type=int)
@_option(_FEATURES, "workers", "--workers", shown="min(8, cores)", type=click.IntRange(0),
         help="DataLoader workers (0: read in the main process).")
@_option(_FEATURES, "dtype", "--dtype", type=click.Choice(choices.DTYPES),
         help="bfloat16 converts the model's weights once. " + _DTYPE_AUTO)
@_option(_FEATURES, "loader", "--loader", type=click.Choice(choices.LOADERS),
         help="tensor: batched decode on the device (nvJPEG on CUDA) + tensor ops; pil: the classic recipe.")
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the model (worth it on long GPU runs; never chosen for you).")
@_option(_FEATURES, "shard_size", "--shard-size", type=int,
         help="Items per output shard (the resume unit).")
@_option(_FEATURES, "resize", "--resize", type=int, help="Shorter side before the centre crop.")
@_option(_FEATURES, "crop", "--crop", type=int, help="Centre crop (and box-crop) size.")
@click.option("--mirror", is_flag=True,
              help="Average each image's features with its left-right mirror image's (twice the work): an image "
              "and its mirror image get the same features, which is what `audit` needs to find mirrored copies.")
@click.option("--regions", is_flag=True,
              help="fc6 of the mean pool5 map of the whole image and five regions of 80 % of each side (centre, "
              "four corners), from the same pass: features a cropped copy shares with its original (`audit`).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image root (default: the manifest's scan root).")
@_option(_FEATURES, "seed", "--seed", type=int, help="Seed of --weights random.")
@click.option("--distributed", is_flag=True, help="Under torchrun: shard the manifest by rank.")
def features_cmd(manifest: Path, out: Path, weights: str, on: str, layer: str, device: str, batch_size: int,
                 workers: int | None, dtype: str, loader: str, compile_model: bool, shard_size: int, resize: int,
                 crop: int, mirror: bool, regions: bool, root: Path | None, seed: int, distributed: bool) -> None:
    """VGG-16 fc6 features of every image (or box) of the manifest MANIFEST, as Parquet shards.

    Preprocessing: shorter side resized to 256, centre crop 224, ImageNet mean/std
    (box crops are warped to 224x224). An interrupted run resumes: run it again.
    """
    from eic_builder.features import FeatureConfig, extract_features

    cfg = FeatureConfig(weights=weights, layer=layer, on=on, device=device, batch_size=batch_size, workers=workers,
                        dtype=dtype, loader=loader, compile=compile_model, shard_size=shard_size, seed=seed,
                        resize=resize, crop=crop, mirror=mirror, regions=regions, root=str(root) if root else None)
    s = extract_features(manifest, out, cfg, distributed=distributed)
    click.echo(f"{s.items} {on}s -> {s.shards_total} shards in {out} ({s.shards_resumed} resumed) on {s.device} "
               f"({s.settings['dtype']}); weights: {s.settings['weights']}")


@main.command("expand-classes")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Class list to write. Default: data_manifests/eic_classes.parquet.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Markdown report (a PNG chart is written beside it). Default: <out>_report.md.")
@_option(_EXPAND, "pool", "--pool",
         help="Candidates: bbox (3,627 synsets with boxes), 21k (21,841 fall-2011 synsets) or a FILE of wnids.")
@_option(_EXPAND, "target", "--target", type=int, help="Classes in all, base classes included.")
@_option(_EXPAND, "min_images", "--min-images", type=int,
         help="Least images per new class; 0 turns the rule off.")
@click.option("--image-counts", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A scan manifest of the full ImageNet to count images per wnid (default: timm's >= 500 list).")
@click.option("--exclusive", is_flag=True, help="No new class may be an ancestor of another (keeps the specific one).")
@click.option("--base", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Base classes (wnid list). Default: data_manifests/ilsvrc1k_classes.parquet.")
@click.option("--wordnet-dir", type=click.Path(path_type=Path), default=None,
              help="WordNet 3.0 folder (default: EIC_WORDNET_DIR, then nltk's data path, then /usr/share/wordnet).")
@click.option("--explain", "explain_wnid", default=None, metavar="WNID",
              help="Say why WNID is or is not a class, rule by rule, and write nothing.")
@click.option("--rebuild-cache", is_flag=True, help="Rebuild the cached WordNet noun index from nltk.")
def expand_cmd(out: Path | None, report: Path | None, pool: str, target: int, min_images: int,
               image_counts: Path | None, exclusive: bool, base: Path | None, wordnet_dir: Path | None,
               explain_wnid: str | None, rebuild_cache: bool) -> None:
    """Grow the 1,000 ILSVRC classes to the EIC class list (2,686 by default) with WordNet 3.0.

    A candidate from the pool becomes a class when it is not an ILSVRC class, is
    neither an ancestor nor a descendant of one, and has enough images; the choice
    keeps WordNet's top-level categories (lexnames) balanced. See CLI.md.
    """
    from eic_builder.expand import ExpandOptions, expand_classes, explain
    from eic_builder.expand.report import write_expansion
    from eic_builder.reference_lists import data_manifests_dir
    from eic_builder.wordnet import load_wordnet_index

    options = ExpandOptions(pool=pool, target=target, min_images=min_images,
                            image_counts=str(image_counts) if image_counts else None, exclusive=exclusive,
                            base=str(base) if base else None)
    index = load_wordnet_index(wordnet_dir, rebuild=rebuild_cache)
    if explain_wnid:
        click.echo("\n".join(explain(index, explain_wnid, options)))
        return
    result = expand_classes(index, options)
    out = out or data_manifests_dir() / "eic_classes.parquet"
    report = report or out.with_name(out.stem + "_report.md")
    write_expansion(result, out, report)
    click.echo(" -> ".join(f"{s.left:,} {s.rule}" for s in result.steps))
    click.echo(f"wrote {len(result.table):,} classes to {out}; report {report} (+ .png)")


@main.command("hold-out")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--train-out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--test-out", required=True, type=click.Path(file_okay=False, path_type=Path))
@_option(_HOLD_OUT, "fraction", "--test-fraction", "fraction", type=float, help="Share of images held out.")
@_option(_HOLD_OUT, "seed", "--seed", type=int, help="The draw: which images are held out.")
def hold_out_cmd(src: Path, train_out: Path, test_out: Path, fraction: float, seed: int) -> None:
    """Divide the manifest SRC into train and held-out parts, deterministically by image id."""
    from eic_builder.holdout import HoldOutOptions, hold_out_manifest

    n_train, n_test = hold_out_manifest(src, train_out, test_out, HoldOutOptions(fraction, seed))
    click.echo(f"{n_train} images -> {train_out}, {n_test} held out -> {test_out}")


# `split`, the command's first name, still works (scripts and RESULTS.md use it); hidden from --help
main.add_command(_Command("split", callback=hold_out_cmd.callback, params=hold_out_cmd.params, hidden=True,
                               help="The old name of hold-out."))


@main.command("export")
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="MANIFEST...")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write into.")
@_option(_EXPORT, "fmt", "--format", "fmt", type=click.Choice(choices.EXPORT_FORMATS),
         help="coco: annotations/instances_NAME.json; voc: Annotations/, JPEGImages/, ImageSets/Main/; "
              "hf: Parquet shards with the images inside and a dataset card (Hugging Face datasets).")
@click.option("--materialize", is_flag=True,
              help="coco/voc: copy the images (loose files and archive members) under --out, once; a rerun "
                   "keeps the complete ones. Without it COCO points at the images where they are and VOC links them.")
@_option(_EXPORT, "labels", "--labels", type=click.Choice(choices.LABEL_STYLES),
         help="Class names: the wnids, or WordNet lemmas (a lemma two classes share gets its wnid in brackets).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image root, when the images moved since the scan (default: the one the manifest records).")
@click.option("--wordnet-dir", type=click.Path(path_type=Path), default=None,
              help="WordNet 3.0 files, for --labels name of wnids outside the committed class lists.")
def export_cmd(manifests: tuple[Path, ...], out: Path, fmt: str, materialize: bool, labels: str, root: Path | None,
               wordnet_dir: Path | None) -> None:
    """Export manifest directories as COCO JSON, PASCAL VOC XML or a Hugging Face dataset folder.

    Each MANIFEST is exported under its split's name (its folder's name when it has several). Boxes
    are converted exactly: COCO [x, y, w, h], VOC 1-based corners, hf [x, y, w, h]; scanning the
    export gives the manifest's boxes back. Only images with a file are exported.
    """
    from eic_builder.export import ExportOptions, export_manifests

    r = export_manifests(manifests, out, ExportOptions(fmt=fmt, materialize=materialize, labels=labels, root=root,
                                                       wordnet_dir=wordnet_dir))
    for name, n_images, n_boxes in r.splits:
        click.echo(f"{name}: {n_images:,} images, {n_boxes:,} boxes")
    if r.without_file:
        click.echo(f"left out {r.without_file:,} images with no image file (and their {r.boxes_without_file:,} "
                   "boxes): annotation-only images have nothing to train on")
    if r.placement.written or r.placement.kept:
        done = (f"{r.placement.written:,} copied ({r.placement.bytes_written / 1e6:,.1f} MB)" if materialize
                else f"{r.placement.written:,} linked")
        click.echo(f"images: {done}, {r.placement.kept:,} already in place")
    for name, image_root in r.image_roots.items():
        click.echo(f"{name}: COCO file_name is relative to {image_root}")
    if r.archive_references:
        click.echo(f"note: {r.archive_references:,} images lie inside archives; only eic-build reads them there "
                   "(eic_archive keys): add --materialize for detectron2, FiftyOne or any reader of file_name")
    for path in r.files:
        click.echo(f"wrote {path}")


@main.command("audit")
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="MANIFEST...")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for pairs.parquet, groups.parquet, report.md and contact_sheet.png.")
@click.option("--features", "features", multiple=True, metavar="NAME=FEATDIR",
              help="Whole-image fc6 features (`features MANIFEST --on image`) of the manifest NAME (its split). "
                   "Repeatable; enables the features method.")
@click.option("--methods", default=None,
              help="Comma list of exact, perceptual, features.  [default: exact,perceptual, plus features when "
                   "--features is given]")
@_option(_AUDIT, "phash_threshold", "--max-hamming", "phash_threshold", type=int,
         help="perceptual: pairs whose 64-bit pHashes differ in at most N bits.")
@click.option("--min-cosine", default=None, type=float,
              help="features: pairs whose whitened features are at cosine >= C.  [default: derived from the data: "
                   "the median of each image's nearest non-copy neighbour cosine plus the multiple of their spread "
                   "above which few unrelated pairs are expected (CLI.md); stated in report.md]")
@_option(_AUDIT, "whiten_dims", "--whiten", "whiten_dims", type=int,
         help="features: PCA-whiten to N dimensions before the cosine (0: centred raw features).")
@_option(_AUDIT, "align", "--align/--no-align", "align",
         help="features: check each candidate pair on its pixels (one image laid on the other, whole or as a "
              "crop, plain or mirrored) and keep those that line up; --no-align keeps every pair at the cut.")
@_option(_AUDIT, "min_match", "--min-match", "min_match", type=click.FloatRange(-1.0, 1.0),
         help="features: the least alignment score (normalised cross-correlation of the two images' detail) "
              "of a pair kept by the pixel check.")
@_option(_AUDIT, "index", "--index", type=click.Choice(choices.AUDIT_INDEXES),
         help="features search: exact (block products, bf16 where native), FAISS inverted lists (ivf, "
              "approximate, CPU), or auto (exact up to 300,000 images or on CUDA).")
@_option(_AUDIT, "device", "--device", type=click.Choice(choices.DEVICES),
         help="Device of the features search (exact): cpu or cuda; auto: cuda when present.")
@click.option("--workers", default=None, type=click.IntRange(1), help="Processes for hashing [default: the cores].")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image root, when the images moved since the scan (default: the one each manifest records).")
def audit_cmd(manifests: tuple[Path, ...], out: Path, features: tuple[str, ...], methods: str | None,
              phash_threshold: int, min_cosine: float | None, whiten_dims: int, align: bool, min_match: float,
              index: str, device: str, workers: int | None, root: Path | None) -> None:
    """Find duplicate images inside and across MANIFESTs: same bytes, perceptual hash (of the image and of
    its mirror image), fc6 features.

    Reports train/val leakage: `filter SRC --exclude-audit OUT` removes the copies from SRC. Each pair is
    named with the transformation it most likely is (exact, reencoded, resized, mirrored, cropped). For
    features that see mirrored and cropped copies, make them with `features --on image --mirror --regions`.
    """
    from eic_builder.audit import AuditOptions, audit_manifests, parse_methods
    from eic_builder.stats import parse_named_dirs

    options = AuditOptions(features=dict(parse_named_dirs(features)) if features else None,
                           methods=parse_methods(methods) if methods else None, phash_threshold=phash_threshold,
                           min_cosine=min_cosine, whiten_dims=whiten_dims, align=align, min_match=min_match,
                           index=index, device=device,
                           workers=workers, root=root)
    r = audit_manifests(manifests, out, options)
    click.echo(f"{r.n_images:,} images in {', '.join(r.names)}; pairs: "
               + ", ".join(f"{m} {n:,}" for m, n in r.pairs.items())
               + f"; {r.n_groups:,} groups of {r.n_grouped:,} images")
    if r.cosine_cut is not None:
        click.echo(f"features: {r.cosine_cut.describe()}")
    if r.aligned is not None:
        click.echo(f"features: {r.aligned[1]:,} of {r.aligned[0]:,} candidate pairs line up on their pixels "
                   f"(alignment score >= {min_match:.2f})")
    for (split, held_out), n in r.leaks.items():
        click.echo(f"leakage: {n:,} images of {split} have a copy in {held_out}")
    if not r.leaks:
        click.echo("leakage: none found")
    for path in r.files:
        click.echo(f"wrote {path}")


@main.command("plant-copies")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for images/<label>/<id>_<transform>.JPEG and planted.csv.")
@_option(_PLANT, "per_transform", "--per-transform", type=click.IntRange(1),
         help="Copies per transformation (exact, reencode, resize, crop, flip); each original used once.")
@_option(_PLANT, "seed", "--seed", type=int, help="Which images are copied, and where crops sit.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image root (default: the manifest's scan root).")
def plant_copies_cmd(manifest: Path, out: Path, per_transform: int, seed: int, root: Path | None) -> None:
    """Write known near-copies of images of MANIFEST, to measure what `audit` finds.

    Scan OUT/images as a split (e.g. --split train) and audit it with MANIFEST; OUT/planted.csv
    lists each copy, its original and the transformation.
    """
    from eic_builder.planted_copies import TRUTH_FILE, PlantOptions, plant_copies

    copies = plant_copies(manifest, out, PlantOptions(per_transform, seed, root))
    click.echo(f"wrote {len(copies)} copies of images of {manifest} to {out / 'images'}; truth in {out / TRUTH_FILE}")


def _default_help(name: str, text: str, pretrain: bool = False) -> str:
    """An option's help with its default and --tiny's value, read from TrainConfig (or PretrainConfig):
    one source of both. Both live in the torch-free baseline.config, so --help stays fast."""
    from baseline.config import PretrainConfig, TrainConfig

    config = PretrainConfig if pretrain else TrainConfig
    default = _field_default(f"baseline.config:{config.__name__}.{name}")
    tiny = getattr(config.tiny(), name)
    extra = f"; --tiny: {_shown(tiny)}" if tiny != default else ""
    return f"{text} (default {_shown(default)}{extra})".strip()


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not a comma list of integers") from exc
    if not values:
        raise click.BadParameter("give at least one value")
    return values


# The options of one training run, shared by train-baseline and experiment (the base of every row).
_TRAINING_OPTIONS = [
    click.option("--sampling", default=None, type=click.Choice(choices.SAMPLING_STRATEGIES),
                 help=_default_help("sampling", "Order of the training images.")),
    click.option("--iters", type=int, default=None, help=_default_help("iters", "Iterations.")),
    click.option("--images-per-batch", type=int, default=None,
                 help=_default_help("images_per_batch", "Images per iteration, all ranks.")),
    click.option("--lr", type=float, default=None,
                 help=_default_help("lr", "Base learning rate (the paper's 1e-4).")),
    click.option("--lr-step", type=int, default=None,
                 help=_default_help("lr_step", "Halve the learning rate every N iterations.")),
    click.option("--optimizer", default=None, type=click.Choice(choices.OPTIMIZERS),
                 help=_default_help("optimizer", "sgd is the paper's.")),
    click.option("--pos-iou", type=float, default=None, help=_default_help("pos_iou", "IoU for an object anchor.")),
    click.option("--train-scales", default=None, help=_default_help(
        "train_scales", "Shorter sides drawn per batch (comma list; one value: a fixed training scale).")),
    click.option("--flip/--no-flip", default=None, help=_default_help(
        "flip", "Mirror half of the training images left-right (ours, not the paper's).")),
    click.option("--arch", default=None, type=click.Choice(choices.ARCHS), help=_default_help(
        "arch", "hourglass: the paper's; downsample: heads on the encoder's three maps; downsample-single: "
        "one head on its last map (the component table's structures).")),
    click.option("--encoder", default=None, type=click.Choice(choices.ENCODERS), help=_default_help(
        "encoder", "vgg16, the shallower vgg11, or googlenet (Inception with batch norm).")),
    click.option("--anchors", default=None, type=click.Choice(choices.ANCHOR_SETS), help=_default_help(
        "anchors", "30: the paper's anchors on three levels; 9: Faster R-CNN's, one scale per level.")),
    click.option("--width", type=float, default=None,
                 help=_default_help("width", "Channel multiplier of a VGG encoder.")),
    click.option("--norm", default=None, type=click.Choice(choices.NORMS),
                 help=_default_help("norm", "bn: vgg*_bn layout, and batch norm in the decoder and heads (trains "
                                    "from scratch); none: vgg* layout, the slide's merge as it is.")),
    click.option("--gray/--no-gray", default=None, help=_default_help("gray", "Train the gray class (remark c).")),
    click.option("--neg-ratio", type=float, default=None,
                 help=_default_help("neg_ratio", "Negatives per positive (remark b).")),
    click.option("--neg-ratio-control/--no-neg-ratio-control", default=None, help=_default_help(
        "neg_ratio_control", "Cap negatives at --neg-ratio per positive (remark b); off: they fill the batch.")),
    click.option("--anchors-per-image", type=int, default=None,
                 help=_default_help("anchors_per_image", "Anchors sampled per image for the loss (the paper's "
                                    "\"batch size 300\", read as anchors per image).")),
    click.option("--reg-loss", default=None, type=click.Choice(choices.REG_LOSSES), help=_default_help(
        "reg_loss", "The box term: smooth-l1 on the deltas (the paper's) or giou (1 - GIoU of the decoded boxes).")),
    click.option("--reg-weight", type=float, default=None,
                 help=_default_help("reg_weight", "Weight of the box term against the classification term.")),
    click.option("--score", default=None, type=click.Choice(choices.PROPOSAL_SCORES), help=_default_help(
        "score", "What ranks the proposals: object (the paper's object probability) or object-x-iou (ours: a "
        "quality head learns each anchor's regressed-box IoU, proposals ranked by object x IoU).")),
    click.option("--quality-weight", type=float, default=None,
                 help=_default_help("quality_weight", "Weight of the quality head's IoU term (--score object-x-iou).")),
    click.option("--quality-anchors", default=None, type=click.Choice(choices.QUALITY_ANCHORS), help=_default_help(
        "quality_anchors", "The sampled anchors whose regressed-box IoU the quality head learns: all of them "
        "(sampled) or only the object and gray ones (object-gray).")),
    click.option("--backbone-weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Encoder weights in torchvision's format: vgg16 (--norm none), vgg16_bn, vgg11(_bn), "
                 "googlenet state dicts, or the encoder.pt of eic-build pretrain."),
    click.option("--device", default=None, type=click.Choice(choices.DEVICES), help=_default_help("device", "")),
    click.option("--dtype", default=None, type=click.Choice(choices.DTYPES), help=_default_help("dtype", _DTYPE_HELP)),
    click.option("--workers", type=int, default=None, help=_default_help("workers", "DataLoader workers.")),
    click.option("--checkpoint-every", type=int, default=None,
                 help=_default_help("checkpoint_every", "Iterations between checkpoints.")),
    click.option("--seed", type=int, default=None, help=_default_help("seed", "")),
    click.option("--tiny", is_flag=True, help="The small CPU configuration of the tests and `make demo`; options "
                 "given on the command line override it."),
]


def _training_options(command):
    for option in reversed(_TRAINING_OPTIONS):
        command = option(command)
    return command


def _train_config(tiny: bool, options: dict) -> TrainConfig:
    """The TrainConfig of the training options given: what was typed overrides --tiny's or the defaults."""
    from baseline.config import TrainConfig

    given = dict(options)
    if given.get("train_scales"):
        given["train_scales"] = _ints(given["train_scales"])
    if given.get("backbone_weights"):
        given["backbone_weights"] = str(given["backbone_weights"])
    fields = {k: v for k, v in given.items() if v is not None}
    return TrainConfig.tiny(**fields) if tiny else TrainConfig(**fields)


@main.command("train-baseline")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="Held-out manifest scored (Rec@0.5, AR@100, single scale) at the end of training.")
@_training_options
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image root (default: the manifest's scan root).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many minutes of training (checkpoint at the iteration reached); the "
              "learning-rate schedule stays that of --iters.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--distributed", is_flag=True, help="Under torchrun: DistributedDataParallel.")
def train_cmd(manifest: Path, out: Path, val: Path | None, root: Path | None, minutes: float | None, tiny: bool,
              resume: bool, distributed: bool, **options: object) -> None:
    """Train the hourglass RPN on the images with boxes of MANIFEST (see CLI.md).

    Options not given take the defaults (or --tiny's values) shown in their help.
    """
    from baseline.engine import train

    cfg = _train_config(tiny, options)
    result = train(manifest, out, cfg, resume=resume, distributed=distributed, root=root,
                   max_seconds=minutes * 60 if minutes else None, val_dir=val)
    click.echo(f"trained to iteration {result.iteration} on {result.device} ({result.dtype}, "
               f"{result.images_per_second:.1f} img/s), "
               f"last loss {result.last_loss:.4f}; checkpoint {result.checkpoint}")
    if result.val:
        click.echo(f"held-out {val}: Rec@0.5 (top 300) {result.val['Rec@0.5@300']:.4f}, "
                   f"AR@100 {result.val['AR@100']:.4f}")


@main.command("pretrain")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="Manifest scored top-1 / top-5 (centre crops) at the end; images of other classes are counted, "
              "not scored.")
@click.option("--encoder", default=None, type=click.Choice(choices.ENCODERS),
              help=_default_help("encoder", "", pretrain=True))
@click.option("--width", type=float, default=None,
              help=_default_help("width", "Channel multiplier of a VGG encoder.", pretrain=True))
@click.option("--norm", default=None, type=click.Choice(choices.NORMS),
              help=_default_help("norm", "", pretrain=True))
@click.option("--iters", type=int, default=None, help=_default_help("iters", "Iterations.", pretrain=True))
@click.option("--images-per-batch", type=int, default=None,
              help=_default_help("images_per_batch", "Crops per iteration, all ranks.", pretrain=True))
@click.option("--lr", type=float, default=None,
              help=_default_help("lr", "Peak learning rate (cosine decay).", pretrain=True))
@click.option("--optimizer", default=None, type=click.Choice(choices.OPTIMIZERS),
              help=_default_help("optimizer", "", pretrain=True))
@click.option("--crop", type=int, default=None,
              help=_default_help("crop", "Crop side in pixels (a multiple of 32).", pretrain=True))
@click.option("--device", default=None, type=click.Choice(choices.DEVICES),
              help=_default_help("device", "", pretrain=True))
@click.option("--dtype", default=None, type=click.Choice(choices.DTYPES),
              help=_default_help("dtype", _DTYPE_HELP, pretrain=True))
@click.option("--workers", type=int, default=None, help=_default_help("workers", "DataLoader workers.", pretrain=True))
@click.option("--checkpoint-every", type=int, default=None,
              help=_default_help("checkpoint_every", "Iterations between checkpoints.", pretrain=True))
@click.option("--seed", type=int, default=None, help=_default_help("seed", "", pretrain=True))
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image root of both manifests (default: each manifest's scan root).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many minutes (checkpoint and encoder.pt at the iteration reached).")
@click.option("--tiny", is_flag=True, help="The small CPU configuration of the tests; typed options override it.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--distributed", is_flag=True, help="Under torchrun: DistributedDataParallel.")
def pretrain_cmd(manifest: Path, out: Path, val: Path | None, root: Path | None, minutes: float | None, tiny: bool,
                 resume: bool, distributed: bool, **options: object) -> None:
    """Train an encoder as a classifier of MANIFEST's image labels; RUN/encoder.pt is then
    train-baseline's --backbone-weights (the paper's pretraining step; see CLI.md)."""
    from baseline.pretrain import PretrainConfig, pretrain

    fields = {k: v for k, v in options.items() if v is not None}
    cfg = PretrainConfig.tiny(**fields) if tiny else PretrainConfig(**fields)
    result = pretrain(manifest, out, cfg, val, resume=resume, distributed=distributed, root=root,
                      max_seconds=minutes * 60 if minutes else None)
    click.echo(f"pretrained to iteration {result.iteration} ({result.images_per_second:.1f} img/s), last loss "
               f"{result.last_loss:.4f}; encoder weights {result.encoder_weights}")
    if result.val:
        click.echo(f"{val}: top-1 {100 * result.val['top1']:.2f} %, top-5 {100 * result.val['top5']:.2f} % on "
                   f"{result.val['images']} images ({result.val['unknown_label']} of other classes not scored)")


@main.command("eval-baseline")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Evaluation folder.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A train-baseline checkpoint (RUN/last.pt): evaluated as 'rpn'.")
@click.option("--method", "methods", multiple=True, type=click.Choice(choices.PEER_METHODS),
              help="Peer methods scored by the same code. Repeatable.")
@_option(_PROPOSALS, "scales", "--scales", as_text=True,
         help="Test scales (shorter side) of the RPN, or 'auto': one scale an image, its own shorter side "
         "clamped into the range of scales the checkpoint was trained at.")
@_option(_PROPOSALS, "top_k", "--top-k", type=int, help="Proposals kept per image.")
@click.option("--score", default=None, type=click.Choice(choices.PROPOSAL_SCORES),
              help="What ranks the RPN's proposals: 'object' (the paper's object probability) or 'object-x-iou' "
              "(times the predicted IoU of the regressed box; checkpoints trained with --score object-x-iou). "
              "Default: the one the checkpoint was trained with.")
@_option(_PROPOSALS, "quality_exponent", "--quality-exponent", type=float,
         help="With --score object-x-iou: rank by object x IoU ** this.")
@click.option("--box-voting", default=None, type=float, metavar="IOU",
              help="Replace each kept proposal by the score-weighted mean of the candidates overlapping it at "
              "least IOU (ours; default off, as in the paper).")
@click.option("--soft-nms", default=None, type=float, metavar="SIGMA",
              help="Across levels and scales, a Gaussian soft-NMS (scores decayed by exp(-IoU^2/SIGMA)) instead of "
              "the NMS at --scale-nms (ours; default off).")
@_option(_PROPOSALS, "level_nms", "--level-nms", type=float,
         help="RPN: NMS IoU threshold inside each level of each scale (the paper's inner-level 0.7).")
@_option(_PROPOSALS, "scale_nms", "--scale-nms", type=float,
         help="RPN: NMS IoU threshold over the survivors of every level and scale (the paper's inter-scale "
         "0.5); higher keeps more tightly regressed boxes beside the best-scored one (RESULTS.md).")
@_option(_EVAL, "recall_k", "--recall-k", type=int,
         help="Proposals for Rec@0.5 and the recall plot.")
@click.option("--max-images", type=int, default=None, help="Score only the first N images.")
@_option(_EVAL, "device", "--device", type=click.Choice(choices.DEVICES))
@_option(_EVAL, "dtype", "--dtype", type=click.Choice(choices.DTYPES), help=_DTYPE_HELP)
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image root (default: the manifest's scan root).")
@_option(_EVAL, "anchors_only", "--anchors-only/--no-anchors-only",
         help="Also score the checkpoint's ranked anchors with their box deltas at zero (row 'rpn-anchors', "
         "from the same forward pass): what the box regressor adds is the difference to 'rpn'.")
def eval_cmd(manifest: Path, out: Path, checkpoint: Path | None, methods: tuple[str, ...], scales: str, top_k: int,
             score: str | None, quality_exponent: float, box_voting: float | None, soft_nms: float | None,
             level_nms: float, scale_nms: float, recall_k: int, max_images: int | None, device: str, dtype: str,
             root: Path | None, anchors_only: bool) -> None:
    """Proposals of the RPN and/or peer methods on MANIFEST, scored with AR@k and Rec@0.5 (see CLI.md)."""
    from baseline.eval_run import EvalOptions, evaluate_methods
    from baseline.proposals import ProposalConfig

    auto = scales.strip() == "auto"
    cfg = ProposalConfig(scales=() if auto else _ints(scales), top_k=top_k, level_nms=level_nms,
                         scale_nms=scale_nms, score=score, quality_exponent=quality_exponent, box_voting=box_voting,
                         soft_nms=soft_nms)
    evaluate_methods(manifest, out, EvalOptions(checkpoint=str(checkpoint) if checkpoint else None,
                                                methods=list(methods), proposals=cfg, recall_k=recall_k,
                                                device=device, dtype=dtype, max_images=max_images, root=root,
                                                anchors_only=anchors_only, auto_scales=auto))
    click.echo((out / "metrics.md").read_text(), nl=False)
    click.echo(f"wrote {out}/metrics.json, metrics.md, recall_iou.png and proposals per method")


def _labelled_manifest(text: str) -> tuple[str, str] | tuple[None, str]:
    label, sep, path = text.partition("=")
    return (label, path) if sep and label and "/" not in label else (None, text)


@main.command("experiment")
@click.argument("name", type=click.Choice(choices.EXPERIMENTS))
@click.option("--train", "trains", multiple=True, required=True, metavar="[LABEL=]MANIFEST",
              help="Training manifest; data-strategy takes one or two (labels default to ILSVRC-1k, then EIC, the "
              "paper's rows), components one. Repeatable.")
@click.option("--test", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Held-out manifest every row is scored on.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Experiment folder: runs/, peers/, table.md, table.csv, table.json. Rerun to resume.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop each row's training after this many minutes (else at --iters).")
@click.option("--scales", default="600", show_default=True, help="Test scales (shorter side) of the RPN rows.")
@_training_options
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image root of every manifest (default: each manifest's scan root).")
def experiment_cmd(name: str, trains: tuple[str, ...], test: Path, out: Path, minutes: float | None, scales: str,
                   tiny: bool, root: Path | None, **options: object) -> None:
    """Regenerate one of the paper's result tables: train and score every row (see CLI.md).

    components: the structures and anchor schemes of "Component analysis" (10 rows, 9 trainings).
    data-strategy: {ILSVRC-1k, EIC} x {base, random, balanced} of "Investigation on training data",
    with Selective Search and the sliding window. The training options set the base configuration that
    every row varies; a rerun with the same options resumes at the first unfinished row.
    """
    from baseline.experiment import DEFAULT_TRAIN_LABELS, ExperimentPlan, run_experiment

    cfg = _train_config(tiny, options)
    labelled = []
    for i, text in enumerate(trains):
        label, path = _labelled_manifest(text)
        labelled.append((label or (DEFAULT_TRAIN_LABELS[i] if i < len(DEFAULT_TRAIN_LABELS) else f"train{i + 1}"),
                         path))
    plan = ExperimentPlan(name, tuple(labelled), str(test), cfg, tiny, minutes, _ints(scales),
                          str(root) if root else None)

    def report(result: object) -> None:
        figures = ", ".join(f"{k} {100 * v:.2f}" for k, v in result.metrics.items())
        click.echo(f"{result.label}: {figures}")

    run_experiment(plan, out, on_row=report)
    click.echo((out / "table.md").read_text(), nl=False)
    click.echo(f"wrote {out}/table.md, table.csv and table.json")


@main.command("reference-lists")
@click.option("--bbox-list", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The ImageNet bounding-box synset list (../shared/data/imagenet_bbox_synsets.txt).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write (default: data_manifests/).")
def reference_lists_cmd(bbox_list: Path, out: Path | None) -> None:
    """Rewrite the committed synset lists of data_manifests/ from timm and WordNet (maintainers)."""
    from eic_builder.reference_lists import data_manifests_dir, write_reference_lists

    for path in write_reference_lists(out or data_manifests_dir(), bbox_list):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
