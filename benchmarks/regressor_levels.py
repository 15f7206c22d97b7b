"""What a checkpoint's box regressor has learned, level by level (issue 25's diagnostic).

For every image of a manifest, resized so that its shorter side is ``--scale``, the anchors are matched to
the boxes as in training (object at IoU >= ``--pos-iou``, or a box's best anchor). For the object anchors
of each level it prints how many there are, the R^2 of the predicted deltas against the encoded targets
(dx, dy, dw, dh; 0: no better than a constant, 1: exact), and the mean IoU with the matched box of the
anchors and of the decoded boxes. It also counts, on the first 8 images, the channels of each level's
merged map G^m and of its head's conv that never fire (dead ReLUs).

Usage: python benchmarks/regressor_levels.py MANIFEST --run CHECKPOINT:LABEL [--run CHECKPOINT:LABEL ...]
       [--scale 256] [--images 150] [--pos-iou 0.5] [--store NAME]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("EIC_NO_PROGRESS", "1")

import numpy as np
import torch
from torchvision.ops import box_iou

from baseline.checkpoint import model_from_checkpoint
from baseline.data import load_records, pad_batch, prepare, read_rgb
from baseline.rpn import OBJECT, TargetConfig, assign, box_coder
from eic_builder.boxes import scale_boxes
from eic_builder.hardware import machine_line
from eic_builder.image_source import ImageReader

COORDS = ("dx", "dy", "dw", "dh")


@torch.inference_mode()
def level_report(checkpoint: str, manifest: str, scale: int, n_images: int, pos_iou: float) -> list[dict]:
    """One dict per level: positives, R^2 per coordinate, IoU of anchors and of decoded boxes, dead channels."""
    model, _ = model_from_checkpoint(checkpoint)
    records, root = load_records(manifest)
    reader = ImageReader(root)
    records = records[:n_images]
    coder, cfg = box_coder(), TargetConfig(pos_iou=pos_iou)
    # per level: the object anchors (P, 4), their matched boxes (P, 4) and predicted deltas (P, 4), all images
    found: list[list[list[torch.Tensor]]] = [[[], [], []] for _ in model.heads]
    images = []
    for record in records:
        x, (fx, fy) = prepare(read_rgb(reader, record.ref), scale, 10 * scale)  # longer side uncapped
        images.append(x)
        _, deltas, anchors, _ = model(pad_batch([x]))
        labels, matched = assign(torch.cat(anchors), scale_boxes(record.boxes, fx, fy), cfg)
        sizes = [len(a) for a in anchors]
        for m, (an, lab, mat) in enumerate(zip(anchors, labels.split(sizes), matched.split(sizes))):
            pos = lab == OBJECT
            for part, values in zip(found[m], (an[pos], mat[pos], deltas[m][0][pos])):
                part.append(values)
    maps = model.backbone(pad_batch(images[:8]))
    out = []
    for m, (a, g, d) in enumerate([torch.cat(part) for part in level] for level in found):
        p, t = d.numpy(), coder.encode_single(g, a).numpy()
        head_conv = model.heads[m].conv(maps[m])
        row = {"level": m + 1, "positives": len(p),
               "dead_merged": int(((maps[m] > 0).sum(dim=(0, 2, 3)) == 0).sum()), "channels": maps[m].shape[1],
               "dead_head": int(((head_conv > 0).sum(dim=(0, 2, 3)) == 0).sum())}
        if len(p) > 1:
            r2 = 1 - ((p - t) ** 2).mean(axis=0) / np.maximum(t.var(axis=0), 1e-12)
            row |= {f"r2_{c}": float(v) for c, v in zip(COORDS, r2)}
            row |= {"iou_anchor": float(box_iou(a, g).diagonal().mean()),
                    "iou_decoded": float(box_iou(coder.decode_single(d, a), g).diagonal().mean())}
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--run", action="append", required=True, metavar="CHECKPOINT:LABEL",
                        help="A checkpoint and the label of its rows. Repeatable.")
    parser.add_argument("--scale", type=int, default=256)
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--pos-iou", type=float, default=0.5)
    parser.add_argument("--store", metavar="NAME", help="Keep the run in benchmarks/results/ as NAME.")
    args = parser.parse_args()
    figures, rows = {}, []
    for spec in args.run:
        checkpoint, _, label = spec.rpartition(":")
        report = level_report(checkpoint, args.manifest, args.scale, args.images, args.pos_iou)
        figures[label] = {"checkpoint": checkpoint, "levels": report}
        for r in report:
            r2 = " / ".join(f"{r[f'r2_{c}']:.2f}" for c in COORDS) if "r2_dx" in r else "-"
            ious = f"{r['iou_anchor']:.3f} -> {r['iou_decoded']:.3f}" if "iou_anchor" in r else "-"
            rows.append([label, r["level"], f"{r['dead_merged']}/{r['channels']}", f"{r['dead_head']}/{r['channels']}",
                         r["positives"], r2, ious])
    header = ["run", "level", "dead merged channels", "dead head channels", "object anchors",
              "R^2 dx / dy / dw / dh", "IoU anchor -> regressed"]
    print(machine_line())
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(map(str, row)))
    if args.store:
        from results import store

        print(f"stored {store(args.store, machine_line(), figures, header, rows)}")


if __name__ == "__main__":
    main()
