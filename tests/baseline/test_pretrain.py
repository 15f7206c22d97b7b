from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from baseline.checkpoint import load_checkpoint
from baseline.model import HourglassRPN, ModelConfig
from baseline.pretrain import PretrainConfig, crop_box, pretrain
from eic_builder.cli import main
from eic_builder.errors import ModelError, OptionError
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import DEMO_WNIDS, SyntheticBox, ilsvrc_xml

COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200))  # one dominant channel per class


def _colour_tree(root: Path, per_class: int = 10, val_per_class: int = 4, classes: int = 3) -> Path:
    """Classes that differ visibly (red, green, blue images with noise): a classifier must get them right."""
    rng = np.random.default_rng(0)
    val_index = 0
    for wnid, colour in zip(DEMO_WNIDS[:classes], COLOURS):
        for split, n in (("train", per_class), ("val", val_per_class)):
            for i in range(n):
                w, h = int(rng.integers(80, 130)), int(rng.integers(80, 130))
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                if split == "train":
                    stem, folder, notes = f"{wnid}_{i + 1}", root / "train" / wnid, root / "Annotations/train" / wnid
                else:
                    val_index += 1
                    stem, folder, notes = f"ILSVRC2012_val_{val_index:08d}", root / "val", root / "Annotations/val"
                folder.mkdir(parents=True, exist_ok=True)
                notes.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{stem}.JPEG", quality=90)
                box = SyntheticBox(wnid, 2, 2, w - 3, h - 3)
                (notes / f"{stem}.xml").write_text(ilsvrc_xml(wnid if split == "train" else "val", stem, w, h, [box]))
    return root


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("colours")
    _colour_tree(root / "tree")
    scan(root / "tree", root / "train", split="train")
    scan(root / "tree", root / "val", split="val")
    return {"train": root / "train", "val": root / "val"}


FAST = dict(iters=40, images_per_batch=8, crop=64, checkpoint_every=20)


def test_pretrain_learns_visible_classes_and_hands_its_encoder_to_the_rpn(colours: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    result = pretrain(colours["train"], tmp_path / "run", PretrainConfig.tiny(**FAST), colours["val"])
    # three colours, 12 held-out images: near-certain after 40 iterations (measured 1.00 over seeds 0-4,
    # on 1 and 2 threads)
    assert result.val["images"] == 12 and result.val["unknown_label"] == 0
    assert result.val["top1"] >= 10 / 12 and result.val["top5"] == 1.0
    assert (tmp_path / "run" / "classes.txt").read_text().split() == sorted(DEMO_WNIDS[:3])
    state = torch.load(result.encoder_weights, weights_only=True)
    assert all(k.startswith("features.") for k in state)  # torchvision's vgg16_bn names
    rpn = HourglassRPN(ModelConfig(width=0.125))
    assert rpn.backbone.encoder.load_torchvision(state) == len(state)
    assert torch.equal(rpn.backbone.encoder.features[0].weight, state["features.0.weight"])
    out = CliRunner().invoke(main, ["--no-progress", "train-baseline", str(colours["train"]), "--out",
                                    str(tmp_path / "rpn"), "--tiny", "--iters", "1", "--train-scales", "96",
                                    "--backbone-weights", str(result.encoder_weights)])
    assert out.exit_code == 0, out.output


def test_resume_repeats_the_uninterrupted_run(colours: dict[str, Path], tmp_path: Path) -> None:
    cfg = PretrainConfig.tiny(iters=6, images_per_batch=4, crop=64, checkpoint_every=3)
    pretrain(colours["train"], tmp_path / "whole", cfg)
    cut = pretrain(colours["train"], tmp_path / "cut", cfg, stop_after=3)
    assert cut.iteration == 3
    pretrain(colours["train"], tmp_path / "cut", cfg, resume=True)
    a = load_checkpoint(tmp_path / "whole" / "last.pt", kind="classifier")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt", kind="classifier")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_crop_box_and_schedule_by_hand() -> None:
    for seed in range(50):
        top, left, h, w = crop_box(200, 100, random.Random(seed))
        assert top >= 0 and left >= 0 and top + h <= 100 and left + w <= 200
        assert 0.25 * 200 * 100 * 0.99 <= h * w <= 200 * 100 and 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
    assert crop_box(1, 300, random.Random(0)) == (149, 0, 1, 1)  # no draw fits a 1-px-wide image: centre square
    cfg = PretrainConfig(lr=0.1, iters=110, warmup_iters=10)
    assert cfg.lr_at(0) == pytest.approx(0.01) and cfg.lr_at(9) == pytest.approx(0.1)
    assert cfg.lr_at(60) == pytest.approx(0.05) and cfg.lr_at(110) == pytest.approx(0.0)


def test_pretrain_bad_input(colours: dict[str, Path], synthetic_tree: Path, tmp_path: Path) -> None:
    cases = [(PretrainConfig.tiny(crop=50), "crop=50 must be a multiple of 32"),
             (PretrainConfig.tiny(encoder="googlenet"), "encoder googlenet is width 1 with batch norm"),
             (PretrainConfig.tiny(encoder="resnet"),
              "encoder='resnet' is not allowed; choose one of 'vgg16', 'vgg11', 'googlenet'"),
             (PretrainConfig.tiny(lr=float("nan")), "lr=nan must be a finite number > 0")]
    for cfg, message in cases:
        with pytest.raises(OptionError, match=message):
            pretrain(colours["train"], tmp_path / "bad", cfg)
    _colour_tree(tmp_path / "one", per_class=3, val_per_class=0, classes=1)
    scan(tmp_path / "one", tmp_path / "one_m", split="train")
    with pytest.raises(OptionError, match=r"has 1 labelled class.* needs at least 2"):
        pretrain(tmp_path / "one_m", tmp_path / "bad", PretrainConfig.tiny(iters=1))
    run = tmp_path / "run"
    pretrain(colours["train"], run, PretrainConfig.tiny(iters=2, crop=64))
    with pytest.raises(ModelError, match=r"is an eic-build pretrain checkpoint, not a train-baseline one; pass its "
                                         r"encoder\.pt as backbone_weights"):
        load_checkpoint(run / "last.pt")
    scan(synthetic_tree, tmp_path / "other", split="train")  # four other classes
    with pytest.raises(OptionError, match=r"resume: .* was trained on other classes"):
        pretrain(tmp_path / "other", run, PretrainConfig.tiny(iters=4, crop=64), resume=True)
    out = CliRunner().invoke(main, ["--no-progress", "eval-baseline", str(colours["val"]), "--out",
                                    str(tmp_path / "e"), "--checkpoint", str(run / "last.pt")])
    assert out.exit_code != 0 and "pretrain checkpoint, not a train-baseline one" in out.output


@pytest.mark.slow
def test_pretrain_under_torchrun_two_gloo_ranks(colours: dict[str, Path], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = dict(os.environ, EIC_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "eic_builder.cli", "pretrain", str(colours["train"]), "--out", str(tmp_path / "ddp"), "--tiny",
           "--iters", "4", "--images-per-batch", "4", "--checkpoint-every", "2", "--val", str(colours["val"]),
           "--distributed", "--device", "cpu"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(tmp_path / "ddp" / "last.pt", kind="classifier")
    assert state["iteration"] == 4 and not any(k.startswith("module.") for k in state["model"])
    encoder = torch.load(tmp_path / "ddp" / "encoder.pt", weights_only=True)
    assert encoder.keys() == {k.removeprefix("encoder.") for k in state["model"] if k.startswith("encoder.")}
    assert json.loads((tmp_path / "ddp" / "val_metrics.json").read_text())["images"] == 12
