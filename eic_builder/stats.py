"""``eic-build stats``: the paper's dataset table, one column per manifest directory.

Row definitions (see DESIGN.md, "Statistics definitions"); thresholds are options:

==================  ============================================================
# of images         images in the split (with annotations or not)
avg im # per cls    min-max of images per class (an image's class is its label)
avg anno per im     boxes / images that have at least one box
avg obj scale       mean over boxes of box area / image area, in %
small obj %         boxes with w < small_px and h < small_px (original pixels)
twisted obj %       boxes with w/h > twisted_ratio or w/h < 1/twisted_ratio
inner-cls distance  see :mod:`eic_builder.distances`
inter-cls distance  see :mod:`eic_builder.distances`
==================  ============================================================
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from eic_builder.boxes import SMALL_PX, TWISTED_RATIO, box_flags, original_scales
from eic_builder.choices import INTER_DISTANCES
from eic_builder.choices import STATS_FORMATS as OUTPUT_FORMATS
from eic_builder.dataset.manifest import read_manifest
from eic_builder.errors import OptionError, check_choice

INTER_TEXT = {
    "cosine": "mean over pairs of classes of D = 1 - cos between class centroids (mean of L2-normalised fc6 "
              "features); at most 1 + 1/(C - 1), so the paper's 1.12-1.55 are out of its reach",
    "euclidean": "mean over pairs of classes of the Euclidean distance between the L2-normalised class centroids "
                 "(0 to 2, about 1.41 for unrelated classes): our best reading of the paper's figures",
}

# The paper's dataset table (the "Extended ImageNet Classification (EIC) set" slide), each figure as printed.
PAPER_COLUMNS = ("Paper EIC/Train", "Paper EIC/Val", "Paper ILSVRC/Train", "Paper ILSVRC/Val")
PAPER_TABLE = {
    "# of images": ("2,456,727", "273,140", "1,281,167", "50,000"),
    "Avg im # per cls": ("251-1300", "34-50", "732-1300", "50"),
    "Avg anno per im": ("1.53", "1.17", "1.41", "1.02"),
    "Avg obj scale": ("25.37 %", "25.50 %", "25.39 %", "25.61 %"),
    "Small obj %": ("4.81", "4.27", "2.35", "2.47"),
    "Twisted obj %": ("42.77", "44.55", "40.72", "42.94"),
    "Inner-cls distance": ("0.434", "0.396", "0.462", "0.411"),
    "Inter-cls distance": ("1.12", "1.46", "1.52", "1.55"),
}


def _paper_number(text: str) -> object:
    return float(text.replace(",", "").rstrip(" %")) if "." in text else int(text.replace(",", ""))


def paper_numeric(row: str) -> list[object]:
    """The paper's figures of a row of :func:`numeric_rows`, as plain numbers ("" where it prints none)."""
    printed = {"Images per class (min)": [t.split("-")[0] for t in PAPER_TABLE["Avg im # per cls"]],
               "Images per class (max)": [t.split("-")[-1] for t in PAPER_TABLE["Avg im # per cls"]],
               "Avg obj scale %": list(PAPER_TABLE["Avg obj scale"])}.get(row, PAPER_TABLE.get(row))
    return [_paper_number(t) for t in printed] if printed else [""] * len(PAPER_COLUMNS)


def definitions(small_px: float = SMALL_PX, twisted_ratio: float = TWISTED_RATIO,
                inter: str = "cosine") -> list[tuple[str, str]]:
    """(row, definition) pairs printed under the table."""
    return [
        ("# of images", "images in the split (with annotations or not)"),
        ("Avg im # per cls",
         "min-max of images per class; an image's class is its label (folder wnid, else first box)"),
        ("Avg anno per im", "boxes / images that have at least one box"),
        ("Avg obj scale", "mean over boxes of box area / image area, in %"),
        ("Small obj %", f"boxes with w < {small_px:g} and h < {small_px:g} pixels (original image), in %"),
        ("Twisted obj %", f"boxes with w/h > {twisted_ratio:g} or w/h < {1 / twisted_ratio:.4g}, in %"),
        ("Inner-cls distance", "mean over classes with >= 2 images of the mean pairwise D = 1 - cos among the "
                               "class's fc6 features (i != j)"),
        ("Inter-cls distance", INTER_TEXT[inter]),
    ]


