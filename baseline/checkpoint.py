"""Checkpoints of ``train-baseline`` and ``pretrain``: their format, writing them during a run, restoring
a run from one, and the model a checkpoint holds.

A checkpoint is a ``torch.save`` dict of tensors and plain data only (``weights_only`` loads it):
``version``, ``kind`` (``"rpn"`` or ``"classifier"``), ``iteration``, ``config`` (JSON text), ``model``,
``optimizer`` and ``rng`` (the torch, numpy and Python random states). Evaluation imports this module,
never the training loop.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from baseline.config import TrainConfig
from baseline.model import HourglassRPN, ModelConfig
from eic_builder.atomic_files import write_atomically
from eic_builder.errors import ModelError, OptionError
from eic_builder.output_folder import Run
from eic_builder.torch_files import load_matching, load_torch_file

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 4  # 2: RNG states and config as plain data (weights_only); 3: backbone.encoder.* names;
# 4: batch norm in the decoder and heads (--norm bn), --dtype instead of --amp


def model_config(cfg: TrainConfig) -> ModelConfig:
    return ModelConfig(arch=cfg.arch, width=cfg.width, norm=cfg.norm, encoder=cfg.encoder, anchors=cfg.anchors,
                       quality=cfg.score == "object-x-iou")


def save_atomically(path: Path, state: dict) -> None:
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def rng_state() -> dict:
    """The torch, numpy and Python RNG states as tensors and plain data (what ``weights_only`` loads)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
            "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next}}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    python_state = state["python"]
    internal = tuple(int(v) for v in python_state["state"].tolist())
    random.setstate((python_state["version"], internal, python_state["gauss_next"]))


COMMANDS = {"rpn": "train-baseline", "classifier": "pretrain"}


def load_checkpoint(path: str | os.PathLike[str], kind: str = "rpn") -> dict:
    """A checkpoint written by :func:`train` (``kind="rpn"``) or by ``pretrain`` (``"classifier"``); raises
    :class:`ModelError` for anything else.

    Checkpoints hold tensors and plain data only (the config as JSON text), so they are loaded
    with ``weights_only=True``: a file that needs more (pickled objects, code) is refused, never run.
    """
    state = load_torch_file(path, "checkpoint", weights_only=True)
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION or "model" not in state:
        found = state.get("version") if isinstance(state, dict) else None
        raise ModelError(f"{path} is not an eic-build {COMMANDS[kind]} checkpoint of version {CHECKPOINT_VERSION}"
                         f"{f' (its version is {found})' if found is not None else ''}")
    if state.get("kind", "rpn") != kind:
        raise ModelError(f"{path} is an eic-build {COMMANDS[state['kind']]} checkpoint, not a {COMMANDS[kind]} one"
                         f"{'; pass its encoder.pt as `backbone_weights`' if state['kind'] == 'classifier' else ''}")
    state["config"] = json.loads(state["config"])
    return state


def model_from_checkpoint(path: str | os.PathLike[str]) -> tuple[HourglassRPN, TrainConfig]:
    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    model = HourglassRPN(model_config(cfg))
    load_matching(model, state["model"], f"checkpoint {path}")
    return model.eval(), cfg


class Checkpointer:
    """Writes ``ckpt-<iteration>.pt`` and ``last.pt`` (tensors and plain data only) and restores a run.
    ``cfg`` is the run's configuration (anything with ``to_json()``); ``kind`` what the model is."""

    def __init__(self, run: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                 kind: str = "rpn") -> None:
        self.run, self.model, self.optimizer, self.cfg, self.kind = run, model, optimizer, cfg, kind
        self.last = run / "last.pt"

    def save(self, iteration: int) -> None:
        state = {
            "version": CHECKPOINT_VERSION, "kind": self.kind, "iteration": iteration, "config": self.cfg.to_json(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
        }
        save_atomically(self.run / f"ckpt-{iteration:07d}.pt", state)
        save_atomically(self.last, state)

    def restore(self, resume: bool) -> int:
        """The iteration to start from: 0 for a new run, ``last.pt``'s with ``resume`` (model, optimizer
        and random state restored); refuses to resume another configuration or to overwrite a run."""
        last = self.last
        if not resume:
            if last.is_file():
                raise OptionError(f"{self.run} already holds a run (last.pt); pass `resume` to continue it or use a "
                                  "new `out`")
            return 0
        if not last.is_file():
            raise OptionError(f"`resume`: no checkpoint {last} to resume from")
        state = load_checkpoint(last, self.kind)
        current = json.loads(self.cfg.to_json())
        if state["config"] != current:
            differs = Run(COMMANDS[self.kind], current).differences(state["config"]) or ["options it no longer has"]
            raise OptionError(f"`resume`: {last} was trained with another configuration (it differs in "
                              f"{', '.join(differs)}); see {self.run / 'config.json'}")
        load_matching(self.model, state["model"], f"checkpoint {last}")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"checkpoint {last}: its optimizer state does not fit this run ({exc})") from exc
        set_rng_state(state["rng"])
        log.info("resumed from %s at iteration %d", last, state["iteration"])
        return state["iteration"]
