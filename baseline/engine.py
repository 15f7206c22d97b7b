"""``eic-build train-baseline``: the training loop, checkpoints, resuming, logging, DDP.

One process per GPU under ``torchrun`` (DistributedDataParallel, NCCL; gloo on
CPUs), or one process on the CPU or a GPU. Each iteration takes batch i of
the sampling plan (a pure function of i), so ``--resume`` continues exactly:
the checkpoint holds model, optimizer, scheduler, iteration and RNG states.
Checkpoints (``RUN/ckpt-NNNNNNN.pt`` and ``RUN/last.pt``) are written
atomically; metrics go to ``RUN/metrics.jsonl``, the config to ``RUN/config.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from baseline import memory
from baseline.checkpoint import Checkpointer, model_config
from baseline.config import PretrainConfig, TrainConfig
from baseline.data import DetectionDataset, collate, load_records
from baseline.model import HourglassRPN
from baseline.rpn import TargetConfig, box_coder, rpn_loss
from baseline.sampling import BatchPlan, PlannedBatches
from eic_builder.atomic_files import write_text
from eic_builder.devices import init_distributed, rank_device, resolve_device
from eic_builder.errors import ModelError, OptionError
from eic_builder.hardware import bf16_autocast
from eic_builder.progress import progress
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


def truncate_metrics(path: Path, iteration: int) -> None:
    """Drop the logged iterations after ``iteration`` (the checkpoint a resumed run starts from), so that a
    resumed run logs each iteration once; a line cut by a kill is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iter"] <= iteration:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text(path, "".join(f"{line}\n" for line in kept))


@dataclass
class TrainResult:
    """Where a run ended."""

    iteration: int
    last_loss: float
    images_per_second: float
    checkpoint: Path
    device: str
    dtype: str


def build_optimizer(cfg: TrainConfig | PretrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names (with its ``lr``, ``momentum``, ``weight_decay``), over all of
    ``model``'s parameters."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


class MetricsWriter:
    """Appends one JSON line per logged iteration to ``metrics.jsonl`` (rank 0), every figure a rank measured
    on its own batch (losses, accuracies) averaged over the ranks (every rank calls :meth:`write` at the
    same iterations); the iteration, learning rate and images per second are the same on every rank."""

    SAME_ON_EVERY_RANK = frozenset({"iter", "lr", "images_per_second"})

    def __init__(self, path: Path, rank: int, distributed: bool) -> None:
        self.rank, self.distributed = rank, distributed
        self.file = path.open("a") if rank == 0 else None

    def write(self, record: dict[str, float]) -> None:
        values = dict(record)
        losses = [k for k, v in values.items() if k not in self.SAME_ON_EVERY_RANK and isinstance(v, (int, float))]
        if self.distributed and losses:
            import torch.distributed as dist

            summed = torch.tensor([values[k] for k in losses], dtype=torch.float64)
            if dist.get_backend() == "nccl":
                summed = summed.cuda()
            dist.all_reduce(summed)
            values |= dict(zip(losses, (summed / dist.get_world_size()).tolist()))
        if self.file is not None:
            self.file.write(json.dumps(values) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@dataclass
class StepContext:
    """What every training step needs besides the batch: the model (``net``: DDP-wrapped or not), its
    optimizer, the loss's settings and box coder, the anchor-sampling generator, and where to run."""

    net: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    targets: TargetConfig
    device: torch.device
    amp: bool
    run: Path
    coder: object = field(default_factory=box_coder)
    generator: torch.Generator = field(default_factory=torch.Generator)


def train_step(ctx: StepContext, iteration: int, images: torch.Tensor, boxes: list[torch.Tensor]) -> dict[str, float]:
    """One iteration: learning rate and anchor sampling of ``iteration`` (pure functions of it, so a
    resumed run repeats them), forward, loss, backward, clipping, step. Returns the named losses:
    ``loss`` and per level ``cls_m``, ``reg_m`` and ``pos_m`` (positive anchors)."""
    cfg, device = ctx.cfg, ctx.device
    for group in ctx.optimizer.param_groups:
        group["lr"] = cfg.lr_at(iteration)
    ctx.generator.manual_seed(seed_for(cfg.seed, AUGMENT, iteration))
    # channels_last on every device: oneDNN's CPU convolutions run it faster too (bench_rpn.py)
    images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    boxes = [b.to(device) for b in boxes]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=ctx.amp):
        out = ctx.net(images)
    loss, terms = rpn_loss(out.logits, out.deltas, out.anchors, boxes, ctx.targets, ctx.coder, ctx.generator,
                           out.quality)
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):  # stop before the step writes NaN into the weights
        kept = sorted(ctx.run.glob("ckpt-*.pt"))
        raise ModelError(f"the loss became {loss_value} at iteration {iteration + 1}; the last good checkpoint is "
                         f"{kept[-1] if kept else 'none (none was written yet)'}; lower `lr` or check the data")
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), cfg.grad_clip)
    ctx.optimizer.step()
    losses = {"loss": loss_value}
    for level, term in enumerate(terms, start=1):
        losses |= {f"cls_{level}": float(term.cls), f"reg_{level}": float(term.reg), f"pos_{level}": term.n_positive}
        if term.quality is not None:
            losses[f"iou_{level}"] = float(term.quality)
    return losses


