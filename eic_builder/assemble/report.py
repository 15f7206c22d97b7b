"""The Markdown report of ``eic-build assemble``: our counts beside the paper's, and every rule's effect."""

from __future__ import annotations

import os
from typing import Any

from eic_builder.assemble.options import PAPER, AssembleOptions, AssembleResult
from eic_builder.atomic_files import write_text


def _range(pair: tuple[int, int]) -> str:
    return f"{pair[0]:,}-{pair[1]:,}"


def absent_line(result: AssembleResult, most: int) -> str:
    """How many and which listed classes have no image with a file in any input (at most ``most`` named)."""
    absent = result.absent_classes
    if not absent:
        return f"Every one of the {result.classes_listed:,} listed classes has images in the inputs."
    return (f"{len(absent):,} of the {result.classes_listed:,} listed classes have no image in the inputs (not in "
            "the downloads scanned; Winter 2021, for one, dropped 2,674 synsets of Fall 2011): "
            + ", ".join(absent[:most])
            + (" ..." if len(absent) > most else ""))


def report_text(result: AssembleResult, options: AssembleOptions, meta: dict[str, Any]) -> str:
    """The report as Markdown."""

    lines = [
        "# EIC assembly report", "",
        f"Command: `{meta['command']}`", "",
        "Inputs: " + ", ".join(f"`{m}`" for m in meta["assembled_from"]) + f"; image root `{meta['source_root']}`.",
        "",
        f"Options: {options.val_per_class} val images per new class, at most {options.max_train_per_class} and at "
        f"least {options.min_train_per_class} train images per new class (short classes: {options.short}), "
        f"seed {options.seed}.", "",
        "| | EIC train (ours) | EIC val (ours) | paper train | paper val |",
        "|---|---:|---:|---:|---:|",
        f"| classes | {result.classes['train']:,} | {result.classes['val']:,} | {PAPER['classes']:,} | "
        f"{PAPER['classes']:,} |",
        f"| images | {result.images['train']:,} | {result.images['val']:,} | {PAPER['train_images']:,} | "
        f"{PAPER['val_images']:,} |",
        f"| images per class (min-max) | {_range(result.per_class['train'])} | {_range(result.per_class['val'])} | "
        f"{_range(PAPER['train_per_class'])} | {_range(PAPER['val_per_class'])} |",
        f"| boxes | {result.boxes['train']:,} | {result.boxes['val']:,} | | |",
        "",
        f"The class list holds {result.classes_listed:,} classes.", "",
        "## Rules and their effect", "",
        "| rule | images |", "|---|---:|",
    ]
    lines += [f"| {rule} | {n:,} |" for rule, n in result.effects.items()]
    lines.append("")
    if result.short_classes:
        verb = {"skip": "skipped", "keep": "kept", "refuse": "refused"}[options.short]
        lines += [f"New classes with fewer than {options.min_train_per_class} training images ({verb}): "
                  f"{len(result.short_classes):,}: "
                  + ", ".join(f"{w} ({n})" for w, n in result.short_classes[:50])
                  + (" ..." if len(result.short_classes) > 50 else ""), ""]
    lines += [absent_line(result, 50), ""]
    lines += [f"Classes of the list with no image in the output: {len(result.missing_classes):,}"
              + (": " + ", ".join(result.missing_classes[:50]) + (" ..." if len(result.missing_classes) > 50 else "")
                 if result.missing_classes else ""), ""]
    lines += ["Images left out for a content copy are listed in `train/rejects.parquet` and `val/rejects.parquet` "
              "(reason `copy_of_val_image`, naming the val image).", ""]
    return "\n".join(lines)


def write_report(result: AssembleResult, path: str | os.PathLike[str], options: AssembleOptions,
                 meta: dict[str, Any]) -> None:
    """Write the report atomically."""
    write_text(path, report_text(result, options, meta))
