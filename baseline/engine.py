"""``eic-build train-baseline``: the RPN's training step on the one trainer (:mod:`baseline.trainer`).

One process per GPU under ``torchrun`` (DistributedDataParallel, NCCL; gloo on
CPUs), or one process on the CPU or a GPU. Each iteration takes batch i of
the sampling plan (a pure function of i), so ``--resume`` continues exactly:
the checkpoint holds model, optimizer, scheduler, iteration and RNG states.
Checkpoints (``RUN/ckpt-NNNNNNN.pt`` and ``RUN/last.pt``) are written
atomically; metrics go to ``RUN/metrics.jsonl``, the config to ``RUN/config.json``, the held-out
score of ``--val`` to ``RUN/val_metrics.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from baseline import memory
from baseline.checkpoint import model_config
from baseline.config import TrainConfig
from baseline.data import DetectionDataset, collate, load_records
from baseline.model import HourglassRPN
from baseline.rpn import TargetConfig, box_coder, rpn_loss
from baseline.sampling import BatchPlan, PlannedBatches
from baseline.trainer import Trainer, ValidationHook, setup_process, standard_hooks, start_run
from eic_builder.errors import ModelError, OptionError
from eic_builder.seeded import AUGMENT, FLIP, rng_for, seed_for
from eic_builder.torch_files import load_torch_file, state_dict_of

log = logging.getLogger(__name__)


def target_config(cfg: TrainConfig) -> TargetConfig:
    return TargetConfig(pos_iou=cfg.pos_iou, neg_iou=cfg.neg_iou, gray=cfg.gray,
                        batch_per_image=cfg.anchors_per_image,
                        neg_ratio=cfg.neg_ratio if cfg.neg_ratio_control else None,
                        gray_fraction=cfg.gray_fraction, reg_loss=cfg.reg_loss, reg_weight=cfg.reg_weight,
                        quality_weight=cfg.quality_weight, quality_anchors=cfg.quality_anchors)


def _check_cpu_memory(cfg: TrainConfig, model: HourglassRPN, world: int) -> None:
    """Refuse, with advice, a CPU run that cannot fit in memory (the kernel would kill it silently)."""
    available = memory.available_bytes()
    if available is None:
        return
    needed = memory.training_bytes(cfg, model, world)
    if needed > memory.SAFETY * available:
        gib = 1 << 30
        raise OptionError(
            f"training on the CPU would need about {needed / gib:.1f} GiB (width {cfg.width:g}, "
            f"{cfg.images_per_batch} images per batch at scales up to {max(cfg.train_scales)}), and "
            f"{available / gib:.1f} GiB is available: use `tiny`, fewer `images_per_batch`, smaller "
            "`train_scales` or `width`, or a GPU (`device` cuda)")


@dataclass
class TrainResult:
    """Where a run ended."""

    iteration: int
    last_loss: float
    images_per_second: float
    checkpoint: Path
    device: str
    dtype: str
    val: dict[str, Any] = field(default_factory=dict)  # with a held-out manifest: its Rec@0.5@300, AR@100


@dataclass
class RPNTask:
    """The RPN's part of a training step (:class:`baseline.trainer.TrainingTask`): anchor sampling of the
    iteration (a pure function of it, so a resumed run repeats it), forward, the loss. Figures: per level
    ``cls_m``, ``reg_m``, ``pos_m`` (positive anchors) and, with the IoU head, ``iou_m``."""

    cfg: TrainConfig
    targets: TargetConfig
    coder: object = field(default_factory=box_coder)
    generator: torch.Generator = field(default_factory=torch.Generator)

    def loss(self, trainer: Trainer, iteration: int, batch: tuple) -> tuple[torch.Tensor, int, dict[str, float]]:
        images, boxes, _ = batch
        self.generator.manual_seed(seed_for(self.cfg.seed, AUGMENT, iteration))
        # channels_last on every device: oneDNN's CPU convolutions run it faster too (bench_rpn.py)
        images = images.to(trainer.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        boxes = [b.to(trainer.device) for b in boxes]
        with trainer.autocast():
            out = trainer.net(images)
        loss, terms = rpn_loss(out.logits, out.deltas, out.anchors, boxes, self.targets, self.coder, self.generator,
                               out.quality)
        figures: dict[str, float] = {}
        for level, term in enumerate(terms, start=1):
            figures |= {f"cls_{level}": float(term.cls), f"reg_{level}": float(term.reg),
                        f"pos_{level}": term.n_positive}
            if term.quality is not None:
                figures[f"iou_{level}"] = float(term.quality)
        return loss, len(images), figures


def flipped(cfg: TrainConfig, iteration: int, batch: list[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    """Batch ``iteration``'s (record, scale) pairs with a left-right flip each: half of them at random with
    ``cfg.flip`` (a function of the seed and the iteration, so a resumed run repeats it), else none."""
    rng = rng_for(cfg.seed, FLIP, iteration)
    return [(index, scale, cfg.flip and rng.random() < 0.5) for index, scale in batch]


def _build_model(cfg: TrainConfig, device: torch.device, world: int) -> HourglassRPN:
    torch.manual_seed(cfg.seed)
    model = HourglassRPN(model_config(cfg))
    if device.type == "cpu":
        _check_cpu_memory(cfg, model, world)
    if cfg.backbone_weights:
        state = state_dict_of(load_torch_file(cfg.backbone_weights, "`backbone_weights`"))
        try:
            n = model.backbone.encoder.load_torchvision(state)
        except ValueError as exc:
            raise ModelError(f"`backbone_weights` {cfg.backbone_weights}: {exc}") from exc
        log.info("loaded %d %s tensors into the encoder", n, model.backbone.encoder.name)
    return model.to(device, memory_format=torch.channels_last)


def _held_out_score(val_dir: str | os.PathLike[str], cfg: TrainConfig, root: str | os.PathLike[str] | None,
                    out: Path) -> Callable[[Trainer], dict[str, Any]]:
    """The validation of ``train --val``: Rec@0.5 (top 300) and AR@100 of the last checkpoint on
    ``val_dir``, at the mean training scale, by ``eval-baseline``'s code (its folder: ``out``)."""

    def score(trainer: Trainer) -> dict[str, Any]:
        from baseline.config import EvalOptions, ProposalConfig
        from baseline.eval_run import evaluate_methods

        scale = int(sum(cfg.train_scales) / len(cfg.train_scales))
        options = EvalOptions(checkpoint=str(trainer.checkpointer.last),
                              proposals=ProposalConfig(scales=(scale,), top_k=1000), device=cfg.device, root=root)
        res = evaluate_methods(val_dir, out, options)["rpn"]
        return {"manifest": str(val_dir), "Rec@0.5@300": res["Rec@0.5@300"], "AR@100": res["AR@100"]}

    return score


