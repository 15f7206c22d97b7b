"""One trainer for ``train-baseline`` and ``pretrain``: the step and the loop, with hooks around them.

As detectron2's ``TrainerBase``: a stage supplies what is its own (the model, its loss on a batch, the
learning-rate schedule of its options) as a :class:`TrainingTask`; :class:`Trainer` runs every step
the same way (learning rate of the iteration, forward under bfloat16 autocast where asked, a loss that is
not finite stopped before it reaches the weights, backward, gradient clipping, optimizer step), and its
hooks do the rest at fixed points (:class:`Hook`: before the first step, after each, after the last):

* :class:`ProgressHook`: the progress bar (rank 0);
* :class:`MetricsHook`: ``metrics.jsonl`` every ``log_every`` iterations and at the last, averaged over ranks;
* :class:`TimeLimitHook`: stops after ``max_seconds`` (``--minutes``), as rank 0 sees it;
* :class:`CheckpointHook`: ``ckpt-NNNNNNN.pt`` and ``last.pt`` every ``checkpoint_every`` iterations, at
  ``iters`` and where the time limit stopped the run;
* :class:`ValidationHook`: a held-out score after training (rank 0), into ``val_metrics.json``.

A run folder is opened by :func:`open_run` (checkpointer, resumed iteration, ``config.json``); the process
by :func:`setup_process` (rank, world, device).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from baseline.checkpoint import Checkpointer
from baseline.config import PretrainConfig, TrainConfig
from eic_builder.atomic_files import write_text
from eic_builder.devices import init_distributed, rank_device, resolve_device
from eic_builder.errors import ModelError, OptionError
from eic_builder.progress import progress

log = logging.getLogger(__name__)

RunConfig = TrainConfig | PretrainConfig


class TrainingTask(Protocol):
    """What a training stage supplies to :class:`Trainer`."""

    def loss(self, trainer: Trainer, iteration: int, batch: Any) -> tuple[torch.Tensor, int, dict[str, float]]:
        """(the loss of ``batch`` at ``iteration``, a scalar tensor with its graph; the images in the batch;
        named figures to log beside it). The forward runs under :meth:`Trainer.autocast`."""
        ...


class Hook:
    """Called by :class:`Trainer` before the first step, after each step and after the last."""

    def before_train(self, trainer: Trainer) -> None:
        pass

    def after_step(self, trainer: Trainer) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass


@dataclass
class TrainEnd:
    """Where :meth:`Trainer.train` stopped: the iteration reached, the last loss, images per second (all
    ranks)."""

    iteration: int
    last_loss: float
    images_per_second: float


@dataclass
class Trainer:
    """Runs ``task``'s loss through the steps from ``start`` to ``stop`` (see the module's doc).

    ``model`` is the module whose parameters are trained; ``net`` is what runs the forward (``model`` in
    DistributedDataParallel under torchrun, else ``model``); ``lr_of(iteration)`` the schedule;
    ``grad_clip`` the largest gradient norm (0: none); ``amp``: bfloat16 autocast on ``device``.
    """

    task: TrainingTask
    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_of: Callable[[int], float]
    device: torch.device
    checkpointer: Checkpointer
    rank: int = 0
    world: int = 1
    distributed: bool = False
    amp: bool = False
    grad_clip: float = 0.0
    hooks: list[Hook] = field(default_factory=list)
    # the state hooks read and set
    iteration: int = 0
    stop: int = 0
    started: float = 0.0
    images_seen: int = 0
    values: dict[str, float] = field(default_factory=dict)
    should_stop: bool = False

    @property
    def run(self) -> Path:
        return self.checkpointer.run

    @property
    def images_per_second(self) -> float:
        return self.images_seen / max(1e-9, time.perf_counter() - self.started)

    def autocast(self) -> AbstractContextManager:
        """bfloat16 autocast on the trainer's device where ``amp``, else nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def run_step(self, batch: Any) -> None:
        """One iteration on ``batch``: learning rate, loss, the finite check, backward, clipping, step."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_of(self.iteration)
        loss, images, values = self.task.loss(self, self.iteration, batch)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):  # stop before the step writes NaN into the weights
            kept = sorted(self.run.glob("ckpt-*.pt"))
            raise ModelError(f"the loss became {loss_value} at iteration {self.iteration + 1}; the last good "
                             f"checkpoint is {kept[-1] if kept else 'none (none was written yet)'}; lower `lr` or "
                             "check the data")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.iteration += 1
        self.images_seen += images * self.world
        self.values = {"loss": loss_value, **values}

    def train(self, loader: Iterable, start: int, stop: int) -> TrainEnd:
        """Steps from iteration ``start`` over ``loader``'s batches, until ``stop`` or a hook stops it."""
        self.iteration, self.stop, self.started, self.images_seen = start, stop, time.perf_counter(), 0
        self.values, self.should_stop = {"loss": float("nan")}, False
        self.net.train()
        for hook in self.hooks:
            hook.before_train(self)
        for batch in loader:
            self.run_step(batch)
            for hook in self.hooks:
                hook.after_step(self)
            if self.should_stop:
                break
        for hook in self.hooks:
            hook.after_train(self)
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()
        return TrainEnd(self.iteration, self.values["loss"], self.images_per_second)


