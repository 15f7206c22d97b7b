"""Proposal recall and average recall, with the conventions of pycocotools' COCOeval (``useCats=0``).

For each IoU threshold t in 0.50:0.05:0.95 and each number of proposals k,
proposals (best first, the top k) are matched greedily to ground-truth boxes
exactly as COCOeval's ``evaluateImg`` does: a proposal takes the unmatched box
with the highest IoU >= t. Recall@t,k = matched boxes / all boxes, pooled over
images. AR@k is the mean of recall over the ten thresholds; Rec@0.5 is recall
at t = 0.5 with the top 300. By size, boxes outside the area range
(COCO: small <= 32^2 < medium <= 96^2 < large; area = w * h) are ignored, as
COCOeval does. Nothing is added to the proposals: no whole-image box.
A test checks these numbers against pycocotools itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
AREA_RANGES = {"all": (0.0, 1e5**2), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e5**2)}
MAX_DETS = (10, 100, 300, 500, 1000)


def _matched(iou: np.ndarray, ignore: np.ndarray, threshold: float) -> int:
    """Non-ignored boxes matched at one threshold, COCOeval's greedy loop (ignored boxes sorted last)."""
    n_gt = iou.shape[1]
    taken = np.zeros(n_gt, dtype=bool)
    candidates = np.flatnonzero(iou.max(axis=1) >= threshold) if n_gt else []
    for d in candidates:
        best, m = min(threshold, 1 - 1e-10), -1
        for g in range(n_gt):
            if taken[g]:
                continue
            if m > -1 and not ignore[m] and ignore[g]:
                break
            if iou[d, g] < best:
                continue
            best, m = iou[d, g], g
        if m >= 0:
            taken[m] = True
    return int(np.count_nonzero(taken & ~ignore))


def recall_table(gts: Mapping[str, torch.Tensor], proposals: Mapping[str, torch.Tensor],
                 max_dets: Sequence[int] = MAX_DETS, area: str = "all") -> np.ndarray:
    """Recall per (IoU threshold, max_dets): array (10, len(max_dets)).

    ``gts[image_id]`` (G, 4) boxes; ``proposals[image_id]`` (D, 4) boxes, best first.
    """
    lo, hi = AREA_RANGES[area]
    matched = np.zeros((len(IOU_THRESHOLDS), len(max_dets)))
    total = 0
    for image_id, gt in gts.items():
        if len(gt) == 0:
            continue
        gt = gt.double()
        areas = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])).numpy()
        ignore = (areas < lo) | (areas > hi)
        order = np.argsort(ignore, kind="stable")
        gt, ignore = gt[order], ignore[order]
        total += int(np.count_nonzero(~ignore))
        dets = proposals.get(image_id)
        if dets is None or len(dets) == 0:
            continue
        iou_all = box_iou(dets[: max(max_dets)].double(), gt).numpy()
        for j, k in enumerate(max_dets):
            iou = iou_all[:k]
            for i, t in enumerate(IOU_THRESHOLDS):
                matched[i, j] += _matched(iou, ignore, t)
    return matched / total if total else np.full_like(matched, np.nan)


def proposal_metrics(gts: Mapping[str, torch.Tensor], proposals: Mapping[str, torch.Tensor],
                     max_dets: Sequence[int] = MAX_DETS, recall_k: int = 300) -> dict[str, float]:
    """AR@k for every k, Rec@0.5 with the top ``recall_k``, AR@100 by size, and recall per IoU at ``recall_k``."""
    ks = sorted(set(max_dets) | {recall_k, 100})
    table = recall_table(gts, proposals, ks)
    out: dict[str, float] = {f"AR@{k}": float(table[:, j].mean()) for j, k in enumerate(ks) if k in max_dets}
    j = ks.index(recall_k)
    out[f"Rec@0.5@{recall_k}"] = float(table[0, j])
    for i, t in enumerate(IOU_THRESHOLDS):
        out[f"recall@{t:.2f}@{recall_k}"] = float(table[i, j])
    for size in ("small", "medium", "large"):
        out[f"AR_{size}@100"] = float(recall_table(gts, proposals, [100], size)[:, 0].mean())
    out["n_images"] = float(sum(1 for g in gts.values() if len(g)))
    out["n_boxes"] = float(sum(len(g) for g in gts.values()))
    return out


def coco_ground_truth(gts: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, int]]:
    """A COCO instances dict of the boxes (one category, area = w * h), and image id -> COCO int id."""
    ids = {image_id: k + 1 for k, image_id in enumerate(gts)}
    images = [{"id": ids[i], "file_name": i} for i in gts]
    anns, n = [], 0
    for image_id, gt in gts.items():
        for x1, y1, x2, y2 in gt.tolist():
            n += 1
            anns.append({"id": n, "image_id": ids[image_id], "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}, ids


def coco_results(proposals: Mapping[str, tuple[torch.Tensor, torch.Tensor]], ids: Mapping[str, int]) -> list[dict]:
    """Proposals as a COCO results list (category 1)."""
    out = []
    for image_id, (boxes, scores) in proposals.items():
        for (x1, y1, x2, y2), s in zip(boxes.tolist(), scores.tolist()):
            out.append({"image_id": ids[image_id], "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": s})
    return out
