"""``eic-build eval-baseline``: proposals from each method on a manifest, scored by one evaluator.

Writes, under OUT: ``<method>/proposals.parquet`` (image_id, rank, score, x1, y1,
x2, y2 in original pixels), ``<method>/proposals_coco.json`` (COCO results,
category 1), ``gt_coco.json`` (the boxes as COCO instances, to re-score with
pycocotools), ``metrics.json``, ``metrics.md`` (the paper's layout) and
``recall_iou.png``. A checkpoint is scored twice from one forward pass: ``rpn`` (its proposals) and
``rpn-anchors`` (its ranked anchors with the deltas at zero), so that what the box regressor adds is
one row of the table (``--no-anchors-only`` leaves that row out).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from baseline.config import EvalOptions, TrainConfig
from baseline.data import load_records, read_rgb
from baseline.evaluation import MAX_DETS, coco_ground_truth, coco_results, proposal_metrics
from baseline.model import HourglassRPN
from baseline.peers import selective_search, sliding_window
from baseline.proposals import ProposalConfig, propose_sets, ranking_score
from baseline.report import metrics_markdown, recall_plot
from eic_builder.atomic_files import write_text
from eic_builder.dataset.tables import to_table, write_table
from eic_builder.devices import resolve_device
from eic_builder.hardware import bf16_autocast
from eic_builder.image_source import ImageReader
from eic_builder.progress import progress

log = logging.getLogger(__name__)


def _proposer(method: str, model: HourglassRPN | None, cfg: ProposalConfig, device: torch.device,
              options: EvalOptions) -> Callable[[torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """image (3, H, W) uint8 -> {name: (boxes, scores)}: one set for a peer, ``rpn`` (and ``rpn-anchors``)
    for the network."""
    if method == "rpn":
        model = model.to(device, memory_format=torch.channels_last)
        bf16 = bf16_autocast(options.dtype, device)
        return lambda image: propose_sets(model, image, cfg, device, bf16, options.anchors_only)
    if method == "selective-search":
        return lambda image: {method: selective_search(image, cfg.top_k)}
    return lambda image: {method: sliding_window(image, cfg.top_k)}


def resolve_proposals(cfg: ProposalConfig, model: HourglassRPN, trained: TrainConfig,
                      auto_scales: bool) -> ProposalConfig:
    """``cfg`` with what the checkpoint decides made explicit (what ``metrics.json`` records): the ranking
    score (``cfg.score``, else the one the checkpoint was trained for) and, with ``auto_scales``, the
    range of its training scales as ``scale_range``."""
    cfg = replace(cfg, score=ranking_score(model, cfg))
    if auto_scales:
        cfg = replace(cfg, scale_range=(min(trained.train_scales), max(trained.train_scales)))
    return cfg


def _device_line(device: torch.device) -> str | None:
    """The GPU's name when scoring ran on one (the machine line of a stored run)."""
    return f"GPU: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else None


def evaluate_methods(manifest_dir: str | os.PathLike[str], out: str | os.PathLike[str],
                     options: EvalOptions | None = None) -> dict[str, dict]:
    """Run every method (``rpn`` when a checkpoint is given) and write the files listed in the module doc."""
    options = options or EvalOptions()
    options.validate()
    checkpoint, methods, recall_k, max_images = options.checkpoint, options.methods, options.recall_k, \
        options.max_images
    cfg = options.proposals or ProposalConfig()
    names = (["rpn"] if checkpoint else []) + list(methods)
    dev = resolve_device(options.device)
    model = None
    if checkpoint:
        from baseline.checkpoint import model_from_checkpoint

        model, trained = model_from_checkpoint(checkpoint)
        cfg = resolve_proposals(cfg, model, trained, options.auto_scales)
    cfg.validate()
    records, root = load_records(manifest_dir, options.root)
    reader = ImageReader(root)
    records = records[:max_images] if max_images else records
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gts = {record.image_id: record.boxes for record in records}
    gt_json, ids = coco_ground_truth(gts)
    write_text(out / "gt_coco.json", json.dumps(gt_json))
    results: dict[str, dict] = {}
    for name in names:
        fn = _proposer(name, model, cfg, dev, options)
        found: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        t0 = time.perf_counter()
        for record in progress(records, desc=name, unit="img"):
            for kind, proposals in fn(read_rgb(reader, record.ref)).items():
                found.setdefault(kind, {})[record.image_id] = proposals
        took = time.perf_counter() - t0
        for kind, proposals in found.items():  # rpn's two sets share one forward pass, hence its time
            _write_proposals(out / kind, proposals, ids)
            metrics = proposal_metrics(gts, {k: v[0] for k, v in proposals.items()}, MAX_DETS, recall_k)
            metrics["seconds_per_image"] = took / max(1, len(records))
            results[kind] = metrics
            log.info("%s: AR@100 %.4f, Rec@0.5@%d %.4f", kind, metrics["AR@100"], recall_k,
                     metrics[f"Rec@0.5@{recall_k}"])
    from eic_builder.dataset.tables import command_line
    from eic_builder.hardware import machine_line

    # what a stored run needs (benchmarks/results.py import): the command, the machine, the date
    doc = {"manifest": str(Path(manifest_dir).resolve()), "checkpoint": checkpoint, "proposal_config": asdict(cfg),
           "recall_k": recall_k, "device": str(dev), "results": results, "command": command_line(),
           "machine": _device_line(dev) or machine_line(), "date": time.strftime("%Y-%m-%d")}
    write_text(out / "metrics.json", json.dumps(doc, indent=2))
    write_text(out / "metrics.md", metrics_markdown(results, recall_k))
    recall_plot(results, out / "recall_iou.png", recall_k)
    return results


def _write_proposals(folder: Path, found: dict[str, tuple[torch.Tensor, torch.Tensor]], ids: dict[str, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cols: dict[str, list] = {k: [] for k in ("image_id", "rank", "score", "x1", "y1", "x2", "y2")}
    for image_id, (boxes, scores) in found.items():
        n = len(boxes)
        cols["image_id"] += [image_id] * n
        cols["rank"] += list(range(n))
        cols["score"] += scores.tolist()
        for j, c in enumerate(("x1", "y1", "x2", "y2")):
            cols[c] += boxes[:, j].tolist()
    write_table(to_table("proposals", cols), folder / "proposals.parquet", "proposals")
    write_text(folder / "proposals_coco.json", json.dumps(coco_results(found, ids)))
