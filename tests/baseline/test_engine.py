from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from baseline.checkpoint import load_checkpoint, model_config, model_from_checkpoint
from baseline.config import TrainConfig
from baseline.engine import train
from eic_builder.errors import ModelError, OptionError
from eic_builder.scan.scanner import scan

FAST = {"iters": 6, "images_per_batch": 2, "checkpoint_every": 2, "train_scales": (96, 128), "max_size": 160,
        "log_every": 1}


@pytest.fixture(scope="module")
def train_manifest(synthetic_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rpn") / "train"
    scan(synthetic_tree, out, split="train")
    return out


def test_lr_schedule() -> None:
    cfg = TrainConfig(lr=1e-4, lr_step=7000, warmup_iters=0)
    assert cfg.lr_at(0) == 1e-4 and cfg.lr_at(6999) == 1e-4 and cfg.lr_at(7000) == 5e-5
    assert TrainConfig(lr=1.0, warmup_iters=10).lr_at(4) == pytest.approx(0.5)


def test_config_validation() -> None:
    with pytest.raises(OptionError, match=r"sampling='x' is not allowed; choose one of 'base', 'random'"):
        TrainConfig(sampling="x").validate()
    with pytest.raises(OptionError, match="iters=0 must be >= 1"):
        TrainConfig(iters=0).validate()
    with pytest.raises(OptionError, match=r"neg \(0.8\) <= pos \(0.7\)"):
        TrainConfig(neg_iou=0.8).validate()
    with pytest.raises(OptionError, match=r"dtype='float16' is not allowed; choose one of 'auto', 'float32', "
                                          r"'bfloat16'"):
        TrainConfig(dtype="float16").validate()


@pytest.mark.parametrize(("dtype", "resolved"), [("float32", "float32"), ("bfloat16", "bfloat16"),
                                               ("auto", "bfloat16"), ("auto", "float32")])
def test_dtype_auto_follows_the_hardware_rule_and_the_step_computes_in_it(
        train_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str, resolved: str) -> None:
    from baseline.rpn import LevelHead
    from eic_builder import hardware

    monkeypatch.setattr(hardware, "resolve_dtype", lambda requested, device: requested if requested != "auto"
                        else resolved)
    seen: list[torch.dtype] = []
    original = LevelHead.forward
    monkeypatch.setattr(LevelHead, "forward", lambda self, x: seen.append(x.dtype) or original(self, x))
    result = train(train_manifest, tmp_path / "run", TrainConfig.tiny(**{**FAST, "iters": 2}, dtype=dtype))
    # (the CPU memory estimate runs one float32 forward pass before training; the steps run in `resolved`)
    assert result.dtype == resolved and (torch.bfloat16 in seen) == (resolved == "bfloat16")
    assert all(math.isfinite(json.loads(line)["loss"]) for line in (tmp_path / "run" / "metrics.jsonl").open())


def test_interrupted_run_resumes_exactly(train_manifest: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.tiny(**FAST, flip=True)  # the flips, too, are a function of the iteration
    whole = train(train_manifest, tmp_path / "whole", cfg)
    assert whole.iteration == 6
    cut = train(train_manifest, tmp_path / "cut", cfg, stop_after=3)  # "killed" after iteration 3
    assert cut.iteration == 3 and load_checkpoint(tmp_path / "cut" / "last.pt")["iteration"] == 2
    with pytest.raises(OptionError, match="already holds a run"):
        train(train_manifest, tmp_path / "cut", cfg)
    resumed = train(train_manifest, tmp_path / "cut", cfg, resume=True)
    assert resumed.iteration == 6
    a = load_checkpoint(tmp_path / "whole" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    # iterations 1-3 logged, the resume from the checkpoint at 2 drops 3 and logs 3-6: each once
    assert [json.loads(line)["iter"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "whole" / "config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "whole").glob("ckpt-*.pt")) == [
        "ckpt-0000002.pt", "ckpt-0000004.pt", "ckpt-0000006.pt"]


def test_resume_errors(train_manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"no checkpoint .* to resume from"):
        train(train_manifest, tmp_path / "r", TrainConfig.tiny(**FAST), resume=True)
    train(train_manifest, tmp_path / "r", TrainConfig.tiny(**FAST), stop_after=2)
    with pytest.raises(OptionError, match=r"was trained with another configuration \(it differs in lr\)"):
        train(train_manifest, tmp_path / "r", TrainConfig.tiny(**{**FAST, "lr": 0.5}), resume=True)
    (tmp_path / "junk.pt").write_bytes(b"x")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        model_from_checkpoint(tmp_path / "junk.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="is not an eic-build train-baseline checkpoint"):
        model_from_checkpoint(tmp_path / "other.pt")


@pytest.mark.slow
def test_ddp_two_gloo_ranks(train_manifest: Path, tmp_path: Path) -> None:
    env = dict(os.environ, EIC_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "eic_builder.cli", "train-baseline", str(train_manifest), "--out", str(tmp_path / "ddp"), "--tiny",
           "--iters", "3", "--images-per-batch", "2", "--train-scales", "96", "--checkpoint-every", "3",
           "--distributed", "--device", "cpu"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert state["iteration"] == 3
    assert not any(k.startswith("module.") for k in state["model"])  # saved without the DDP wrapper
    # one metrics line per logged iteration (rank 0 writes the losses averaged over both ranks)
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["iter"] == 3 and len(records) == len({r["iter"] for r in records})
    assert {"loss", "lr", "cls_1", "reg_3", "pos_2"} <= set(records[-1])


def test_backbone_weights_errors(train_manifest: Path, tmp_path: Path) -> None:
    from torchvision.models import vgg16

    with pytest.raises(ModelError, match=r"backbone_weights .*none\.pt does not exist"):
        train(train_manifest, tmp_path / "a", TrainConfig.tiny(**FAST, backbone_weights=str(tmp_path / "none.pt")))
    torch.save(vgg16(weights=None).state_dict(), tmp_path / "vgg16.pt")
    with pytest.raises(ModelError, match=r"not a torchvision vgg16_bn state dict for this encoder: features\.0\."):
        train(train_manifest, tmp_path / "b", TrainConfig.tiny(**FAST, backbone_weights=str(tmp_path / "vgg16.pt")))



def test_minutes_stop_the_run_with_a_checkpoint(train_manifest: Path, tmp_path: Path) -> None:
    result = train(train_manifest, tmp_path / "run", TrainConfig.tiny(**FAST), max_seconds=1e-9)
    assert result.iteration == 1 and load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 1


def test_flips_are_half_and_a_function_of_the_iteration() -> None:
    from baseline.engine import flipped

    batch = [(i, 128) for i in range(400)]
    on = flipped(TrainConfig(flip=True), 7, batch)
    assert on == flipped(TrainConfig(flip=True), 7, batch) and on != flipped(TrainConfig(flip=True), 8, batch)
    assert 160 < sum(f for _, _, f in on) < 240 and [(i, s) for i, s, _ in on] == batch
    assert not any(f for _, _, f in flipped(TrainConfig(), 7, batch))


def test_googlenet_encoder_trains_from_torchvision_weights(train_manifest: Path, tmp_path: Path) -> None:
    from torchvision.models import googlenet

    torch.manual_seed(1)
    torch.save(googlenet(weights=None, aux_logits=True, init_weights=True).state_dict(), tmp_path / "g.pt")
    weights = torch.load(tmp_path / "g.pt", weights_only=True)
    cfg = TrainConfig.tiny(**{**FAST, "iters": 1}, encoder="googlenet", width=1.0, lr=1e-12,
                           backbone_weights=str(tmp_path / "g.pt"))
    train(train_manifest, tmp_path / "run", cfg)
    model = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    # the convolutions start from the file (one step at lr 1e-12 moves them by nothing measurable)
    for key in ("conv1.conv.weight", "inception4e.branch3.1.conv.weight", "inception5b.branch1.conv.weight"):
        assert torch.allclose(model[f"backbone.encoder.{key}"], weights[key], atol=1e-9)
    assert not any(k.startswith("backbone.encoder.aux") or ".fc." in k for k in model)
    with pytest.raises(OptionError, match=r"encoder googlenet is width 1 with batch norm; got width 0\.125"):
        train(train_manifest, tmp_path / "bad", TrainConfig.tiny(**FAST, encoder="googlenet"))


class _Payload:
    """Pickles as a call to ``os.system``: what a crafted checkpoint would run when loaded unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_never_run_code(train_manifest: Path, tmp_path: Path) -> None:
    """Checkpoints hold tensors and plain data, loaded with weights_only: a crafted one is refused, not run."""
    train(train_manifest, tmp_path / "run", TrainConfig.tiny(**FAST))
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # loads without any allow-list
    assert isinstance(state["config"], str) and state["rng"]["numpy"]["keys"].dtype == torch.int64
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil" / "last.pt"
    evil.parent.mkdir()
    torch.save({**state, "extra": _Payload(marker)}, evil)
    for load in (lambda: load_checkpoint(evil), lambda: model_from_checkpoint(evil),
                 lambda: train(train_manifest, evil.parent, TrainConfig.tiny(**FAST), resume=True)):
        with pytest.raises(ModelError, match=r"refused checkpoint .*evil/last\.pt: it holds objects other than "
                                             r"tensors and plain data"):
            load()
    assert not marker.exists()
    old = tmp_path / "old.pt"
    torch.save({**state, "version": 3}, old)  # 3: before batch norm in the decoder and heads
    with pytest.raises(ModelError, match=r"not an eic-build train-baseline checkpoint of version 4 "
                                         r"\(its version is 3\)"):
        load_checkpoint(old)


def test_checkpoints_of_another_width_are_one_error(train_manifest: Path, tmp_path: Path) -> None:
    train(train_manifest, tmp_path / "run", TrainConfig.tiny(**FAST))
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    config = json.loads(state["config"])
    config["width"] = 0.25  # the tensors are of width 0.125
    torch.save({**state, "config": json.dumps(config)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match=r"checkpoint .*other\.pt does not fit this model \(another architecture or "
                                         r"width\?\): other shapes: "):
        model_from_checkpoint(tmp_path / "other.pt")


def test_a_loss_that_becomes_nan_stops_the_run(train_manifest: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import baseline.engine as engine

    real, calls = engine.rpn_loss, []

    def diverging(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), terms

    monkeypatch.setattr(engine, "rpn_loss", diverging)
    with pytest.raises(ModelError, match=r"the loss became nan at iteration 3; the last good checkpoint is "
                                         r".*run/ckpt-0000002\.pt"):
        train(train_manifest, tmp_path / "run", TrainConfig.tiny(**FAST))


def test_options_typed_override_a_preset_and_defaults_do_not(train_manifest: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from eic_builder.cli import main

    r = CliRunner().invoke(main, ["--no-progress", "train-baseline", str(train_manifest), "--out", str(tmp_path / "r"),
                                  "--tiny", "--iters", "1", "--train-scales", "96", "--checkpoint-every", "1"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    tiny = TrainConfig.tiny()
    assert (cfg["device"], cfg["dtype"], cfg["width"], cfg["optimizer"]) == (tiny.device, tiny.dtype, tiny.width,
                                                                             "adamw")
    assert (cfg["iters"], cfg["train_scales"]) == (1, [96])


def test_a_cpu_run_that_cannot_fit_is_refused_with_advice(train_manifest: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The default (GPU-sized) configuration on a 24 GiB machine: refused before it starts, not killed."""
    from baseline import memory
    from baseline.model import HourglassRPN

    monkeypatch.setattr(memory, "available_bytes", lambda: 20 << 30)
    cfg = TrainConfig(device="cpu", workers=0)
    assert memory.training_bytes(cfg, HourglassRPN()) > 20 << 30
    with pytest.raises(OptionError, match=r"training on the CPU would need about \d+\.\d GiB .* and 20\.0 GiB is "
                                          r"available: use tiny, fewer images_per_batch"):
        train(train_manifest, tmp_path / "run", cfg)
    assert not (tmp_path / "run" / "last.pt").exists()
    tiny = TrainConfig.tiny(**FAST)
    assert memory.training_bytes(tiny, HourglassRPN(model_config(tiny))) < 1 << 30


def test_metrics_of_every_rank_are_averaged_whatever_their_name(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Over ranks, every figure a rank measured on its own batch is averaged (losses and pretrain's top-1
    alike); the iteration, learning rate and images per second are left as they are."""
    import json

    import torch.distributed as dist

    from baseline.trainer import MetricsWriter

    def all_reduce(tensor: torch.Tensor) -> None:  # the other rank measured 10.0 on every figure
        tensor += 10.0

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    writer = MetricsWriter(tmp_path / "metrics.jsonl", rank=0, distributed=True)
    writer.write({"iter": 4, "lr": 0.5, "images_per_second": 3.0, "loss": 2.0, "cls_p3": 4.0, "top1": 0.25})
    writer.close()
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert record == {"iter": 4, "lr": 0.5, "images_per_second": 3.0, "loss": 6.0, "cls_p3": 7.0, "top1": 5.125}
