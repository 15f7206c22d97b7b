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

from eic_builder.boxes import batched_iou, box_areas, to_xywh

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
AREA_RANGES = {"all": (0.0, 1e5**2), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e5**2)}
MAX_DETS = (10, 100, 300, 500, 1000)


UNMATCHED = np.iinfo(np.int64).max  # the rank of a box no proposal takes: beyond every top-k
CHUNK_ELEMENTS = 1 << 24  # IoU entries (images x proposals x boxes) held at once: 128 MiB of float64


def _iou(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of (N, D, 4) proposals with (N, G, 4) boxes, x1y1x2y2, in float64: (N, D, G).
    torchvision's ``box_iou`` formula, batched (torch's kernels use every core); a padding box (all
    zeros) has IoU 0 with everything."""
    return batched_iou(torch.from_numpy(dets), torch.from_numpy(gts)).numpy()


def _match_ranks(iou: np.ndarray, ignore: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """For each image, threshold and box, the rank of the proposal that takes it in COCOeval's greedy
    matching, or :data:`UNMATCHED`: (N, T, G) from IoU (N, D, G), ``ignore`` and ``valid`` (N, G) masks.

    COCOeval (``evaluateImg``) takes proposals best first; each takes, among the boxes still free with
    IoU >= t, a box that is not ignored if there is one, the one of highest IoU (the last of equals).
    A proposal's match depends only on those before it, so one pass over all ranks gives the matches
    of every top-k at once (matched@k = boxes taken at a rank < k), and each rank is one step over all
    images and thresholds together, restricted to the images where that proposal overlaps a box at
    IoU >= 0.5 (below it, it takes nothing at any threshold).
    """
    g_max = iou.shape[2]
    thresholds = IOU_THRESHOLDS[None, :, None]
    rank = np.where(valid[:, None, :], UNMATCHED, -1).repeat(len(IOU_THRESHOLDS), axis=1)  # -1: padding, never free
    reaches = iou.max(axis=2) >= IOU_THRESHOLDS[0]  # (N, D)
    for d in np.flatnonzero(reaches.any(axis=0)):
        rows = np.flatnonzero(reaches[:, d])
        overlap = iou[rows, d, :][:, None, :]  # (r, 1, G)
        free = (rank[rows] == UNMATCHED) & (overlap >= thresholds)  # (r, T, G)
        kept = free & ~ignore[rows][:, None, :]
        free = np.where(kept.any(axis=2, keepdims=True), kept, free)
        takes = free.any(axis=2)
        if not takes.any():
            continue
        scored = np.where(free, overlap, -1.0)[..., ::-1]
        pick = g_max - 1 - scored.argmax(axis=2)  # the last box of the highest IoU
        r, t = np.nonzero(takes)
        rank[rows[r], t, pick[r, t]] = d
    return rank


def recall_table(gts: Mapping[str, torch.Tensor], proposals: Mapping[str, torch.Tensor],
                 max_dets: Sequence[int] = MAX_DETS, area: str = "all") -> np.ndarray:
    """Recall per (IoU threshold, max_dets): array (10, len(max_dets)).

    ``gts[image_id]`` (G, 4) boxes; ``proposals[image_id]`` (D, 4) boxes, best first. Images are
    padded to the same box and proposal counts in chunks (sorted by box count, so padding stays
    small) and matched all at once (:func:`_match_ranks`).
    """
    lo, hi = AREA_RANGES[area]
    top = max(max_dets)
    ks = np.asarray(max_dets)
    matched = np.zeros((len(IOU_THRESHOLDS), len(max_dets)))
    total = 0
    images = []
    for image_id, gt in gts.items():
        if len(gt) == 0:
            continue
        gt = gt.double().numpy()
        areas = box_areas(gt)
        ignore = (areas < lo) | (areas > hi)
        total += int(np.count_nonzero(~ignore))
        dets = proposals.get(image_id)
        if dets is not None and len(dets) and not ignore.all():
            order = np.argsort(ignore, kind="stable")  # ignored boxes last, as COCOeval sorts them
            images.append((gt[order], ignore[order], dets[:top].double().numpy()))
    images.sort(key=lambda item: len(item[0]))
    start = 0
    while start < len(images):
        g_max = len(images[start][0])
        d_max = len(images[start][2])
        stop = start + 1
        while stop < len(images):  # grow the chunk while its padded IoU array stays under CHUNK_ELEMENTS
            g_next, d_next = len(images[stop][0]), max(d_max, len(images[stop][2]))
            if (stop - start + 1) * d_next * g_next > CHUNK_ELEMENTS:
                break
            g_max, d_max, stop = g_next, d_next, stop + 1
        chunk = images[start:stop]
        gt_pad = np.zeros((len(chunk), g_max, 4))
        det_pad = np.zeros((len(chunk), d_max, 4))
        ignore = np.zeros((len(chunk), g_max), dtype=bool)
        valid = np.zeros((len(chunk), g_max), dtype=bool)
        for i, (gt, ign, dets) in enumerate(chunk):
            gt_pad[i, :len(gt)], ignore[i, :len(gt)], valid[i, :len(gt)] = gt, ign, True
            det_pad[i, :len(dets)] = dets
        rank = _match_ranks(_iou(det_pad, gt_pad), ignore, valid)  # (N, T, G)
        counted = (valid & ~ignore)[:, None, :, None] & (rank[..., None] < ks)  # (N, T, G, K)
        matched += counted.sum(axis=(0, 2))
        start = stop
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
        for corners in gt.tolist():
            n += 1
            x, y, w, h = to_xywh(*corners)
            anns.append({"id": n, "image_id": ids[image_id], "category_id": 1, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}, ids


def coco_results(proposals: Mapping[str, tuple[torch.Tensor, torch.Tensor]], ids: Mapping[str, int]) -> list[dict]:
    """Proposals as a COCO results list (category 1)."""
    out = []
    for image_id, (boxes, scores) in proposals.items():
        for corners, s in zip(boxes.tolist(), scores.tolist()):
            out.append({"image_id": ids[image_id], "category_id": 1, "bbox": list(to_xywh(*corners)), "score": s})
    return out
