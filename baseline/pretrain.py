"""``eic-build pretrain``: train an encoder as an image classifier on a manifest's image labels.

The paper's RPN starts from Inception-BN pretrained on EIC classification; this is that step with
our encoders (``baseline.encoders``): the encoder, global average pooling of F^3 and one linear
layer, trained with cross-entropy on the manifest's image labels (its ``label`` column, the wnid).
Training images are random-resized crops (a quarter to all of the image's area, aspect 3/4..4/3)
with horizontal flips; validation images are resized to ``crop * 8/7`` on the shorter side and centre
cropped, scored top-1 and top-5.

The run folder holds what ``train-baseline`` writes (``config.json``, ``metrics.jsonl``, checkpoints,
``last.pt``; resumable with exactly the batches and crops of an uninterrupted run, since both are
functions of the iteration) plus ``classes.txt`` (the label of each output), ``encoder.pt`` (the
encoder alone, in torchvision's format: ``--backbone-weights`` takes it) and, with a validation
manifest, ``val_metrics.json``. One process per GPU under ``torchrun`` (DistributedDataParallel),
bfloat16 autocast on CUDA.
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's own idiom
from torch import nn
from torch.utils.data import Dataset

from baseline.checkpoint import save_atomically
from baseline.config import PretrainConfig
from baseline.data import read_rgb
from baseline.encoders import build_encoder
from baseline.sampling import BatchPlan, PlannedBatches
from baseline.trainer import Hook, Trainer, ValidationHook, setup_process, standard_hooks, start_run
from eic_builder.atomic_files import write_text
from eic_builder.dataset.manifest import Manifest
from eic_builder.errors import OptionError
from eic_builder.image_batches import normalise
from eic_builder.image_source import ImageReader, ImageRef
from eic_builder.progress import progress
from eic_builder.seeded import EPOCH_ORDER, rng_for

log = logging.getLogger(__name__)

MIN_AREA, RATIOS = 0.25, (3 / 4, 4 / 3)  # random-resized-crop range (area fraction, aspect w/h)
ENCODER_FILE = "encoder.pt"


class EncoderClassifier(nn.Module):
    """Images (B, 3, H, W) -> class logits (B, num_classes): the encoder's F^3, averaged, then ``fc``."""

    def __init__(self, cfg: PretrainConfig, num_classes: int) -> None:
        super().__init__()
        self.encoder = build_encoder(cfg.encoder, cfg.width, cfg.norm)
        self.fc = nn.Linear(self.encoder.out_channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.encoder(x)[-1], 1), 1))


def crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of a random-resized crop: area MIN_AREA..1 of the image, aspect
    (w/h) log-uniform in RATIOS; the largest centred crop of that aspect when no draw fits in 10 tries."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(MIN_AREA, 1.0)
        aspect = math.exp(rng.uniform(math.log(RATIOS[0]), math.log(RATIOS[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    side = min(width, height)
    return (height - side) // 2, (width - side) // 2, side, side


class ClassificationDataset(Dataset):
    """Indexed by (image index, draw): (normalised crop (3, crop, crop), class index). ``draw`` seeds the
    crop and flip of a training image (a pure function of the iteration, so a resumed run repeats them);
    ``train=False`` gives the centre crop."""

    def __init__(self, refs: list[ImageRef], targets: list[int], root: str, crop: int, train: bool,
                 seed: int = 0) -> None:
        self.refs, self.targets, self.crop, self.train, self.seed = refs, targets, crop, train, seed
        self.reader = ImageReader(root)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        from torchvision.transforms.v2 import functional as TF  # noqa: N812 - torchvision's own idiom

        index, draw = key
        image = read_rgb(self.reader, self.refs[index])
        _, height, width = image.shape
        if self.train:
            rng = rng_for(self.seed, EPOCH_ORDER, draw)
            top, left, h, w = crop_box(width, height, rng)
            image = TF.resized_crop(image, top, left, h, w, [self.crop, self.crop], antialias=True)
            if rng.random() < 0.5:
                image = TF.horizontal_flip(image)
        else:
            image = TF.center_crop(TF.resize(image, [self.crop * 8 // 7], antialias=True), [self.crop, self.crop])
        return normalise(image.float() / 255.0), self.targets[index]


@dataclass(frozen=True)
class LabelledImages:
    """The images of a manifest that have a file and a label: references, labels, and the image root."""

    refs: list[ImageRef]
    labels: list[str]
    root: str


def labelled_images(manifest_dir: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
                    ) -> LabelledImages:
    manifest = Manifest.open(manifest_dir, root=root, box_columns=["image_id"])
    rows = manifest.images.select(["label", "has_image"]).to_pylist()
    kept = [(ref, row["label"]) for row, ref in zip(rows, manifest.refs) if row["has_image"] and row["label"]]
    return LabelledImages([r for r, _ in kept], [lb for _, lb in kept], manifest.image_root())


@torch.no_grad()
def top_k_accuracy(model: nn.Module, images: LabelledImages, classes: list[str], cfg: PretrainConfig,
                   device: torch.device, bf16: bool = False) -> dict[str, float]:
    """Top-1 and top-5 accuracy on the images whose label is one of ``classes`` (the rest are counted as
    ``unknown_label``, not scored)."""
    index = {c: i for i, c in enumerate(classes)}
    known = [i for i, lb in enumerate(images.labels) if lb in index]
    dataset = ClassificationDataset(images.refs, [index.get(lb, -1) for lb in images.labels], images.root,
                                    cfg.crop, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.images_per_batch, num_workers=cfg.workers,
                                         sampler=[(i, 0) for i in known])
    model.eval()
    hits1 = hits5 = 0
    for batch, target in progress(loader, desc="val", unit="batch"):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch.to(device))
        top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices.cpu()
        hits1 += int((top[:, 0] == target).sum())
        hits5 += int((top == target[:, None]).any(dim=1).sum())
    model.train()
    scored = max(1, len(known))
    return {"top1": hits1 / scored, "top5": hits5 / scored, "images": len(known),
            "unknown_label": len(images.labels) - len(known)}


class ClassifierTask:
    """The classifier's part of a training step (:class:`baseline.trainer.TrainingTask`): cross-entropy of
    the crops' logits; figure: ``train_top1``, the batch's top-1 accuracy."""

    def loss(self, trainer: Trainer, iteration: int, batch: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, int, dict[str, float]]:
        crops, target = (tensor.to(trainer.device, non_blocking=True) for tensor in batch)
        if trainer.device.type == "cuda":
            crops = crops.contiguous(memory_format=torch.channels_last)
        with trainer.autocast():
            logits = trainer.net(crops)
        loss = F.cross_entropy(logits.float(), target)
        return loss, len(crops), {"train_top1": float((logits.argmax(1) == target).float().mean())}


class EncoderHook(Hook):
    """After training, on rank 0: the encoder alone as ``RUN/encoder.pt``, in torchvision's format."""

    def after_train(self, trainer: Trainer) -> None:
        if trainer.rank == 0:
            encoder = trainer.model.encoder.state_dict()
            save_atomically(trainer.run / ENCODER_FILE, {k: v.detach().cpu() for k, v in encoder.items()})


@dataclass
class PretrainResult:
    """Where a run ended and what it scored (``val`` is empty without a validation manifest)."""

    iteration: int
    last_loss: float
    images_per_second: float
    encoder_weights: Path
    val: dict[str, float]


def pretrain(manifest_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str], cfg: PretrainConfig | None = None,
             val_dir: str | os.PathLike[str] | None = None, resume: bool = False, distributed: bool = False,
             root: str | os.PathLike[str] | None = None, max_seconds: float | None = None,
             stop_after: int | None = None) -> PretrainResult:
    """Train the classifier on ``manifest_dir``'s labelled images; see the module doc. ``max_seconds`` and
    ``stop_after`` end the loop early, as in :func:`baseline.engine.train`."""
    cfg = cfg or PretrainConfig()
    cfg.validate()
    run = Path(run_dir)
    rank, world, device = setup_process(cfg, distributed)
    images = labelled_images(manifest_dir, root)
    classes = sorted(set(images.labels))
    if len(classes) < 2:
        raise OptionError(f"manifest {manifest_dir} has {len(classes)} labelled class(es) with image files; "
                          "classification needs at least 2")
    torch.manual_seed(cfg.seed)
    model = EncoderClassifier(cfg, len(classes)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    classes_file = run / "classes.txt"
    if resume and classes_file.is_file() and classes_file.read_text().split() != classes:
        raise OptionError(f"`resume`: {run} was trained on other classes (see {classes_file})")
    validation = None
    if val_dir is not None:
        validation = ValidationHook(lambda trainer: top_k_accuracy(model, labelled_images(val_dir, root), classes,
                                                                   cfg, device, trainer.amp))
    trainer, start = start_run(ClassifierTask(), model, cfg, run, (rank, world, device), resume=resume,
                               distributed=distributed, kind="classifier",
                               hooks=[*standard_hooks(cfg, max_seconds, "pretrain"), EncoderHook(),
                                      *([validation] if validation else [])])
    if rank == 0:
        write_text(classes_file, "".join(f"{c}\n" for c in classes))
    target_of = {c: i for i, c in enumerate(classes)}
    dataset = ClassificationDataset(images.refs, [target_of[lb] for lb in images.labels], images.root, cfg.crop,
                                    train=True, seed=cfg.seed)
    plan = BatchPlan(images.labels, "random", cfg.images_per_batch, [cfg.crop], cfg.seed)
    stop = cfg.iters if stop_after is None else min(cfg.iters, start + stop_after)

    def crops_of(it: int) -> list[tuple[int, int]]:  # (image, draw): draw numbers every crop of the run
        return [(index, it * cfg.images_per_batch + j) for j, (index, _) in enumerate(plan.batch(it))][rank::world]

    loader = torch.utils.data.DataLoader(dataset, batch_sampler=PlannedBatches(crops_of, start, stop),
                                         num_workers=cfg.workers,
                                         pin_memory=device.type == "cuda")
    ended = trainer.train(loader, start, stop)
    return PretrainResult(ended.iteration, ended.last_loss, ended.images_per_second, run / ENCODER_FILE,
                          validation.figures if validation else {})
