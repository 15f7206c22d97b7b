"""Hourglass RPN speed: training images/s and proposal inference images/s (all test scales), in float32
and in bfloat16 autocast (``--dtype bfloat16``; channels_last on CUDA), in the same run, and which of the
two ``--dtype auto`` picks on this machine (bf16 only where the device runs it natively).

Uses the synthetic demo tree (generated once). On this project's CPU machine use ``--width 0.125
--scales 256`` for a quick look; on a GPU the defaults (VGG-16 width, 7 scales 200..1400).

Usage: python benchmarks/bench_rpn.py [--width 1.0] [--iters 20] [--images 20] [--scales 200,...,1400] [--store]

``--step MANIFEST`` times the training step instead, before and after issue 32 in one run, on the same
batches of MANIFEST's images, model and weights: *before* is the per-image, per-level target
assignment, sampling and loss (:func:`loop_rpn_loss`, the code this replaced, kept here as the baseline)
on contiguous tensors; *after* is ``baseline.rpn.rpn_loss`` (the batch and every level at once) on
channels_last tensors, as ``train-baseline`` runs it. Each in float32 and in bfloat16 autocast.

Usage: python benchmarks/bench_rpn.py --step MANIFEST [--tiny-width 0.125] [--steps 30] [--store]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EIC_NO_PROGRESS", "1")

import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou, generalized_box_iou_loss

from baseline.checkpoint import model_from_checkpoint
from baseline.config import TrainConfig
from baseline.data import load_records, read_rgb
from baseline.engine import train
from baseline.proposals import TEST_SCALES, ProposalConfig, propose
from baseline.rpn import BACKGROUND, GRAY, IGNORE, OBJECT, LevelLoss, TargetConfig, box_coder, rpn_loss
from eic_builder.devices import resolve_device, synchronize
from eic_builder.hardware import machine_line, resolve_dtype
from eic_builder.image_source import ImageReader
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import make_synthetic_tree


def loop_assign(anchors: torch.Tensor, boxes: torch.Tensor, cfg: TargetConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's anchor labels and matched boxes as assigned before issue 32 (torchvision's box_iou)."""
    n = len(anchors)
    if len(boxes) == 0:
        return torch.zeros(n, dtype=torch.long, device=anchors.device), torch.zeros_like(anchors)
    iou = box_iou(boxes, anchors)
    best, match = iou.max(dim=0)
    labels = torch.full((n,), GRAY if cfg.gray else IGNORE, dtype=torch.long, device=anchors.device)
    labels[best < cfg.neg_iou] = BACKGROUND
    labels[best >= cfg.pos_iou] = OBJECT
    per_box = iou.max(dim=1, keepdim=True).values
    g, a = torch.nonzero((iou == per_box) & (per_box > 0), as_tuple=True)
    labels[a] = OBJECT
    match[a] = g
    return labels, boxes[match]