def train(manifest_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str], cfg: TrainConfig | None = None,
          resume: bool = False, distributed: bool = False, stop_after: int | None = None,
          root: str | os.PathLike[str] | None = None, max_seconds: float | None = None,
          val_dir: str | os.PathLike[str] | None = None) -> TrainResult:
    """Train the RPN on the images with boxes of a manifest; see the module doc.

    Built as torchvision's and detectron2's loops are: the run state (model, optimizer,
    :class:`~baseline.checkpoint.Checkpointer`, data), then :class:`~baseline.trainer.Trainer` steps
    :class:`RPNTask`'s loss once per batch, its hooks logging, checkpointing and validating around.
    ``root`` is the image root (``--root``; default: the manifest's). ``stop_after`` ends the loop early
    after that many iterations of this call (a stand-in for an interruption, used by the tests).
    ``max_seconds`` (``--minutes``) ends it once that much time of this call has passed, with a checkpoint
    at the iteration reached; the learning-rate schedule stays that of ``cfg.iters``. ``val_dir``: a
    held-out manifest scored after training (``--val``; ``RUN/val_metrics.json``, the evaluation in
    ``RUN/val_eval``).
    """
    cfg = cfg or TrainConfig()
    cfg.validate()
    run = Path(run_dir)
    rank, world, device = setup_process(cfg, distributed)
    records, root = load_records(manifest_dir, root)
    model = _build_model(cfg, device, world)
    validation = ValidationHook(_held_out_score(val_dir, cfg, root, run / "val_eval")) if val_dir else None
    hooks = [*standard_hooks(cfg, max_seconds, "train"), *([validation] if validation else [])]
    trainer, start = start_run(RPNTask(cfg, target_config(cfg)), model, cfg, run, (rank, world, device),
                               resume=resume, distributed=distributed, kind="rpn", grad_clip=cfg.grad_clip, hooks=hooks)
    plan = BatchPlan([r.label for r in records], cfg.sampling, cfg.images_per_batch, cfg.train_scales, cfg.seed,
                     cfg.per_class)
    stop = cfg.iters if stop_after is None else min(cfg.iters, start + stop_after)
    loader = torch.utils.data.DataLoader(
        DetectionDataset(records, root, cfg.max_size),
        batch_sampler=PlannedBatches(lambda it: flipped(cfg, it, plan.batch(it))[rank::world], start, stop),
        num_workers=cfg.workers, collate_fn=collate, pin_memory=device.type == "cuda")
    ended = trainer.train(loader, start, stop)
    return TrainResult(ended.iteration, ended.last_loss, ended.images_per_second, trainer.checkpointer.last,
                       str(device), "bfloat16" if trainer.amp else "float32", validation.figures if validation else {})
