from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eic_builder.dataset.feature_shards import iter_feature_batches
from eic_builder.dataset.manifest import read_manifest, write_manifest
from eic_builder.errors import ModelError, OptionError
from eic_builder.features import FeatureConfig, build_model, extract_features
from eic_builder.scan.scanner import scan

SMALL = {"weights": "random", "crop": 32, "resize": 37, "workers": 0, "batch_size": 4}


def _feats(d: Path) -> tuple[list[str], np.ndarray]:
    labels, feats = [], []
    for lb, f in iter_feature_batches(d):
        labels += lb
        feats.append(f.astype(np.float32))
    return labels, np.concatenate(feats)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def real_subset(ilsvrc_val_1300: Path, tmp_path_factory: pytest.TempPathFactory, first_images) -> Path:
    """The first 12 images (and their boxes) of the real ILSVRC val manifest."""
    d = tmp_path_factory.mktemp("real")
    scan(ilsvrc_val_1300, d / "full")
    return first_images(d / "full", d / "m", 12)


@pytest.mark.slow
def test_model_shapes_and_weights(tmp_path: Path) -> None:
    model = build_model("random", "fc6", seed=0)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        y = model(x)
        assert y.shape == (2, 4096)
        assert torch.equal(build_model("random", "fc6", seed=0)(x), y)  # seeded
        assert (build_model("random", "fc6-relu", seed=0)(x) >= 0).all()
    torch.save(model.state_dict(), tmp_path / "fc6_only.pt")
    with pytest.raises(ModelError, match=r"not a torchvision VGG-16 state dict: missing classifier\.0\.weight"):
        build_model(str(tmp_path / "fc6_only.pt"))
    from torchvision.models import vgg16

    torch.manual_seed(3)
    full = vgg16(weights=None)
    torch.save(full.state_dict(), tmp_path / "vgg16.pt")
    with torch.inference_mode():
        loaded = build_model(str(tmp_path / "vgg16.pt"))(x)
        expect = full.classifier[0](torch.flatten(full.avgpool(full.features(x)), 1))
    assert torch.allclose(loaded, expect)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights file"):
        build_model(str(tmp_path / "junk.pt"))
    with pytest.raises(ModelError, match="neither 'imagenet', 'random' nor an existing file"):
        build_model(str(tmp_path / "none.pt"))


def test_imagenet_weights_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models

    def offline(**kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.models, "vgg16", offline)
    with pytest.raises(ModelError, match=r"IMAGENET1K_V1 .*pre-fill TORCH_HOME or pass weights FILE"):
        build_model("imagenet")


def test_bad_options(real_subset: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"layer='fc7' is not allowed; choose one of 'fc6', 'fc6-relu'"):
        extract_features(real_subset, tmp_path / "f", FeatureConfig(layer="fc7"))
    with pytest.raises(OptionError, match="batch_size=0 must be >= 1"):
        extract_features(real_subset, tmp_path / "f", FeatureConfig(batch_size=0))
    with pytest.raises(OptionError, match=r"image root .* does not exist; give root DIR"):
        extract_features(real_subset, tmp_path / "f", FeatureConfig(**SMALL, root=str(tmp_path / "nowhere")))
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="device cuda: no CUDA device"):
            extract_features(real_subset, tmp_path / "f", FeatureConfig(**SMALL, device="cuda"))