def loop_sample(labels: torch.Tensor, cfg: TargetConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """One image's sampled anchor indices as drawn before issue 32 (a randperm per label)."""
    def pick(mask: torch.Tensor, k: int) -> torch.Tensor:
        idx = torch.nonzero(mask, as_tuple=True)[0]
        if len(idx) <= k:
            return idx
        return idx[torch.randperm(len(idx), generator=generator)[:k]]

    pos = pick(labels == OBJECT, cfg.batch_per_image // 2)
    n_neg = cfg.batch_per_image if cfg.neg_ratio is None else max(cfg.min_negatives, int(cfg.neg_ratio * len(pos)))
    gray = pick(labels == GRAY, int(cfg.gray_fraction * cfg.batch_per_image) if cfg.gray else 0)
    neg = pick(labels == BACKGROUND, min(n_neg, cfg.batch_per_image - len(pos) - len(gray)))
    return torch.cat([pos, neg, gray])


def loop_rpn_loss(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                  boxes: list[torch.Tensor], cfg: TargetConfig, coder: BoxCoder,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[LevelLoss]]:
    """The loss as it was before issue 32: for each image, assignment over all anchors, sampling, then a
    slice per level with hand-kept offsets; one cross-entropy and one box term per level."""
    import torch.nn.functional as F  # noqa: N812 - PyTorch's own idiom

    sizes = [len(a) for a in anchors]
    all_anchors = torch.cat(anchors)
    per_level = [[[], [], [], [], []] for _ in anchors]
    for b, gt in enumerate(boxes):
        labels, matched = loop_assign(all_anchors, gt, cfg)
        chosen = torch.zeros_like(labels, dtype=torch.bool)
        chosen[loop_sample(labels, cfg, generator)] = True
        start = 0
        for m, n in enumerate(sizes):
            sl = slice(start, start + n)
            sel = chosen[sl]
            per_level[m][0].append(logits[m][b][sel])
            per_level[m][1].append(labels[sl][sel])
            pos = sel & (labels[sl] == OBJECT)
            per_level[m][2].append(deltas[m][b][pos])
            per_level[m][3].append(matched[sl][pos])
            per_level[m][4].append(anchors[m][pos])
            start += n
    total = logits[0].new_zeros(())
    terms = []
    for m, (lg, lb, dl, gt, an) in enumerate(per_level):
        lg, lb, dl, gt, an = torch.cat(lg), torch.cat(lb), torch.cat(dl), torch.cat(gt), torch.cat(an)
        cls = F.cross_entropy(lg.float(), lb, reduction="sum") / len(lb) if len(lb) else logits[m].sum() * 0
        if len(dl) and cfg.reg_loss == "giou":
            reg = generalized_box_iou_loss(coder.decode_single(dl.float(), an), gt, reduction="sum")
        elif len(dl):
            reg = F.smooth_l1_loss(dl.float(), coder.encode_single(gt, an), beta=1 / 9, reduction="sum")
        reg = cfg.reg_weight * reg / len(dl) if len(dl) else deltas[m].sum() * 0
        total = total + cls + reg
        terms.append(LevelLoss(cls.detach(), reg.detach(), len(dl)))
    return total, terms


def time_steps(manifest: Path, steps: int, width: float, store: bool) -> None:
    """Images/s of the training step before and after (see the module doc), float32 and bfloat16."""
    from baseline.checkpoint import model_config
    from baseline.data import DetectionDataset, collate
    from baseline.engine import target_config
    from baseline.model import HourglassRPN

    cfg = TrainConfig.tiny(train_scales=(224, 288, 352, 416, 448), width=width)
    records, root = load_records(manifest)
    dataset = DetectionDataset(records, root, cfg.max_size)
    per = cfg.images_per_batch
    batches = [collate([dataset[((i * per + k) % len(records), cfg.train_scales[i % len(cfg.train_scales)], False)]
                        for k in range(per)]) for i in range(steps + 2)]
    targets, coder = target_config(cfg), box_coder()
    rows = []
    for dtype in ("float32", "bfloat16"):
        for name, loss_fn, memory in (("before", loop_rpn_loss, torch.contiguous_format),
                                      ("after", rpn_loss, torch.channels_last)):
            torch.manual_seed(0)
            model = HourglassRPN(model_config(cfg)).to(memory_format=memory)
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
            generator = torch.Generator()
            started, seen = None, 0
            for i, (images, boxes, _) in enumerate(batches):
                if i == 2:  # two warm-up steps: oneDNN's kernel choice, the allocator
                    started = time.perf_counter()
                generator.manual_seed(i)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                    out = model(images.contiguous(memory_format=memory))
                loss, _ = loss_fn(out.logits, out.deltas, out.anchors, boxes, targets, coder, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                seen += len(images) if i >= 2 else 0
            rows.append((dtype, name, seen / (time.perf_counter() - started)))
    print(machine_line())
    print(f"{manifest}: {steps} steps of {per} images at scales 224..448, width {width:g} (train-baseline --tiny)")
    before = {dtype: rate for dtype, name, rate in rows if name == "before"}
    for dtype, name, rate in rows:
        print(f"{dtype:9s} {name:7s} {rate:6.2f} img/s  {rate / before[dtype]:.2f}x")
    if store:
        from results import store as keep

        path = keep(f"rpn-step-w{width:g}", machine_line(), {"rows": rows, "steps": steps, "width": width,
                                                            "manifest": str(manifest)},
                    ["dtype", "step", "train img/s", "ratio to before"],
                    [[d, n, f"{r:.2f}", f"{r / before[d]:.2f}x"] for d, n, r in rows])
        print(f"stored {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--images-per-batch", type=int, default=8)
    parser.add_argument("--train-scale", type=int, default=600)
    parser.add_argument("--images", type=int, default=20, help="images for the inference timing")
    parser.add_argument("--scales", default=",".join(map(str, TEST_SCALES)))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic-bench-rpn")
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    parser.add_argument("--step", type=Path, default=None, metavar="MANIFEST",
                        help="Time the training step before and after issue 32 on MANIFEST's images instead.")
    parser.add_argument("--steps", type=int, default=30, help="--step: timed steps per variant")
    parser.add_argument("--tiny-width", type=float, default=0.125, help="--step: the model's width")
    args = parser.parse_args()
    if args.step is not None:
        time_steps(args.step, args.steps, args.tiny_width, args.store)
        return
    device = resolve_device(args.device)
    tree = args.cache / "tree"
    if not (tree / ".complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        make_synthetic_tree(tree, n_classes=10, train_per_class=20, val_per_class=4, size_range=(300, 500))
        (tree / ".complete").write_text("ok")
    work = Path(tempfile.mkdtemp(prefix="eic-bench-rpn-"))
    scales = tuple(int(s) for s in args.scales.split(","))
    rows = []
    try:
        scan(tree, work / "train", split="train")
        recs, root = load_records(work / "train")
        reader = ImageReader(root)
        images = [read_rgb(reader, r.ref) for r in recs[: args.images]]
        for dtype in ("float32", "bfloat16"):
            amp = dtype == "bfloat16"
            cfg = TrainConfig(iters=args.iters, images_per_batch=args.images_per_batch, width=args.width,
                              train_scales=(args.train_scale,), device=device.type, dtype=dtype,
                              workers=min(4, os.cpu_count() or 1),
                              checkpoint_every=args.iters, warmup_iters=1)
            run = work / f"run-{amp}"
            train(work / "train", run, cfg, stop_after=2)  # warm-up: cuDNN autotuning, allocator
            shutil.rmtree(run)
            synchronize(device)
            r = train(work / "train", run, cfg)
            model, _ = model_from_checkpoint(run / "last.pt")
            model.to(device)
            if amp:
                model = model.to(memory_format=torch.channels_last)
            pc = ProposalConfig(scales=scales, top_k=1000)
            propose(model, images[0], pc, device, amp)
            synchronize(device)
            t = time.perf_counter()
            for im in images:
                propose(model, im, pc, device, amp)
            synchronize(device)
            rows.append((dtype, r.images_per_second, len(images) / (time.perf_counter() - t)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(machine_line())
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"device: {dev}; width {args.width}; train scale {args.train_scale}, batch {args.images_per_batch}; "
          f"inference scales {scales}")
    auto = resolve_dtype("auto", device)
    for name, tr, inf in rows:
        print(f"{name:24s} train {tr:8.1f} img/s   proposals {inf:7.2f} img/s")
    print(f"ratio bfloat16 / float32: train {rows[1][1] / rows[0][1]:.2f}x, proposals {rows[1][2] / rows[0][2]:.2f}x; "
          f"--dtype auto picks {auto} here")
    if args.store:
        from results import store

        line = machine_line() if device.type != "cuda" else f"GPU: {dev}"
        path = store(f"rpn-dtype-w{args.width:g}-s{args.train_scale}", line,
                     {"rows": rows, "width": args.width, "train_scale": args.train_scale, "scales": list(scales),
                      "iters": args.iters, "images_per_batch": args.images_per_batch, "auto": auto},
                     ["dtype", "train img/s", "proposal img/s", "ratio to float32 (train, proposals)",
                      "--dtype auto"],
                     [[n, f"{tr:.1f}", f"{inf:.2f}", f"{tr / rows[0][1]:.2f}x, {inf / rows[0][2]:.2f}x",
                       "picked" if n == auto else ""] for n, tr, inf in rows])
        print(f"stored {path}")


if __name__ == "__main__":
    main()