class ProgressHook(Hook):
    """The progress bar of rank 0, with the loss and images per second."""

    def __init__(self, desc: str) -> None:
        self.desc, self.bar = desc, None

    def before_train(self, trainer: Trainer) -> None:
        if trainer.rank == 0:
            self.bar = progress(total=trainer.stop - trainer.iteration, desc=self.desc, unit="it")

    def after_step(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{trainer.values['loss']:.3f}", img_s=f"{trainer.images_per_second:.1f}")
            self.bar.update(1)

    def after_train(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


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


class MetricsHook(Hook):
    """``RUN/metrics.jsonl``: the step's figures every ``every`` iterations and at the last (every rank
    writes: the figures are averaged over them)."""

    def __init__(self, every: int) -> None:
        self.every, self.writer = every, None

    def before_train(self, trainer: Trainer) -> None:
        self.writer = MetricsWriter(trainer.run / "metrics.jsonl", trainer.rank, trainer.distributed)

    def after_step(self, trainer: Trainer) -> None:
        it = trainer.iteration
        if it % self.every == 0 or it == trainer.stop:
            values = trainer.values
            self.writer.write({"iter": it, "loss": values["loss"], "lr": trainer.lr_of(it - 1),
                               "images_per_second": trainer.images_per_second,
                               **{k: v for k, v in values.items() if k != "loss"}})

    def after_train(self, trainer: Trainer) -> None:
        self.writer.close()


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


class TimeLimitHook(Hook):
    """Stops the run once ``max_seconds`` of this call have passed (None: never); every rank stops at the
    same iteration. Put it before :class:`CheckpointHook`, which then saves the iteration reached."""

    def __init__(self, max_seconds: float | None) -> None:
        self.max_seconds = max_seconds

    def after_step(self, trainer: Trainer) -> None:
        if time_is_up(trainer.started, self.max_seconds, trainer.distributed):
            trainer.should_stop = True
            log.info("stopped at iteration %d after %.0f s (--minutes)", trainer.iteration,
                     time.perf_counter() - trainer.started)


class CheckpointHook(Hook):
    """A checkpoint (rank 0) every ``every`` iterations, at ``last`` (the schedule's end) and where the run
    was stopped early."""

    def __init__(self, every: int, last: int) -> None:
        self.every, self.last = every, last

    def after_step(self, trainer: Trainer) -> None:
        it = trainer.iteration
        if trainer.rank == 0 and (it % self.every == 0 or it == self.last or trainer.should_stop):
            trainer.checkpointer.save(it)


class ValidationHook(Hook):
    """After training, on rank 0: ``score(trainer)``'s figures, written to ``RUN/val_metrics.json`` with the
    iteration, and kept in :attr:`figures`."""

    def __init__(self, score: Callable[[Trainer], dict[str, Any]]) -> None:
        self.score = score
        self.figures: dict[str, Any] = {}

    def after_train(self, trainer: Trainer) -> None:
        if trainer.rank == 0:
            self.figures = self.score(trainer)
            write_text(trainer.run / "val_metrics.json",
                       json.dumps({"iteration": trainer.iteration, **self.figures}, indent=2))


def standard_hooks(cfg: RunConfig, max_seconds: float | None, desc: str) -> list[Hook]:
    """The hooks of every training stage, in their order: progress, metrics, time limit, checkpoints."""
    return [ProgressHook(desc), MetricsHook(cfg.log_every), TimeLimitHook(max_seconds),
            CheckpointHook(cfg.checkpoint_every, cfg.iters)]


def start_run(task: TrainingTask, model: torch.nn.Module, cfg: RunConfig, run: Path,
              process: tuple[int, int, torch.device], *, resume: bool, distributed: bool, kind: str,
              hooks: list[Hook], grad_clip: float = 0.0) -> tuple[Trainer, int]:
    """A training stage's trainer, and the iteration to start from: ``cfg``'s optimizer over ``model``'s
    parameters, the run folder opened (resumed with ``resume``; :func:`open_run`), DDP under torchrun,
    bfloat16 where ``cfg.dtype`` and the device say; ``process`` is :func:`setup_process`'s (rank, world,
    device)."""
    from eic_builder.hardware import bf16_autocast

    rank, world, device = process
    optimizer = build_optimizer(cfg, model)
    checkpointer, start = open_run(run, model, optimizer, cfg, resume, rank, kind)
    trainer = Trainer(task, model, parallel_model(model, device, distributed), optimizer, cfg.lr_at, device,
                      checkpointer, rank, world, distributed, bf16_autocast(cfg.dtype, device), grad_clip, hooks)
    return trainer, start


def setup_process(cfg: RunConfig, distributed: bool) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins torchrun's group with ``distributed``."""
    rank, world = init_distributed(distributed)
    if cfg.images_per_batch % world:
        raise OptionError(f"`images_per_batch` {cfg.images_per_batch} must divide by the {world} ranks")
    return rank, world, rank_device(resolve_device(cfg.device), distributed)


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


def open_run(run: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: RunConfig,
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


def build_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names (with its ``lr``, ``momentum``, ``weight_decay``), over all of
    ``model``'s parameters."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def parallel_model(model: torch.nn.Module, device: torch.device, distributed: bool) -> torch.nn.Module:
    """``model`` in DistributedDataParallel under torchrun, else itself."""
    if not distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
