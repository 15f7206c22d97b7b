"""fc6 features end to end (JPEG files on disk -> shards written): the fast path against a naive
baseline, measured in the same run.

* naive: torchvision's classic recipe, ImageFolder-style: a Dataset that opens each JPEG
  with PIL and applies Resize(256) / CenterCrop(224) / ToTensor / Normalize, a DataLoader,
  the float32 eager model, outputs written as one Parquet shard per 4,096 images;
* fast: ``eic-build features`` with ``--loader tensor`` (batched decode on the device:
  nvJPEG on a GPU), channels_last, ``--dtype auto`` (bf16 only where the device runs it natively:
  eic_builder.hardware) and, with ``--compile``, torch.compile.

The machine's limit, measured in the same run: the model's forward pass alone (random input,
the fast path's dtype) in GFLOP/s (2 FLOP per multiply-add of VGG-16 up to fc6, counted from the
model: 15.5 G multiply-adds at 224x224) against a large matmul's GFLOP/s in the same dtype.

Generates (once, cached) N photo-like 500x375 JPEGs, or links N files to the real JPEGs of
``--source`` (repeated as needed), and scans them into a manifest.
On this project's 2-core CPU machine use a small N; on a GPU, N=20000 or more.

Usage: python benchmarks/bench_features.py [--images 64] [--device auto] [--workers 2] [--batch-size 64] [--store]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("EIC_NO_PROGRESS", "1")

from eic_builder.dataset.feature_shards import features_table
from eic_builder.dataset.schemas import FEATURE_ROW_GROUP
from eic_builder.dataset.tables import write_table
from eic_builder.devices import resolve_device
from eic_builder.features import FeatureConfig, build_model, extract_features, manifest_items
from eic_builder.hardware import machine_line, matmul_rate, resolve_dtype
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import DEMO_WNIDS


def make_jpegs(root: Path, n: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        wnid = DEMO_WNIDS[i % len(DEMO_WNIDS)]
        d = root / "val" / wnid
        d.mkdir(parents=True, exist_ok=True)
        low = rng.uniform(0, 255, (12, 16, 3))
        img = np.kron(low, np.ones((32, 32, 1)))[:375, :500] + rng.normal(0, 18, (375, 500, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{wnid}_{i}.JPEG", quality=90)


def link_jpegs(source: Path, root: Path, n: int) -> None:
    """``n`` hard links (copies across file systems) to the JPEGs of ``source``, cycling through them."""
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    if not files:
        raise SystemExit(f"no JPEG under {source}")
    for i in range(n):
        wnid = DEMO_WNIDS[i % len(DEMO_WNIDS)]
        d = root / "val" / wnid
        d.mkdir(parents=True, exist_ok=True)
        target = d / f"{wnid}_{i}.JPEG"
        try:
            os.link(files[i % len(files)], target)
        except OSError:
            shutil.copyfile(files[i % len(files)], target)


def naive(manifest: Path, out: Path, device: torch.device, workers: int, batch_size: int) -> int:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T  # noqa: N812

    items, root = manifest_items(manifest, "image")
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    class Folder(Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int) -> torch.Tensor:
            with Image.open(os.path.join(root, items[i].ref.path)) as im:
                return tf(im.convert("RGB"))

    model = build_model("random", "fc6").to(device)
    feats = []
    with torch.inference_mode():
        for x in DataLoader(Folder(), batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"):
            feats.append(model(x.to(device)).cpu().numpy())
    feats = np.concatenate(feats)
    out.mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(range(0, len(items), 4096)):
        chunk = items[s:s + 4096]
        table = features_table([it.image_id for it in chunk], [-1] * len(chunk), [it.label for it in chunk],
                               feats[s:s + 4096])
        write_table(table, out / f"part-{k:06d}.parquet", "features", row_group_size=FEATURE_ROW_GROUP)
    return len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "eic-bench-features")
    parser.add_argument("--source", type=Path, default=None,
                        help="a folder of real JPEGs, linked (repeated as needed) to make --images files")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="torch.compile the fast path")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="the fast path's dtype (auto: eic_builder.hardware's choice)")
    parser.add_argument("--store", action="store_true", help="Keep the run in benchmarks/results/ (RESULTS.md).")
    args = parser.parse_args()
    device = resolve_device(args.device)
    root = args.cache / (f"real-{args.images}" if args.source else f"jpegs-{args.images}")
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        if args.source:
            link_jpegs(args.source, root, args.images)
        else:
            make_jpegs(root, args.images)
        (root / ".complete").write_text("ok")
        what = f"links to the JPEGs of {args.source}" if args.source else "JPEGs (500x375)"
        print(f"wrote {args.images} {what} in {time.perf_counter() - t:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="eic-bench-feat-"))
    try:
        scan(root, work / "m", split="val")
        t = time.perf_counter()
        n = naive(work / "m", work / "naive", device, args.workers, args.batch_size)
        naive_s = time.perf_counter() - t
        cfg = FeatureConfig(weights="random", device=args.device, workers=args.workers, batch_size=args.batch_size,
                            loader="tensor", dtype=args.dtype, compile=args.compile)
        t = time.perf_counter()
        extract_features(work / "m", work / "fast", cfg)
        fast_s = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dtype = resolve_dtype(args.dtype, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(machine_line())
    print(f"device: {name}; {n} images, batch {args.batch_size}, {args.workers} loader workers")
    fast_name = f"fast (tensor decode + {dtype}{' + compile' if cfg.compile else ''})"
    print(f"{'naive (PIL DataLoader + float32 eager)':42s} {n / naive_s:8.1f} img/s ({naive_s:.1f} s)")
    print(f"{fast_name:42s} {n / fast_s:8.1f} img/s ({fast_s:.1f} s)")
    print(f"ratio fast / naive: {naive_s / fast_s:.2f}x")
    forward_limit(device, dtype, args.batch_size if device.type == "cuda" else 8)
    if args.store:
        from results import store

        rows = [["naive (PIL DataLoader + float32 eager)", f"{n / naive_s:,.1f}", "1.00x"],
                [fast_name, f"{n / fast_s:,.1f}", f"{naive_s / fast_s:.2f}x"]]
        line = machine_line() if device.type != "cuda" else f"{name} (torch {torch.__version__})"
        figures = {"images": n, "naive_s": naive_s, "fast_s": fast_s, "dtype": str(dtype),
                   "batch_size": args.batch_size, "workers": args.workers}
        path = store(f"features-{n}-{device.type}", line, figures, ["path", "img/s", "vs naive"], rows)
        print(f"stored {path}")


def vgg_fc6_macs(size: int = 224) -> int:
    """Multiply-adds of VGG-16 up to fc6 on one (3, size, size) image, counted layer by layer."""
    from torch import nn

    model, macs, side = build_model("random", "fc6"), 0, size
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):
            macs += layer.in_channels * layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1] * side**2
        elif isinstance(layer, nn.MaxPool2d):
            side //= 2
    return macs + model.fc6.in_features * model.fc6.out_features


def forward_limit(device: torch.device, dtype: str, batch: int, seconds: float = 10.0) -> None:
    """The forward pass alone, in GFLOP/s and as a fraction of a large matmul's rate in that dtype."""
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    model = build_model("random", "fc6").to(device, dtype=torch_dtype).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=torch_dtype).contiguous(memory_format=torch.channels_last)
    done, spent = 0, 0.0
    with torch.inference_mode():
        model(x)
        while spent < seconds or done < 2 * batch:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            spent += time.perf_counter() - t
            done += batch
    flop = 2 * vgg_fc6_macs()
    model_gflops = done * flop / spent / 1e9
    limit = matmul_rate(torch_dtype, 4096 if device.type == "cuda" else 2048, 2.0, device)
    print(f"VGG-16 forward alone ({dtype}, batch {batch}): {done / spent:.1f} img/s = {model_gflops:,.0f} GFLOP/s "
          f"({flop / 1e9:.1f} GFLOP per image); matmul {limit:,.1f} GFLOP/s: {model_gflops / limit:.0%} of it")


if __name__ == "__main__":
    main()