@dataclass(frozen=True)
class SplitStats:
    """The statistics of one manifest directory (NaN/None where undefined)."""

    name: str
    n_images: int
    n_classes: int
    images_per_class_min: int | None
    images_per_class_max: int | None
    n_boxes: int
    n_annotated_images: int
    anno_per_image: float
    obj_scale_pct: float
    small_pct: float
    twisted_pct: float
    inner_distance: float | None = None
    inter_distance: float | None = None
    distance_note: str = "n/a (no features)"
    eic_classes_present: int | None = None
    eic_classes_total: int | None = None


def compute_split_stats(
    name: str,
    directory: str | os.PathLike[str],
    small_px: float = SMALL_PX,
    twisted_ratio: float = TWISTED_RATIO,
    eic_wnids: frozenset[str] | None = None,
) -> SplitStats:
    """Statistics of the manifest at ``directory`` (vectorised over boxes; no per-row Python)."""
    manifest = read_manifest(directory, box_columns=["image_id", "x1", "y1", "x2", "y2", "area_ratio"])
    images, boxes = manifest.images, manifest.boxes
    labels = images["label"].drop_null()
    counts = pc.value_counts(labels).field("counts").to_numpy() if len(labels) else np.zeros(0, dtype=np.int64)
    n_boxes = len(boxes)
    n_annotated = int(pc.sum(pc.greater(images["n_boxes"], 0)).as_py() or 0)
    if n_boxes:
        cols = {c: boxes[c].to_numpy() for c in ("x1", "y1", "x2", "y2")}
        ones = np.ones(n_boxes)
        # small in the original image's pixels
        sx, sy = original_scales(images, pc.index_in(boxes["image_id"], images["image_id"]))
        flags = box_flags(cols["x1"], cols["y1"], cols["x2"], cols["y2"], ones, ones, small_px, twisted_ratio,
                          sx, sy)
        scale = float(np.mean(boxes["area_ratio"].to_numpy(), dtype=np.float64)) * 100
        small = float(np.count_nonzero(flags.is_small)) / n_boxes * 100
        twisted = float(np.count_nonzero(flags.is_twisted)) / n_boxes * 100
    else:
        scale = small = twisted = math.nan
    present = None
    if eic_wnids is not None:
        present = len(set(pc.unique(labels).to_pylist()) & eic_wnids)
    return SplitStats(
        name=name,
        n_images=len(images),
        n_classes=len(counts),
        images_per_class_min=int(counts.min()) if len(counts) else None,
        images_per_class_max=int(counts.max()) if len(counts) else None,
        n_boxes=n_boxes,
        n_annotated_images=n_annotated,
        anno_per_image=n_boxes / n_annotated if n_annotated else math.nan,
        obj_scale_pct=scale,
        small_pct=small,
        twisted_pct=twisted,
        eic_classes_present=present,
        eic_classes_total=len(eic_wnids) if eic_wnids is not None else None,
    )


