"""What ``expand-classes`` writes: the class table, and its report (counts at each rule in Markdown, classes
per lexname as a PNG)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from eic_builder.atomic_files import write_bytes, write_text
from eic_builder.dataset.tables import write_table
from eic_builder.expand import Expansion


def report_markdown(result: Expansion) -> str:
    """The Markdown report: the rule chain, classes per lexname before/after, overlaps."""
    chain = " -> ".join(f"{s.left:,} {s.rule}" for s in result.steps)
    n_base = sum(result.lexname_before.values())
    n_total = sum(result.lexname_after.values())
    lines = [
        "# EIC class expansion",
        "",
        f"{n_base:,} base classes + {n_total - n_base:,} new = **{n_total:,} classes**.",
        "",
        f"Rule chain: {chain}.",
        "",
        f"Image counts: {result.image_count_source}.",
        "",
        "| rule | candidates left |",
        "|---|---:|",
        *[f"| {s.rule} | {s.left:,} |" for s in result.steps],
        "",
        "## Classes per lexicographer file",
        "",
        "| lexname | ILSVRC-1k | EIC |",
        "|---|---:|---:|",
    ]
    names = sorted(set(result.lexname_before) | set(result.lexname_after),
                   key=lambda n: (-result.lexname_after[n], n))
    lines += [f"| {n} | {result.lexname_before[n]:,} | {result.lexname_after[n]:,} |" for n in names]
    lines += ["", "## Ancestor/descendant pairs among the new classes", ""]
    if result.metadata["options"]["exclusive"]:
        lines.append("None: `--exclusive` removed them.")
    elif not result.overlaps:
        lines.append("None.")
    else:
        lines.append(f"{len(result.overlaps):,} pairs (ancestor -> descendant); `--exclusive` would keep the "
                     "more specific class of each:")
        lines.append("")
        lines += [f"- {a} -> {d}" for a, d in result.overlaps]
    return "\n".join(lines) + "\n"


def bar_chart(before: dict[str, int], after: dict[str, int], path: Path, width: int = 900) -> Path:
    """A horizontal bar chart (PNG) of classes per lexname, before (ILSVRC) and after (EIC)."""
    from PIL import Image, ImageDraw

    names = sorted(set(before) | set(after), key=lambda n: (-after.get(n, 0), n))
    row, top, left = 26, 40, 190
    height = top + row * len(names) + 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    peak = max([*after.values(), *before.values(), 1])
    scale = (width - left - 80) / peak
    draw.text((10, 10), "Classes per WordNet lexname: ILSVRC-1k (grey) and EIC (blue)", fill="black")
    for k, name in enumerate(names):
        y = top + k * row
        draw.text((10, y + 5), name, fill="black")
        b, a = before.get(name, 0), after.get(name, 0)
        draw.rectangle([left, y + 2, left + max(1, int(a * scale)), y + 11], fill=(60, 110, 200))
        draw.rectangle([left, y + 13, left + max(1, int(b * scale)), y + 22], fill=(160, 160, 160))
        draw.text((left + int(a * scale) + 6, y + 1), f"{a:,}", fill=(60, 110, 200))
        draw.text((left + int(b * scale) + 6, y + 12), f"{b:,}", fill=(90, 90, 90))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_bytes(path, buf.getvalue())
    return path


def write_report(result: Expansion, path: Path) -> tuple[Path, Path]:
    """Write ``path`` (Markdown) and the chart beside it (same name, ``.png``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, report_markdown(result))
    png = bar_chart(dict(result.lexname_before), dict(result.lexname_after), path.with_suffix(".png"))
    return path, png


def write_expansion(result: Expansion, out: str | os.PathLike[str], report: str | os.PathLike[str] | None) -> Path:
    """Write the class table (atomic Parquet) and, unless ``report`` is None, the Markdown + PNG report."""
    out = write_table(result.table, out, "eic_classes", result.metadata)
    if report is not None:
        write_report(result, Path(report))
    return out
