"""The one trainer: its step and its hooks, on a least-squares task small enough to check by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from baseline.checkpoint import Checkpointer
from baseline.config import PretrainConfig
from baseline.trainer import (
    CheckpointHook,
    Hook,
    MetricsHook,
    TimeLimitHook,
    Trainer,
    ValidationHook,
    standard_hooks,
)
from eic_builder.errors import ModelError


class LeastSquares:
    """Fit w to y = 3 x: loss mean((w x - y)^2), one figure (``w``)."""

    def __init__(self, nan_at: int | None = None) -> None:
        self.nan_at, self.iterations = nan_at, []

    def loss(self, trainer: Trainer, iteration: int, batch: torch.Tensor):
        self.iterations.append(iteration)
        with trainer.autocast():
            prediction = trainer.net(batch)
        loss = ((prediction - 3 * batch) ** 2).mean()
        if iteration == self.nan_at:
            loss = loss * float("nan")
        return loss, len(batch), {"w": float(trainer.model.weight.detach())}


class Calls(Hook):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_train(self, trainer: Trainer) -> None:
        self.calls.append(f"before {trainer.iteration}")

    def after_step(self, trainer: Trainer) -> None:
        self.calls.append(f"step {trainer.iteration}")

    def after_train(self, trainer: Trainer) -> None:
        self.calls.append(f"after {trainer.iteration}")


def make_trainer(tmp_path: Path, task, hooks: list[Hook], lr: float = 0.1) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    cfg = PretrainConfig.tiny(iters=4, checkpoint_every=2, log_every=1)
    (tmp_path / "run").mkdir(exist_ok=True)
    checkpointer = Checkpointer(tmp_path / "run", model, optimizer, cfg, kind="classifier")
    return Trainer(task, model, model, optimizer, lambda it: lr / (it + 1), torch.device("cpu"), checkpointer,
                   hooks=hooks)


def batches(n: int) -> list[torch.Tensor]:
    return [torch.ones(2, 1) for _ in range(n)]


def test_the_step_by_hand_and_the_hooks_in_order(tmp_path: Path) -> None:
    calls = Calls()
    trainer = make_trainer(tmp_path, LeastSquares(), [calls])
    ended = trainer.train(batches(3), start=5, stop=8)
    assert calls.calls == ["before 5", "step 6", "step 7", "step 8", "after 8"]
    # SGD on (w - 3)^2 with x = 1: w += lr_t * 2 (3 - w), lr_t = 0.1 / (t + 1) for t = 5, 6, 7
    w, loss = 0.0, None
    for t in (5, 6, 7):
        loss = (w - 3) ** 2  # the loss a step reports is the one before its update
        w += 0.1 / (t + 1) * 2 * (3 - w)
    assert float(trainer.model.weight.detach()) == pytest.approx(w, rel=1e-6)
    assert ended.iteration == 8 and ended.last_loss == pytest.approx(loss, rel=1e-6)
    assert trainer.images_seen == 6 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 8)


def test_metrics_checkpoints_and_the_time_limit(tmp_path: Path) -> None:
    cfg = PretrainConfig.tiny(iters=4, checkpoint_every=2, log_every=1)
    trainer = make_trainer(tmp_path, LeastSquares(), standard_hooks(cfg, None, "test"))
    trainer.train(batches(4), start=0, stop=4)
    run = tmp_path / "run"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in lines] == [1, 2, 3, 4] and [m["lr"] for m in lines] == [0.1 / (t + 1) for t in range(4)]
    # the figures of a step are those of its forward, before its update: w = 0, 0.6, 0.84, 0.984
    assert [m["w"] for m in lines] == pytest.approx([0.0, 0.6, 0.84, 0.984], rel=1e-6)
    assert sorted(p.name for p in run.glob("ckpt-*.pt")) == ["ckpt-0000002.pt", "ckpt-0000004.pt"]
    # no time at all: one step, then a checkpoint of the iteration reached (off the checkpoint_every grid)
    (tmp_path / "t").mkdir()
    stopped = make_trainer(tmp_path / "t", LeastSquares(), [TimeLimitHook(0.0), CheckpointHook(every=100, last=4)])
    assert stopped.train(batches(4), start=0, stop=4).iteration == 1
    assert [p.name for p in (tmp_path / "t" / "run").glob("ckpt-*.pt")] == ["ckpt-0000001.pt"]
    hook = MetricsHook(every=3)
    (tmp_path / "m").mkdir()
    logged = make_trainer(tmp_path / "m", LeastSquares(), [hook])
    logged.train(batches(4), start=0, stop=4)  # every third iteration and the last
    logged_lines = (tmp_path / "m" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iter"] for line in logged_lines] == [3, 4]


def test_a_loss_that_is_not_finite_stops_before_the_weights_change(tmp_path: Path) -> None:
    cfg = PretrainConfig.tiny(iters=4, checkpoint_every=2, log_every=1)
    trainer = make_trainer(tmp_path, LeastSquares(nan_at=2), standard_hooks(cfg, None, "test"))
    with pytest.raises(ModelError, match=r"the loss became nan at iteration 3; the last good checkpoint is "
                                         r".*ckpt-0000002\.pt; lower lr or check the data"):
        trainer.train(batches(4), start=0, stop=4)
    assert trainer.iteration == 2 and torch.isfinite(trainer.model.weight).all()


def test_validation_after_training(tmp_path: Path) -> None:
    hook = ValidationHook(lambda trainer: {"w": float(trainer.model.weight.detach())})
    trainer = make_trainer(tmp_path, LeastSquares(), [hook])
    trainer.train(batches(2), start=0, stop=2)
    written = json.loads((tmp_path / "run" / "val_metrics.json").read_text())
    assert written == {"iteration": 2, "w": pytest.approx(float(trainer.model.weight.detach()))} == {"iteration": 2,
                                                                                              **hook.figures}
