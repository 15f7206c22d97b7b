"""fc6 features end to end (JPEG files on disk -> shards written): the fast path against a naive
baseline, measured in the same run.

* naive: torchvision's classic recipe, ImageFolder-style: a Dataset that opens each JPEG
  with PIL and applies Resize(256) / CenterCrop(224) / ToTensor / Normalize, a DataLoader,
  the float32 eager model, outputs written as one Parquet shard per 4,096 images;
* fast: ``eic-build features`` with ``--loader tensor`` (batched decode on the device:
  nvJPEG on a GPU), channels_last, ``--dtype bfloat16`` and, on CUDA, ``--compile``.

Generates (once, cached) N photo-like 500x375 JPEGs, or links N files to the real JPEGs of
``--source`` (repeated as needed), and scans them into a manifest.
On this project's 2-core CPU machine use a small N; on a GPU, N=20000 or more.

Usage: python benchmarks/bench_features.py [--images 64] [--device auto] [--workers 2] [--batch-size 64]
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

from eic_builder.devices import resolve_device
from eic_builder.features import FeatureConfig, build_model, extract_features, manifest_items
from eic_builder.manifest import FEATURE_ROW_GROUP, features_table, write_table
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
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the fast path (default: on CUDA)")
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
                            loader="tensor", dtype="bfloat16",
                            compile=device.type == "cuda" if args.compile is None else args.compile)
        t = time.perf_counter()
        extract_features(work / "m", work / "fast", cfg)
        fast_s = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"device: {name}; {n} images, batch {args.batch_size}, {args.workers} loader workers")
    fast_name = f"fast (tensor decode + bf16{' + compile' if cfg.compile else ''})"
    print(f"{'naive (PIL DataLoader + float32 eager)':42s} {n / naive_s:8.1f} img/s ({naive_s:.1f} s)")
    print(f"{fast_name:42s} {n / fast_s:8.1f} img/s ({fast_s:.1f} s)")
    print(f"ratio fast / naive: {naive_s / fast_s:.2f}x")


if __name__ == "__main__":
    main()