def flipped(cfg: TrainConfig, iteration: int, batch: list[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    """Batch ``iteration``'s (record, scale) pairs with a left-right flip each: half of them at random with
    ``cfg.flip`` (a function of the seed and the iteration, so a resumed run repeats it), else none."""
    rng = rng_for(cfg.seed, FLIP, iteration)
    return [(index, scale, cfg.flip and rng.random() < 0.5) for index, scale in batch]


def time_is_up(started: float, max_seconds: float | None, distributed: bool) -> bool:
    """Whether ``max_seconds`` have passed since ``started`` (``time.perf_counter()``), as rank 0 sees it:
    every rank gets rank 0's answer, so that all stop at the same iteration."""
    if max_seconds is None:
        return False
    up = time.perf_counter() - started >= max_seconds
    if not distributed:
        return up
    import torch.distributed as dist

    value = torch.tensor([float(up)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(value, 0)
    return bool(value.item())


@dataclass
class LoopEnd:
    """Where :func:`run_loop` stopped."""

    iteration: int
    last_loss: float
    images_per_second: float


def run_loop(loader: Iterable, step: Callable[[int, Any], tuple[int, dict[str, float]]],
             cfg: TrainConfig | PretrainConfig, lr_of: Callable[[int], float], start: int, stop: int, rank: int,
             world: int, distributed: bool, checkpointer: Checkpointer, max_seconds: float | None,
             desc: str) -> LoopEnd:
    """The loop around the steps, shared by ``train-baseline`` and ``pretrain``: ``step(iteration, batch)``
    trains on one batch and returns (images in it, named values with ``loss``); the loop logs them every
    ``cfg.log_every`` iterations (averaged over ranks), checkpoints every ``cfg.checkpoint_every`` and at
    the end, shows progress, and stops at ``stop`` or when ``max_seconds`` have passed."""
    metrics = MetricsWriter(checkpointer.run / "metrics.jsonl", rank, distributed)
    bar = progress(total=stop - start, desc=desc, unit="it") if rank == 0 else None
    it, loss_value, seen, t0 = start, float("nan"), 0, time.perf_counter()
    for batch in loader:
        images, values = step(it, batch)
        loss_value = values["loss"]
        it += 1
        seen += images * world
        rate = seen / (time.perf_counter() - t0)
        if bar is not None:
            bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{rate:.1f}")
            bar.update(1)
        if it % cfg.log_every == 0 or it == stop:  # every rank: the losses are averaged over them
            metrics.write({"iter": it, "loss": loss_value, "lr": lr_of(it - 1), "images_per_second": rate,
                           **{k: v for k, v in values.items() if k != "loss"}})
        out_of_time = time_is_up(t0, max_seconds, distributed)
        if rank == 0 and (it % cfg.checkpoint_every == 0 or it == cfg.iters or out_of_time):
            checkpointer.save(it)
        if out_of_time:
            log.info("stopped at iteration %d after %.0f s (--minutes)", it, time.perf_counter() - t0)
            break
    if bar is not None:
        bar.close()
    metrics.close()
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    return LoopEnd(it, loss_value, seen / max(1e-9, time.perf_counter() - t0))


def setup_process(cfg: TrainConfig | PretrainConfig, distributed: bool) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins torchrun's group with ``distributed``."""
    rank, world = init_distributed(distributed)
    if cfg.images_per_batch % world:
        raise OptionError(f"`images_per_batch` {cfg.images_per_batch} must divide by the {world} ranks")
    return rank, world, rank_device(resolve_device(cfg.device), distributed)


def open_run(run: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig | PretrainConfig,
             resume: bool, rank: int, kind: str = "rpn") -> tuple[Checkpointer, int]:
    """The run folder's checkpointer and the iteration to start from (restored with ``resume``); rank 0
    drops the metrics logged after that iteration and writes ``config.json``."""
    run.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(run, model, optimizer, cfg, kind)
    start = checkpointer.restore(resume)
    if rank == 0:
        if resume:
            truncate_metrics(run / "metrics.jsonl", start)
        write_text(run / "config.json", cfg.to_json())
    return checkpointer, start


def parallel_model(model: torch.nn.Module, device: torch.device, distributed: bool) -> torch.nn.Module:
    """``model`` in DistributedDataParallel under torchrun, else itself."""
    if not distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


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


def train(manifest_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str], cfg: TrainConfig | None = None,
          resume: bool = False, distributed: bool = False, stop_after: int | None = None,
          root: str | os.PathLike[str] | None = None, max_seconds: float | None = None) -> TrainResult:
    """Train the RPN on the images with boxes of a manifest; see the module doc.

    Built as torchvision's and detectron2's loops are: the run state (model, optimizer,
    :class:`Checkpointer`, :class:`MetricsWriter`, data), then :func:`train_step` once per batch.
    ``root`` is the image root (``--root``; default: the manifest's). ``stop_after`` ends the loop early
    after that many iterations of this call (a stand-in for an interruption, used by the tests).
    ``max_seconds`` (``--minutes``) ends it once that much time of this call has passed, with a checkpoint
    at the iteration reached; the learning-rate schedule stays that of ``cfg.iters``.
    """
    cfg = cfg or TrainConfig()
    cfg.validate()
    run = Path(run_dir)
    rank, world, device = setup_process(cfg, distributed)
    records, root = load_records(manifest_dir, root)
    model = _build_model(cfg, device, world)
    optimizer = build_optimizer(cfg, model)
    checkpointer, start = open_run(run, model, optimizer, cfg, resume, rank)
    net = parallel_model(model, device, distributed)
    plan = BatchPlan([r.label for r in records], cfg.sampling, cfg.images_per_batch, cfg.train_scales, cfg.seed,
                     cfg.per_class)
    stop = cfg.iters if stop_after is None else min(cfg.iters, start + stop_after)
    loader = torch.utils.data.DataLoader(
        DetectionDataset(records, root, cfg.max_size),
        batch_sampler=PlannedBatches(lambda it: flipped(cfg, it, plan.batch(it))[rank::world], start, stop),
        num_workers=cfg.workers, collate_fn=collate, pin_memory=device.type == "cuda")
    ctx = StepContext(net, model, optimizer, cfg, target_config(cfg), device, bf16_autocast(cfg.dtype, device),
                      run)
    net.train()

    def step(it: int, batch: tuple) -> tuple[int, dict[str, float]]:
        images, boxes, _ = batch
        return len(images), train_step(ctx, it, images, boxes)

    ended = run_loop(loader, step, cfg, cfg.lr_at, start, stop, rank, world, distributed,
                     checkpointer, max_seconds, "train")
    return TrainResult(ended.iteration, ended.last_loss, ended.images_per_second, checkpointer.last, str(device),
                       "bfloat16" if ctx.amp else "float32")


