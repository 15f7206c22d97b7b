"""The evaluation report: a Markdown table in the paper's layout and a recall-vs-IoU plot (PNG)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

from baseline.evaluation import IOU_THRESHOLDS
from eic_builder.atomic_files import write_bytes

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75)]


def metric_columns(recall_k: int = 300) -> tuple[list[str], list[str]]:
    """(the keys of ``proposal_metrics``' figures, the table's header after "Method") of the metrics table:
    AR@10/100/300/500/1000, Rec@0.5 and Rec@0.7 (top ``recall_k``: how tight the boxes are shows at 0.7)
    and AR@100 by size."""
    keys = ["AR@10", "AR@100", "AR@300", "AR@500", "AR@1000", f"Rec@0.5@{recall_k}", f"recall@0.70@{recall_k}",
            "AR_small@100", "AR_medium@100", "AR_large@100"]
    head = ["AR@10", "AR@100", "AR@300", "AR@500", "AR@1000", f"Rec@0.5 (top {recall_k})",
            f"Rec@0.7 (top {recall_k})", "AR small", "AR medium", "AR large"]
    return keys, head


def metrics_rows(results: Mapping[str, Mapping[str, float]], recall_k: int = 300) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the metrics table (:func:`metric_columns`): one row per method, in % with two
    decimals (the one formatting of every such table)."""
    keys, head = metric_columns(recall_k)
    rows = [[name, *(f"{100 * m[c]:.2f}" if c in m and m[c] == m[c] else "n/a" for c in keys)]
            for name, m in results.items()]
    return ["Method", *head], rows


def metrics_markdown(results: Mapping[str, Mapping[str, float]], recall_k: int = 300) -> str:
    """One row per method: AR@10/100/300/500/1000, Rec@0.5 and Rec@0.7 (top ``recall_k``) and AR@100 by
    size, in %."""
    head, rows = metrics_rows(results, recall_k)
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    any_m = next(iter(results.values()))
    lines += ["", f"{int(any_m['n_boxes'])} boxes in {int(any_m['n_images'])} images; recall as COCOeval "
              "(useCats=0) computes it; AR = mean recall over IoU 0.50:0.05:0.95; no whole-image box added."]
    return "\n".join(lines) + "\n"


def recall_plot(results: Mapping[str, Mapping[str, float]], path: Path, recall_k: int = 300) -> Path:
    """Recall against IoU threshold (top ``recall_k`` proposals), one line per method."""
    from PIL import Image, ImageDraw

    w, h, left, top, right, bottom = 720, 460, 70, 40, 200, 60
    im = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(im)
    pw, ph = w - left - right, h - top - bottom
    draw.rectangle([left, top, left + pw, top + ph], outline="black")
    draw.text((left, 12), f"Recall vs IoU threshold, top {recall_k} proposals", fill="black")
    for k in range(6):
        y = top + ph - k * ph / 5
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((left - 40, y - 6), f"{k / 5:.1f}", fill="black")
    ts = list(IOU_THRESHOLDS)
    for i, t in enumerate(ts):
        x = left + i * pw / (len(ts) - 1)
        draw.line([x, top + ph, x, top + ph + 4], fill="black")
        draw.text((x - 12, top + ph + 8), f"{t:.2f}", fill="black")
    draw.text((left + pw / 2 - 30, h - 25), "IoU threshold", fill="black")
    for n, (name, m) in enumerate(results.items()):
        colour = COLOURS[n % len(COLOURS)]
        pts = [(left + i * pw / (len(ts) - 1), top + ph - m.get(f"recall@{t:.2f}@{recall_k}", 0.0) * ph)
               for i, t in enumerate(ts)]
        draw.line(pts, fill=colour, width=3)
        for x, y in pts:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.line([left + pw + 15, top + 20 * n + 6, left + pw + 35, top + 20 * n + 6], fill=colour, width=3)
        draw.text((left + pw + 40, top + 20 * n), name, fill="black")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    write_bytes(path, buf.getvalue())
    return path
