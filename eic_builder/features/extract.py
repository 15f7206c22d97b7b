"""The stage itself: the model, the items of a manifest, and the resumable run (see the package doc)."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eic_builder.choices import FEATURE_LAYERS as LAYERS
from eic_builder.dataset.feature_shards import features_table
from eic_builder.dataset.manifest import Manifest
from eic_builder.dataset.schemas import FEATURE_ROW_GROUP
from eic_builder.dataset.tables import read_metadata, write_table
from eic_builder.devices import init_distributed, rank_device, resolve_device
from eic_builder.errors import FormatError, ManifestError, ModelError, OptionError, check_choice
from eic_builder.features.options import FeatureConfig
from eic_builder.hardware import resolve_dtype
from eic_builder.image_batches import (
    BytesDataset,
    FeatureItem,
    PilDataset,
    Preprocess,
    TensorCpuDataset,
    collate_bytes,
    decode_batch_on_device,
)
from eic_builder.progress import progress
from eic_builder.torch_files import load_matching, load_torch_file, state_dict_of

log = logging.getLogger(__name__)



REGION_SIDE = 0.8  # of each side of the conv5 map, covered by each region of ``regions``
REGION_PLACES = ((0.5, 0.5), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))  # centre, four corners (x, y)


def region_pool5(conv5: torch.Tensor) -> torch.Tensor:
    """(B, 512, H, W) conv5_3 activations -> (B, 512, 7, 7): the mean of the pool5 maps (2x2 max pooling,
    then VGG's adaptive average to 7x7) of the whole map and of five regions covering 80 % of each side
    (centre, four corners). A copy cropped to 80 % of each side is one of these regions, or near one,
    of its original: the mean is shared by the two more than the whole map is (audit's crops)."""
    height, width = conv5.shape[2:]
    h, w = max(1, round(height * REGION_SIDE)), max(1, round(width * REGION_SIDE))
    regions = [conv5] + [conv5[:, :, round((height - h) * y):round((height - h) * y) + h,
                               round((width - w) * x):round((width - w) * x) + w] for x, y in REGION_PLACES]
    pooled = [nn.functional.adaptive_max_pool2d(r, (max(1, r.shape[2] // 2), max(1, r.shape[3] // 2)))
              for r in regions]
    return torch.stack([nn.functional.adaptive_avg_pool2d(p, 7) for p in pooled]).mean(dim=0)


class VGG16FC6(nn.Module):
    """VGG-16 up to fc6: (B, 3, H, W) normalised images -> (B, 4096) activations.

    ``regions``: fc6 of :func:`region_pool5` of the conv5_3 map instead of its pool5 map (one pass of
    the convolutions either way). Before its ReLU fc6 is affine, so this is the mean of the six
    regions' fc6 vectors."""

    def __init__(self, vgg: nn.Module, relu: bool, regions: bool = False) -> None:
        super().__init__()
        self.features = vgg.features
        self.avgpool = vgg.avgpool
        self.fc6 = vgg.classifier[0]
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.regions = regions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # features[-1] is pool5, which region_pool5 replaces
        pooled = region_pool5(self.features[:-1](x)) if self.regions else self.avgpool(self.features(x))
        return self.relu(self.fc6(torch.flatten(pooled, 1)))


def build_model(weights: str = "imagenet", layer: str = "fc6", seed: int = 0, regions: bool = False) -> VGG16FC6:
    """VGG-16 up to fc6 with the named weights; raises :class:`ModelError` when they cannot be had."""
    from torchvision.models import VGG16_Weights, vgg16

    check_choice("--layer", layer, LAYERS)
    if weights == "imagenet":
        try:
            vgg = vgg16(weights=VGG16_Weights.IMAGENET1K_V1)
        except Exception as exc:  # no network, no cache: urllib/OSError/RuntimeError
            raise ModelError(
                f"cannot load torchvision's VGG16_Weights.IMAGENET1K_V1 ({type(exc).__name__}: {exc}); "
                "without internet pre-fill TORCH_HOME or pass `weights` FILE (a torchvision VGG-16 state dict)"
            ) from exc
    elif weights == "random":
        torch.manual_seed(seed)
        vgg = vgg16(weights=None)
    else:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"`weights` {weights!r} is neither 'imagenet', 'random' nor an existing file")
        state = state_dict_of(load_torch_file(path, "weights file"))
        vgg = vgg16(weights=None)
        need = [k for k in vgg.state_dict() if k.startswith(("features.", "classifier.0."))]
        missing = [k for k in need if k not in state]
        if missing:
            raise ModelError(f"{path} is not a torchvision VGG-16 state dict: missing {', '.join(missing[:4])}...")
        load_matching(vgg, state, f"weights file {path}", strict=False)
    return VGG16FC6(vgg, relu=layer == "fc6-relu", regions=regions).eval()


def manifest_items(directory: str | os.PathLike[str], on: str,
                   root: str | os.PathLike[str] | None = None) -> tuple[list[FeatureItem], str]:
    """The items of a manifest (images with files, or their boxes) and the image root (``root`` or the scan's)."""
    manifest = Manifest.open(directory, root=root)
    has_image = manifest.images["has_image"].to_pylist()
    cols = manifest.images.select(["image_id", "label"]).to_pydict()
    kept = [(i, label, ref) for i, label, ref, has in zip(cols["image_id"], cols["label"], manifest.refs, has_image)
            if has]
    if on == "image":
        return [FeatureItem(i, -1, label, ref, None) for i, label, ref in kept], manifest.image_root()
    ref_of = {i: ref for i, _, ref in kept}
    coords = manifest.boxes.select(["x1", "y1", "x2", "y2"]).to_pandas().to_numpy()
    if len(coords) and not np.isfinite(coords).all():  # scans never store one; a manifest made otherwise may
        bad = manifest.boxes.slice(int(np.argmin(np.isfinite(coords).all(axis=1))), 1).to_pylist()[0]
        raise FormatError(f"manifest {directory} holds a box that is not finite: image {bad['image_id']} box "
                          f"{bad['box_index']} ({bad['x1']}, {bad['y1']}, {bad['x2']}, {bad['y2']}); scan it again")
    boxes = manifest.boxes.select(["image_id", "box_index", "label", "x1", "y1", "x2", "y2"]).to_pylist()
    return [FeatureItem(b["image_id"], b["box_index"], b["label"], ref_of[b["image_id"]],
                        (b["x1"], b["y1"], b["x2"], b["y2"])) for b in boxes if b["image_id"] in ref_of], \
        manifest.image_root()


MIRROR_SETTING = "averaged with the left-right mirror image's"
REGIONS_SETTING = "fc6 of the mean pool5 map of the whole image and five regions of 80 % of each side"
OPTIONAL_SETTINGS = ("mirror", "regions")  # recorded only when set


def _settings(cfg: FeatureConfig, manifest: str, dtype: str) -> dict:
    """What a shard records of its run (and what a resumed run must match); ``dtype`` is the one used.
    ``mirror`` and ``regions`` are recorded only when set, so that shards written before it existed still resume."""
    settings = {"weights": cfg.weights_label(), "random_weights": cfg.weights == "random", "layer": cfg.layer,
            "on": cfg.on, "dtype": dtype, "preprocessing": f"resize shorter side {cfg.resize}, centre crop "
            f"{cfg.crop}, ImageNet mean/std" if cfg.on == "image" else f"box crop warped to {cfg.crop}x{cfg.crop}, "
            "ImageNet mean/std", "manifest": manifest, "shard_size": cfg.shard_size}
    if cfg.mirror:
        settings["mirror"] = MIRROR_SETTING
    if cfg.regions:
        settings["regions"] = REGIONS_SETTING
    return settings


@dataclass
class FeatureSummary:
    """What a features run did."""

    items: int
    shards_total: int
    shards_resumed: int
    device: str
    settings: dict


def extract_features(manifest_dir: str | os.PathLike[str], out: str | os.PathLike[str],
                     cfg: FeatureConfig = FeatureConfig(), distributed: bool = False,
                     model: nn.Module | None = None) -> FeatureSummary:
    """Embed every item of the manifest into fc6 shards under ``out`` (see the module doc).

    ``model`` (default: :func:`build_model` of ``cfg``) is moved to the device and dtype in place, as
    :meth:`torch.nn.Module.to` does."""
    cfg.validate()
    out = Path(out)
    items, root = manifest_items(manifest_dir, cfg.on, cfg.root)
    if not items:
        raise OptionError(f"manifest {manifest_dir} has no {cfg.on}s with image files to embed")
    rank, world = init_distributed(distributed)
    device = rank_device(resolve_device(cfg.device), distributed)
    dtype = resolve_dtype(cfg.dtype, device)
    if dtype != cfg.dtype:
        log.info("--dtype auto: %s on %s", dtype, device)
    settings = _settings(cfg, str(Path(manifest_dir).resolve()), dtype)
    chunks = [items[s: s + cfg.shard_size] for s in range(0, len(items), cfg.shard_size)]
    mine = [k for k in range(len(chunks)) if k % world == rank]
    out.mkdir(parents=True, exist_ok=True)
    done = _finished_shards(out, chunks, mine, settings)
    todo = [k for k in mine if k not in done]
    if done:
        log.info("rank %d: resuming, %d of %d shards already written", rank, len(done), len(mine))
    if todo:
        model = model if model is not None else build_model(cfg.weights, cfg.layer, cfg.seed, cfg.regions)
        _run(model, chunks, todo, out, root, cfg, device, settings)
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    return FeatureSummary(len(items), len(chunks), len(done), str(device), settings)


def _finished_shards(out: Path, chunks: list[list[FeatureItem]], mine: list[int], settings: dict) -> set[int]:
    """The shards of ``mine`` already in ``out`` from the same settings and images (resumed, not made
    again); raises :class:`OptionError` for an ``out`` holding another run's shards (other settings, or
    more shards than this manifest makes). The run is known by its settings, recorded in every shard
    (:class:`~eic_builder.output_folder.Run`); each shard by the digest of its items."""
    from eic_builder.output_folder import Run

    beyond = sorted(p.name for p in out.glob("part-*.parquet") if not p.stem[5:].isdigit()
                    or int(p.stem[5:]) >= len(chunks))
    if beyond:  # shards of a larger manifest: read with ours, they would add features of other images
        raise OptionError(f"{out} holds {len(beyond)} shard(s) beyond the {len(chunks)} this manifest makes "
                          f"({beyond[0]}, ...): another run's; use a new `out`")
    run = Run("features", {**{k: None for k in OPTIONAL_SETTINGS}, **settings})

    def recorded(k: int) -> str | None:
        shard = out / f"part-{k:06d}.parquet"
        if not shard.is_file():
            return None
        try:
            meta = read_metadata(shard)
        except (OSError, ValueError, ManifestError) as exc:  # pyarrow's errors are OSError/ValueError kinds
            log.warning("%s is unreadable (%s): it is made again", shard, exc)
            return None
        run.refuse_other(meta, out, what=f"shards ({shard.name}, ...)")
        return meta.get("inputs")

    done, stale = Run.finished(mine, recorded, lambda k: chunk_digest(chunks[k]))
    for k in stale:
        log.info("%s was made from other images (the manifest changed): it is made again",
                 out / f"part-{k:06d}.parquet")
    return set(done)


def _run(model: nn.Module, chunks: list[list[FeatureItem]], todo: list[int], out: Path, root: str, cfg: FeatureConfig,
         device: torch.device, settings: dict) -> None:
    from torch.utils.data import DataLoader

    pp = Preprocess(cfg.resize, cfg.crop)
    flat = [item for k in todo for item in chunks[k]]
    owner = np.concatenate([np.full(len(chunks[k]), k) for k in todo])
    # bf16 weights once, rather than autocast: autocast casts every weight (fc6 alone is 400 MB in
    # float32) on every batch, which made the CPU path 1.4x slower than a bf16 model
    dtype = torch.bfloat16 if settings["dtype"] == "bfloat16" else torch.float32
    model = model.to(device, dtype=dtype).to(memory_format=torch.channels_last)
    forward = torch.compile(model) if cfg.compile else model
    gpu_decode = cfg.loader == "tensor" and device.type == "cuda"
    if gpu_decode:
        dataset, collate = BytesDataset(flat, root), collate_bytes
    else:
        dataset = (TensorCpuDataset if cfg.loader == "tensor" else PilDataset)(flat, root, pp)
        collate = None
    # Batches never straddle two shards, so a shard's features do not depend on which
    # shards ran before it (a resumed run writes the same bytes).
    batches, start = [], 0
    for k in todo:
        n = len(chunks[k])
        batches += [list(range(start + s, start + min(s + cfg.batch_size, n))) for s in range(0, n, cfg.batch_size)]
        start += n
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=cfg.loader_workers, collate_fn=collate,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    pending: dict[int, list[tuple[int, np.ndarray]]] = {}
    remaining = {k: len(chunks[k]) for k in todo}
    bar = progress(total=len(flat), desc=f"features ({device.type})", unit="img")

    def finish(host: torch.Tensor, ready, index: list[int]) -> None:
        """Store a batch's features once their copy to the host is done; write the shards it completes."""
        if ready is not None:
            ready.synchronize()
        feats = host.numpy().astype(np.float16)
        index = np.asarray(index)
        for k in np.unique(owner[index]):
            sel = owner[index] == k
            pending.setdefault(int(k), []).append((index[sel], feats[sel]))
            remaining[int(k)] -= int(sel.sum())
            if remaining[int(k)] == 0:
                _write_shard(out, int(k), flat, pending.pop(int(k)), settings)
        bar.update(len(index))

    # On a GPU, batch t's features are copied to pinned memory asynchronously and stored only after
    # batch t+1's decoding and forward pass are queued: the host's work (nvJPEG's CPU part, the next
    # batch, writing shards) overlaps the device's instead of waiting for it.
    in_flight = None
    with torch.inference_mode():
        for batch, index in loader:
            if gpu_decode:
                x = decode_batch_on_device(batch, [flat[i] for i in index], pp, device)
            else:
                x = batch.to(device, non_blocking=True)
            x = x.to(dtype)
            if cfg.mirror:  # the image and its mirror in one batch; their mean is the same for either
                x = torch.cat([x, x.flip(-1)])
            y = forward(x.contiguous(memory_format=torch.channels_last)).float()
            if cfg.mirror:
                y = y.view(2, -1, y.shape[-1]).mean(dim=0)
            if device.type == "cuda":
                host = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(y, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record()
            else:
                host, ready = y.cpu(), None
            if in_flight is not None:
                finish(*in_flight)
            in_flight = (host, ready, index)
        if in_flight is not None:
            finish(*in_flight)
    bar.close()


def chunk_digest(items: list[FeatureItem]) -> str:
    """A digest of what a shard embeds: each item's id, box and image location, in order."""
    h = hashlib.sha1()
    for it in items:
        h.update(repr((it.image_id, it.box_index, it.box, it.ref.path, it.ref.archive, it.ref.offset,
                       it.ref.size)).encode())
    return h.hexdigest()


def _write_shard(out: Path, k: int, flat: list[FeatureItem], parts: list[tuple[np.ndarray, np.ndarray]],
                 settings: dict) -> None:
    index = np.concatenate([i for i, _ in parts])
    feats = np.concatenate([f for _, f in parts])
    order = np.argsort(index, kind="stable")
    rows = [flat[i] for i in index[order]]
    table = features_table([r.image_id for r in rows], [r.box_index for r in rows], [r.label for r in rows],
                           feats[order])
    write_table(table, out / f"part-{k:06d}.parquet", "features", {**settings, "inputs": chunk_digest(rows)},
                row_group_size=FEATURE_ROW_GROUP)