def test_shards_resume_and_settings(real_subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "f"
    s = extract_features(real_subset, out, FeatureConfig(**SMALL, shard_size=5))
    assert (s.items, s.shards_total, s.shards_resumed) == (12, 3, 0)
    assert s.settings["random_weights"] and "NOT ImageNet" in s.settings["weights"]
    labels, first = _feats(out)
    m = read_manifest(real_subset)
    assert labels == m.images["label"].to_pylist()
    (out / "part-000001.parquet").unlink()
    s = extract_features(real_subset, out, FeatureConfig(**SMALL, shard_size=5))
    assert s.shards_resumed == 2
    assert np.array_equal(_feats(out)[1], first)
    with pytest.raises(OptionError, match=r"holds shards \(part-000000\.parquet, \.\.\.\) of another features run "
                                          r"\(it differs in preprocessing\); choose a new out"):
        extract_features(real_subset, out, FeatureConfig(**{**SMALL, "crop": 33}, shard_size=5))
    # a shard cut short (a kill during a copy, a full disk) is made again, not a traceback
    shard = out / "part-000002.parquet"
    shard.write_bytes(shard.read_bytes()[:100])
    s = extract_features(real_subset, out, FeatureConfig(**SMALL, shard_size=5))
    assert s.shards_resumed == 2 and np.array_equal(_feats(out)[1], first)


def test_shards_of_a_changed_manifest_are_made_again(real_subset: Path, tmp_path: Path, first_images) -> None:
    """A shard is reused only if it embeds the same images: after the manifest changes, stale shards are
    made again and the features are those of a fresh run."""
    out = tmp_path / "f"
    extract_features(first_images(real_subset, tmp_path / "m6", 6), out, FeatureConfig(**SMALL, shard_size=5))
    write_manifest(tmp_path / "m6", *_tables(real_subset, 1, 7))  # the manifest now holds images 1-6
    s = extract_features(tmp_path / "m6", out, FeatureConfig(**SMALL, shard_size=5))
    assert s.shards_resumed == 0
    extract_features(tmp_path / "m6", tmp_path / "fresh", FeatureConfig(**SMALL, shard_size=5))
    assert _feats(out)[0] == _feats(tmp_path / "fresh")[0]
    assert np.array_equal(_feats(out)[1], _feats(tmp_path / "fresh")[1])


def _tables(manifest: Path, start: int, stop: int) -> tuple:
    import pyarrow.compute as pc

    m = read_manifest(manifest)
    images = m.images.slice(start, stop - start)
    return images, m.boxes.filter(pc.is_in(m.boxes["image_id"], images["image_id"])), m.rejects, m.meta


def test_box_features(real_subset: Path, tmp_path: Path) -> None:
    s = extract_features(real_subset, tmp_path / "b", FeatureConfig(**SMALL, on="box"))
    m = read_manifest(real_subset)
    labels, feats = _feats(tmp_path / "b")
    assert s.items == len(m.boxes) == len(feats)
    assert labels == m.boxes["label"].to_pylist()


def test_fast_path_matches_reference_on_real_images(real_subset: Path, tmp_path: Path) -> None:
    """tensor loader (fast path code, here on the CPU) and bfloat16 against PIL + float32."""
    cfg = {"weights": "random", "workers": 0, "batch_size": 6}
    extract_features(real_subset, tmp_path / "pil", FeatureConfig(**cfg, loader="pil"))
    extract_features(real_subset, tmp_path / "fast", FeatureConfig(**cfg, loader="tensor", dtype="bfloat16"))
    a, b = _feats(tmp_path / "pil")[1], _feats(tmp_path / "fast")[1]
    assert _cos(a, b).min() > 0.999
    # random-weight features share a large common part; compare what differs between images too
    assert _cos(a - a.mean(0), b - b.mean(0)).min() > 0.98


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_fast_path_matches_float32(real_subset: Path, tmp_path: Path) -> None:
    cfg = {"weights": "random", "workers": 2, "batch_size": 6}
    extract_features(real_subset, tmp_path / "ref", FeatureConfig(**cfg, loader="pil", device="cpu"))
    extract_features(real_subset, tmp_path / "gpu", FeatureConfig(**cfg, loader="tensor", device="cuda",
                                                                  dtype="bfloat16"))
    a, b = _feats(tmp_path / "ref")[1], _feats(tmp_path / "gpu")[1]
    assert _cos(a, b).min() > 0.999


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_equal_one_process(real_subset: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    extract_features(real_subset, one, FeatureConfig(**SMALL, shard_size=4))
    two = tmp_path / "two"
    env = dict(os.environ, EIC_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "eic_builder.cli", "features", str(real_subset), "--out", str(two), "--weights", "random",
           "--crop", "32", "--resize", "37", "--workers", "0", "--batch-size", "4", "--shard-size", "4",
           "--device", "cpu", "--distributed"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    la, fa = _feats(one)
    lb, fb = _feats(two)
    assert la == lb and np.array_equal(fa, fb)


def test_cli_features_and_stats(real_subset: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from eic_builder.cli import main

    out = tmp_path / "f"
    r = CliRunner().invoke(main, ["--no-progress", "features", str(real_subset), "--out", str(out), "--weights",
                                  "random", "--crop", "32", "--resize", "37", "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "12 images -> 1 shards" in r.output and "NOT ImageNet" in r.output
    r = CliRunner().invoke(main, ["stats", f"val={real_subset}", "--features", f"val={out}"])
    assert r.exit_code == 0 and "(random weights)" in r.output
    r = CliRunner().invoke(main, ["stats", f"val={real_subset}", "--features", f"other={out}"])
    assert r.exit_code == 2 and "--features names other match no manifest" in r.output
    shutil.rmtree(out)


@pytest.mark.parametrize("loader", ["tensor", "pil"])
def test_16_bit_png_reads_as_its_8_bit_copy(loader: str, tmp_path: Path) -> None:
    """A 16-bit PNG decodes to the pixels of its 8-bit copy, not 256 times larger (both loaders)."""
    import numpy as np
    from PIL import Image

    from eic_builder.image_batches import FeatureItem, PilDataset, TensorCpuDataset
    from eic_builder.image_source import ImageRef

    grey = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint16)
    Image.fromarray(grey.astype(np.uint8), "L").save(tmp_path / "a8.png")
    Image.fromarray(grey * 257).save(tmp_path / "a16.png")  # 16-bit grey PNG ("I;16")
    assert Image.open(tmp_path / "a16.png").mode.startswith("I")
    items = [FeatureItem(n, -1, None, ImageRef(f"{n}.png"), None) for n in ("a8", "a16")]
    dataset = (TensorCpuDataset if loader == "tensor" else PilDataset)(items, str(tmp_path))
    eight, sixteen = dataset[0][0], dataset[1][0]
    assert torch.allclose(eight, sixteen, atol=1e-5), (eight - sixteen).abs().max()


def test_a_box_that_is_not_finite_is_one_error(real_subset: Path, tmp_path: Path) -> None:
    import pyarrow as pa

    from eic_builder.errors import FormatError

    m = read_manifest(real_subset)
    x1 = m.boxes["x1"].to_pylist()
    x1[2] = float("nan")
    boxes = m.boxes.set_column(m.boxes.schema.get_field_index("x1"), "x1", pa.array(x1, pa.float32()))
    write_manifest(tmp_path / "m", m.images, boxes, m.rejects, m.meta)
    with pytest.raises(FormatError, match=r"holds a box that is not finite: image \S+ box \d+ \(nan"):
        extract_features(tmp_path / "m", tmp_path / "f", FeatureConfig(**SMALL, on="box"))


@pytest.mark.slow
def test_images_deleted_after_the_scan_and_weights_of_another_shape(real_subset: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from eic_builder.cli import main
    from eic_builder.errors import ModelError

    m = read_manifest(real_subset)
    root = tmp_path / "images"
    (root / "val").mkdir(parents=True)
    for rel in m.images["path"].to_pylist()[1:]:  # the first image is gone
        (root / rel).write_bytes((Path(m.meta["source_root"]) / rel).read_bytes())
    for workers in ("0", "2"):  # in this process, and in DataLoader workers (their error comes back wrapped)
        r = CliRunner().invoke(main, ["--no-progress", "features", str(real_subset), "--out", str(tmp_path / workers),
                                      "--weights", "random", "--crop", "32", "--resize", "36", "--workers", workers,
                                      "--root", str(root)])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1, r.output
        assert lines[0].startswith("eic-build: error: cannot read image ") and "No such file" in lines[0]
    from torchvision.models import vgg16

    state = vgg16(weights=None).state_dict()
    state["classifier.0.weight"] = state["classifier.0.weight"][:, :100]
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelError, match=r"w\.pt does not fit this model .*other shapes: classifier\.0\.weight"):
        build_model(str(tmp_path / "w.pt"), "fc6")


def test_batched_preprocessing_equals_per_image(real_subset: Path) -> None:
    """The GPU path's batched resize/crop/normalise gives what the per-image recipe gives (on the CPU here)."""
    from eic_builder.features import manifest_items
    from eic_builder.image_batches import BytesDataset, Preprocess, decode_cpu, preprocess_batch, preprocess_uint8

    items, root = manifest_items(real_subset, "image")
    items += manifest_items(real_subset, "box")[0][:3]  # box crops mixed in
    data = BytesDataset(items, root)
    images = [decode_cpu(torch.frombuffer(bytearray(data[k][0]), dtype=torch.uint8)) for k in range(len(items))]
    images[1] = images[1][:, :200, :150].contiguous()  # another size among the 227x227 ones
    pp = Preprocess(resize=64, crop=56)
    batched = preprocess_batch(images, items, pp)
    one_by_one = torch.stack([preprocess_uint8(im, it.box, pp) for im, it in zip(images, items)])
    assert batched.shape == (len(items), 3, 56, 56)
    assert torch.allclose(batched, one_by_one, atol=1e-6)


@pytest.mark.parametrize(("flags", "dtype"), [(frozenset({"avx2"}), "float32"),
                                               (frozenset({"avx2", "avx512_bf16", "amx_bf16"}), "bfloat16")])
def test_auto_dtype_is_chosen_by_the_cpu_and_recorded(real_subset: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, flags, dtype: str) -> None:
    from eic_builder import hardware
    from eic_builder.dataset.tables import read_metadata

    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    s = extract_features(real_subset, tmp_path / "f", FeatureConfig(**SMALL, device="cpu", shard_size=6))
    assert s.settings["dtype"] == dtype
    assert read_metadata(tmp_path / "f" / "part-000000.parquet")["dtype"] == dtype
    explicit = extract_features(real_subset, tmp_path / "f", FeatureConfig(**SMALL, device="cpu", shard_size=6,
                                                                            dtype=dtype))
    assert explicit.shards_resumed == 2  # auto resolved to the same dtype: the same run


def test_region_pool5_by_hand() -> None:
    from eic_builder.features import region_pool5

    conv = torch.randn(2, 512, 10, 10)
    # by hand: the whole map and five 8x8 regions (80 % of 10), each 2x2 max pooled to 4x4 and averaged to 7x7
    corners = [(1, 1), (0, 0), (2, 0), (0, 2), (2, 2)]  # (left, top) of the centre and the four corners
    maps = [conv] + [conv[:, :, top:top + 8, left:left + 8] for left, top in corners]
    expected = torch.stack([torch.nn.functional.adaptive_avg_pool2d(torch.nn.functional.max_pool2d(m, 2), 7)
                            for m in maps]).mean(0)
    assert torch.allclose(region_pool5(conv), expected, atol=1e-6)
    model, regions = build_model("random", "fc6", seed=0), build_model("random", "fc6", seed=0, regions=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = region_pool5(model.features[:-1](x))
        assert torch.allclose(regions(x), model.fc6(torch.flatten(pooled, 1)), atol=1e-4)


def test_mirror_features_are_the_same_for_an_image_and_its_mirror(tmp_path: Path) -> None:
    from PIL import Image

    from eic_builder.dataset.feature_shards import read_image_features

    rng = np.random.default_rng(0)
    folder = tmp_path / "images" / "n01440764"
    folder.mkdir(parents=True)
    pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)  # resized to 72, cropped to 64: a centred crop
    Image.fromarray(pixels).save(folder / "a.png")
    Image.fromarray(pixels[:, ::-1]).save(folder / "a_mirror.png")  # lossless: the exact mirror image
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(folder / "b.png")
    scan(tmp_path / "images", tmp_path / "m", split="train")
    runs = {}
    for name, options in (("plain", {}), ("mirror", {"mirror": True}), ("both", {"mirror": True, "regions": True})):
        config = FeatureConfig(**{**SMALL, "resize": 72, "crop": 64}, **options)
        summary = extract_features(tmp_path / "m", tmp_path / name, config)
        ids, matrix = read_image_features(tmp_path / name)
        runs[name] = dict(zip(ids, matrix.astype(np.float32)))
        assert summary.settings.get("mirror", "") == ("" if name == "plain" else summary.settings["mirror"])
        assert ("regions" in summary.settings) == (name == "both")
    def apart(f: dict[str, np.ndarray], other: str) -> float:
        return float(np.linalg.norm(f["a"] - f[other]))

    for name in ("mirror", "both"):  # the same up to float16 storage and float sums in another order
        assert apart(runs[name], "a_mirror") < 0.01 * apart(runs[name], "b")
    assert apart(runs["plain"], "a_mirror") > 0.3 * apart(runs["plain"], "b")
    with pytest.raises(OptionError, match=r"holds shards .* of another features run \(it differs in "):
        extract_features(tmp_path / "m", tmp_path / "mirror", FeatureConfig(**{**SMALL, "resize": 72, "crop": 64}))
