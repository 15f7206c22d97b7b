"""The audit's human side: ``report.md`` (counts by split pair and method, the leakage headline) and
``contact_sheet.png`` (the closest cross-split pairs side by side: people judge duplicates by looking)."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from eic_builder.atomic_files import write_bytes, write_text
from eic_builder.audit.catalog import Catalog
from eic_builder.audit.neighbours import CANDIDATE_NEIGHBOURS
from eic_builder.audit.result import AuditResult
from eic_builder.image_source import decoding

THUMB = 160  # pixels, the longer side of each image on the contact sheet
CAPTION = 30
METHOD_ORDER = {"exact": 0, "perceptual": 1, "features": 2}


def _relations(pairs: pa.Table) -> dict[str, Counter[str]]:
    cols = pairs.select(["method", "manifest_a", "split_a", "label_a", "manifest_b", "split_b", "label_b"])
    counts: dict[str, Counter[str]] = {}
    for method, ma, sa, la, mb, sb, lb in zip(*cols.to_pydict().values()):
        method_counts = counts.setdefault(method, Counter())
        method_counts["all pairs"] += 1
        method_counts["within one split" if (ma, sa) == (mb, sb) else "across splits"] += 1
        method_counts["across manifests"] += ma != mb
        method_counts["across classes"] += la != lb
        split_pair = " / ".join(sorted((sa, sb)))
        method_counts[f"split pair {split_pair}"] += 1
    return counts


def write_report(path: Path, result: AuditResult, pairs: pa.Table, groups: pa.Table, meta: dict[str, Any]) -> Path:
    """Write ``report.md``."""
    lines = ["# Duplicate audit", "",
             f"{result.n_images:,} images with a file in {len(result.names)} manifest(s): "
             + ", ".join(f"`{n}` ({d})" for n, d in meta["manifests"].items()) + ".", ""]
    if result.without_file:
        lines += [f"{result.without_file:,} images without a file were not compared.", ""]
    params = _method_lines(result, meta)
    lines += ["Methods: " + "; ".join(f"**{m}**: {params[m]}" for m in meta["methods"]) + ".", ""]
    unmirrored = [name for name, mirror in result.mirror_features.items() if not mirror]
    if unmirrored:
        lines += [f"The features of {', '.join(f'`{n}`' for n in unmirrored)} were made without `--mirror`: the "
                  "features method cannot see their mirrored copies (perceptual can). `eic-build features "
                  "MANIFEST --on image --mirror` makes features that can.", ""]
    lines += ["## Leakage", ""]
    if result.leaks:
        lines += ["| images of | with a copy in | images |", "|---|---|---:|"]
        lines += [f"| {a} | {b} | {n:,} |" for (a, b), n in result.leaks.items()]
        lines += ["", "`eic-build filter SRC --out DIR --exclude-audit AUDIT` removes them from SRC.", ""]
    else:
        lines += ["No image of one split has a copy in a held-out split (val, test).", ""]
    counts = _relations(pairs)
    rows = sorted({r for c in counts.values() for r in c}, key=lambda r: (r.startswith("split pair"), r))
    methods = meta["methods"]
    lines += ["## Pairs by method", "", "| pairs | " + " | ".join(methods) + " |",
              "|---|" + "---:|" * len(methods)]
    fixed = ["all pairs", "within one split", "across splits", "across manifests", "across classes"]
    for row in fixed + [r for r in rows if r not in fixed]:
        lines.append(f"| {row} | " + " | ".join(f"{counts.get(m, Counter())[row]:,}" for m in methods) + " |")
    lines += _likely_lines(result, methods)
    sizes = Counter(groups.select(["group", "size"]).to_pydict()["size"])
    n_groups = result.n_groups
    largest = max(sizes) if sizes else 0
    lines += ["", "## Groups", "",
              f"{n_groups:,} groups (connected pairs of any method) hold {result.n_grouped:,} images; "
              f"the largest has {largest:,}.", "",
              "Files: `pairs.parquet` (one row per pair and method), `groups.parquet` (one row per image in a "
              "group), `contact_sheet.png` (the closest pairs across splits, or within one when there are none).",
              ""]
    return write_text(path, "\n".join(lines))


def _method_lines(result: AuditResult, meta: dict[str, Any]) -> dict[str, str]:
    """What each method compared, and what it could not (the report's "Methods" line)."""
    cut = result.cosine_cut.describe() if result.cosine_cut else meta["min_cosine"]
    return {"exact": "same SHA-1" + (f" ({result.sha1_computed:,} computed here)" if result.sha1_computed else ""),
            "perceptual": f"pHash within {meta['max_hamming']} of 64 bits"
                          + (f"; {result.undecodable:,} images could not be decoded" if result.undecodable else ""),
            "features": f"fc6 features whitened to {meta['whiten']} dimensions ({meta['index']} search), pairs at "
                        f"{cut}" + _alignment_text(result, meta)
                        + (f"; {result.without_features:,} images have no features" if result.without_features
                           else "")}


def _alignment_text(result: AuditResult, meta: dict[str, Any]) -> str:
    """What the pixel check of the features pairs did (the report's "Methods" line)."""
    if result.aligned is None:
        return "; not checked on their pixels (`--no-align`)"
    candidates, kept = result.aligned
    return (f"; {candidates:,} candidate pairs (at the cut, or from cosine {result.cosine_cut.floor:.3f} among "
            f"either image's {CANDIDATE_NEIGHBOURS} nearest) checked on their pixels: {kept:,} lie on each other, "
            f"whole or cropped, plain or mirrored, at an alignment score >= {meta['min_match']:.2f} (`--min-match`)")


def _likely_lines(result: AuditResult, methods: list[str]) -> list[str]:
    """The table of pairs by likely transformation (rows) and method (columns)."""
    from eic_builder.audit.likely import LIKELY

    kinds = [k for k in (*LIKELY, "") if any(k in result.likely.get(m, {}) for m in methods)]
    if not kinds:
        return []
    lines = ["", "## Pairs by likely transformation", "",
             "Read from each pair's SHA-1, pixel sizes and pHashes (direct and mirrored), whichever method found "
             "it: `eic_builder/audit/likely.py` says how.", "",
             "| likely transformation | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for kind in kinds:
        lines.append(f"| {kind or 'cannot tell'} | "
                     + " | ".join(f"{result.likely.get(m, {}).get(kind, 0):,}" for m in methods) + " |")
    return lines


def _thumb(cat: Catalog, i: int) -> Any:
    from PIL import Image

    data = cat.read_bytes(i)
    what = f"image {cat.image_id[i]!r} ({cat.ref[i].path}) of manifest {cat.directories[cat.manifest[i]]}"
    with decoding(what), Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (THUMB, THUMB))
        thumb = image.convert("RGB")
    thumb.thumbnail((THUMB, THUMB))
    return thumb


def write_contact_sheet(path: Path, cat: Catalog, found: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                        n_pairs: int = 12) -> Path:
    """Write ``contact_sheet.png``: up to ``n_pairs`` pairs, two images a row with their ids, splits, method
    and score; pairs across splits first, the methods taking turns, each method's closest first."""
    from PIL import Image, ImageDraw

    candidates = []
    for method, first, second, score in found:
        ranked = []
        for i, j, s in zip(first.tolist(), second.tolist(), score.tolist()):
            across = (cat.manifest[i], cat.split[i]) != (cat.manifest[j], cat.split[j])
            ranked.append((not across, -s, method, i, j))
        # the methods take turns, each closest first: one method's many identical pairs do not fill the sheet
        candidates += [(key[0], rank, METHOD_ORDER[method], *key[1:]) for rank, key in enumerate(sorted(ranked))]
    chosen, shown = [], set()
    for candidate in sorted(candidates):  # a pair found by several methods is shown once, under the first
        if (candidate[-2], candidate[-1]) not in shown and len(chosen) < n_pairs:
            shown.add((candidate[-2], candidate[-1]))
            chosen.append(candidate[:1] + candidate[2:])
    width = 2 * THUMB + 30
    sheet = Image.new("RGB", (width, max(1, len(chosen)) * (THUMB + CAPTION) + 10), "white")
    draw = ImageDraw.Draw(sheet)
    if not chosen:
        draw.text((10, 10), "no pairs found", fill="black")
    for row, (_, _, negative, method, i, j) in enumerate(chosen):
        top = 10 + row * (THUMB + CAPTION)
        for col, x in enumerate((i, j)):
            sheet.paste(_thumb(cat, x), (10 + col * (THUMB + 10), top))
            text = f"{cat.split[x]}/{cat.image_id[x]}"
            text = text if len(text) <= 27 else ".." + text[-25:]  # the end tells copies apart
            draw.text((10 + col * (THUMB + 10), top + THUMB + 2), text, fill="black")
        draw.text((10, top + THUMB + 14), f"{method} {-negative:.3f}", fill="darkred")
    buf = io.BytesIO()
    sheet.save(buf, "PNG")
    return write_bytes(path, buf.getvalue())