def _fmt(value: float | None, digits: int, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def _distance_cell(value: float | None, s: SplitStats) -> str:
    if value is None:
        return s.distance_note if s.distance_note else "n/a"
    return f"{value:.3f}{s.distance_note}"


def table_rows(stats: Sequence[SplitStats]) -> list[list[str]]:
    """The table as text cells: one row per statistic, one column per split (first cell: row name)."""
    rows = [
        ["# of images", *[f"{s.n_images:,}" for s in stats]],
        ["Avg im # per cls", *[
            f"{s.images_per_class_min}-{s.images_per_class_max}" if s.images_per_class_min is not None else "n/a"
            for s in stats]],
        ["Avg anno per im", *[_fmt(s.anno_per_image, 2) for s in stats]],
        ["Avg obj scale", *[_fmt(s.obj_scale_pct, 2, " %") for s in stats]],
        ["Small obj %", *[_fmt(s.small_pct, 2) for s in stats]],
        ["Twisted obj %", *[_fmt(s.twisted_pct, 2) for s in stats]],
        ["Inner-cls distance", *[_distance_cell(s.inner_distance, s) for s in stats]],
        ["Inter-cls distance", *[_distance_cell(s.inter_distance, s) for s in stats]],
    ]
    if any(s.eic_classes_total is not None for s in stats):
        rows.append(["EIC classes present", *[
            f"{s.eic_classes_present:,} of {s.eic_classes_total:,}" if s.eic_classes_total is not None else "n/a"
            for s in stats]])
    return rows


RANDOM_WEIGHTS_NOTE = " (random weights)"  # after a distance computed from features of untrained weights


def numeric_rows(stats: Sequence[SplitStats]) -> list[list[object]]:
    """The table as plain numbers (csv): counts as integers, percentages as floats, empty when undefined."""
    def num(value: float | None) -> object:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value

    rows: list[list[object]] = [
        ["# of images", *[s.n_images for s in stats]],
        ["Images per class (min)", *[num(s.images_per_class_min) for s in stats]],
        ["Images per class (max)", *[num(s.images_per_class_max) for s in stats]],
        ["Avg anno per im", *[num(s.anno_per_image) for s in stats]],
        ["Avg obj scale %", *[num(s.obj_scale_pct) for s in stats]],
        ["Small obj %", *[num(s.small_pct) for s in stats]],
        ["Twisted obj %", *[num(s.twisted_pct) for s in stats]],
        ["Inner-cls distance", *[num(s.inner_distance) for s in stats]],
        ["Inter-cls distance", *[num(s.inter_distance) for s in stats]],
    ]
    if any(s.eic_classes_total is not None for s in stats):
        rows.append(["EIC classes present", *[num(s.eic_classes_present) for s in stats]])
    if any(s.distance_note == RANDOM_WEIGHTS_NOTE for s in stats):  # the label the text cells carry, kept
        rows.append(["Distance features", *[RANDOM_WEIGHTS_NOTE.strip(" ()") if s.distance_note == RANDOM_WEIGHTS_NOTE
                                            else "" for s in stats]])
    return rows


# Display names of column groups (the paper's header) for the usual prefixes of NAME=DIR.
GROUP_TITLES = {"EIC": "Extended ImageNet", "ILSVRC": "ILSVRC CLS 2012",
                "Paper EIC": "Extended ImageNet (paper)", "Paper ILSVRC": "ILSVRC CLS 2012 (paper)"}


def column_groups(names: Sequence[str]) -> list[tuple[str, int]] | None:
    """(group title, span) over the columns when names are ``GROUP/SUB`` and neighbours share a GROUP, else None."""
    if not any("/" in n for n in names):
        return None
    groups: list[tuple[str, int]] = []
    for name in names:
        prefix = name.split("/", 1)[0] if "/" in name else ""
        if groups and groups[-1][0] == prefix:
            groups[-1] = (prefix, groups[-1][1] + 1)
        else:
            groups.append((prefix, 1))
    return [(GROUP_TITLES.get(p, p), span) for p, span in groups]


@dataclass(frozen=True)
class _Table:
    """What every format renders: the split statistics, the column names (ours, then the paper's with
    ``paper``), the text rows and the definitions."""

    stats: Sequence[SplitStats]
    names: list[str]
    rows: list[list[str]]
    defs: list[tuple[str, str]]
    paper: bool
    inter: str

    @property
    def header(self) -> list[str]:
        return ["Dataset split", *self.names]


def _render_json(t: _Table) -> str:
    doc = {"splits": [asdict(s) for s in t.stats], "table": [dict(zip(t.header, r)) for r in t.rows],
           "definitions": dict(t.defs), "inter_distance": t.inter}
    if t.paper:  # plain numbers, by the rows of the csv
        numeric = [(r[0], paper_numeric(r[0])) for r in numeric_rows(t.stats)]
        doc["paper"] = {column: {row: values[k] for row, values in numeric} for k, column in enumerate(PAPER_COLUMNS)}
    return json.dumps(doc, indent=2, default=lambda v: None) + "\n"


def _render_csv(t: _Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(t.header)
    writer.writerows([[*r, *paper_numeric(r[0])] if t.paper else r for r in numeric_rows(t.stats)])
    return buf.getvalue()


def _latex_escaped(text: str) -> str:
    return text.replace("%", r"\%").replace("#", r"\#").replace("_", r"\_").replace("&", r"\&")


def _render_latex(t: _Table) -> str:
    esc = _latex_escaped
    groups = column_groups(t.names)
    lines = [r"\begin{tabular}{l" + "r" * len(t.stats) + "}", r"\hline"]
    if groups:
        cells, rules, col = ["Dataset split"], [], 2
        for title, span in groups:
            cells.append(rf"\multicolumn{{{span}}}{{c}}{{{esc(title)}}}" if span > 1 else esc(title))
            if title:
                rules.append(rf"\cline{{{col}-{col + span - 1}}}")
            col += span
        subs = [n.split("/", 1)[1] if "/" in n else n for n in t.names]
        lines += [" & ".join(cells) + r" \\", "".join(rules), " & ".join(["", *map(esc, subs)]) + r" \\"]
    else:
        lines.append(" & ".join(esc(h) for h in t.header) + r" \\")
    lines.append(r"\hline")
    lines += [" & ".join(esc(c) for c in r) + r" \\" for r in t.rows]
    lines += [r"\hline", r"\end{tabular}", ""]
    lines += [f"% {name}: {text}" for name, text in t.defs]
    return "\n".join(lines) + "\n"


def _render_md(t: _Table) -> str:
    groups = column_groups(t.names)
    if groups:
        top = ["Dataset split"]
        for title, span in groups:
            top += [title] + [""] * (span - 1)
        table = [top, ["", *[n.split("/", 1)[1] if "/" in n else n for n in t.names]], *t.rows]
    else:
        table = [t.header, *t.rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(t.header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [line(table[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in table[1:]]
    out += ["", "Definitions:"] + [f"- {name}: {text}" for name, text in t.defs]
    return "\n".join(out) + "\n"


RENDERERS = {"md": _render_md, "csv": _render_csv, "latex": _render_latex, "json": _render_json}


def render(stats: Sequence[SplitStats], fmt: str = "md", small_px: float = SMALL_PX,
           twisted_ratio: float = TWISTED_RATIO, paper: bool = False, inter: str = "cosine") -> str:
    """Render the table in ``fmt`` (md, csv, latex, json); md and latex end with the definitions.

    Names of the form ``GROUP/SUB`` (``EIC/Train``) give md and latex a two-level header, the
    paper's layout; csv and json stay flat, csv with plain numbers. ``paper`` adds the paper's four
    columns (:data:`PAPER_TABLE`, as printed; plain numbers in csv and json); ``inter`` names the
    reading of the inter-class distance the table holds (for its definition).
    """
    check_choice("fmt", fmt, OUTPUT_FORMATS)
    names = [s.name for s in stats] + (list(PAPER_COLUMNS) if paper else [])
    rows = table_rows(stats)
    if paper:
        rows = [[*r, *PAPER_TABLE.get(r[0], ("n/a",) * len(PAPER_COLUMNS))] for r in rows]
    defs = definitions(small_px, twisted_ratio, inter)
    if paper:
        defs.append(("Paper columns", "the paper's dataset table as printed (EIC train/val, ILSVRC-2012 train/val)"))
    return RENDERERS[fmt](_Table(stats, names, rows, defs, paper, inter))


def parse_named_dirs(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """Parse ``NAME=DIR`` arguments (a bare ``DIR`` is named after its folder)."""
    if not specs:
        raise OptionError("give at least one manifest as NAME=DIR")
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        if not name or not path:
            raise OptionError(f"{spec!r} is not NAME=DIR")
        out.append((name, Path(path)))
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise OptionError(f"column name(s) {', '.join(dup)} given twice; names must be unique")
    return out


@dataclass(frozen=True)
class StatsOptions:
    """The knobs of ``stats``: output ``fmt`` (:data:`OUTPUT_FORMATS`); a box is small with both sides under
    ``small_px`` pixels and twisted with its aspect above ``twisted_ratio`` or below its inverse;
    ``features`` (manifest name -> fc6 shards) fill the distance rows, read as ``inter`` (cosine or
    euclidean); ``eic_wnids`` adds a row counting those classes present; ``paper`` adds the paper's columns."""

    fmt: str = "md"
    small_px: float = SMALL_PX
    twisted_ratio: float = TWISTED_RATIO
    features: Mapping[str, str | os.PathLike[str]] | None = None
    eic_wnids: frozenset[str] | None = None
    paper: bool = False
    inter: str = "cosine"

    def validate(self) -> None:
        """Refuse options that cannot be run, before any manifest is read."""
        check_choice("fmt", self.fmt, OUTPUT_FORMATS)
        check_choice("inter", self.inter, INTER_DISTANCES)
        if self.small_px <= 0:
            raise OptionError(f"`small_px`={self.small_px} must be > 0")
        if self.twisted_ratio <= 1:
            raise OptionError(f"`twisted_ratio`={self.twisted_ratio} must be > 1")


def dataset_table(specs: Sequence[str], options: StatsOptions | None = None, **fields: object) -> str:
    """The whole ``stats`` command: parse ``NAME=DIR`` specs, compute, render (see :class:`StatsOptions`;
    ``fields`` make the options where ``options`` is not given)."""
    options = options or StatsOptions(**fields)
    options.validate()
    fmt, small_px, twisted_ratio, inter = options.fmt, options.small_px, options.twisted_ratio, options.inter
    named = parse_named_dirs(specs)
    features = dict(options.features or {})
    unknown = sorted(set(features) - {name for name, _ in named})
    if unknown:
        raise OptionError(f"`features` names {', '.join(unknown)} match no manifest; names: "
                          f"{', '.join(name for name, _ in named)}")
    stats = []
    for name, path in named:
        split_stats = compute_split_stats(name, path, small_px, twisted_ratio, options.eic_wnids)
        if name in features:
            split_stats = with_distances(split_stats, features[name], inter)
        stats.append(split_stats)
    return render(stats, fmt, small_px, twisted_ratio, options.paper, inter)


def with_distances(s: SplitStats, feature_dir: str | os.PathLike[str], inter: str = "cosine") -> SplitStats:
    """``s`` with the two distance rows computed from the fc6 shards in ``feature_dir``; ``inter`` picks the
    reading of the inter-class row (:data:`INTER_TEXT`)."""
    from dataclasses import replace

    from eic_builder.dataset.feature_shards import feature_shards
    from eic_builder.dataset.tables import read_metadata
    from eic_builder.distances import feature_distances

    meta = read_metadata(feature_shards(feature_dir)[0])
    distances = feature_distances(feature_dir)
    note = RANDOM_WEIGHTS_NOTE if meta.get("random_weights") else ""
    value = distances.inter if inter == "cosine" else distances.inter_euclidean
    return replace(s, inner_distance=distances.inner, inter_distance=value, distance_note=note or "")
