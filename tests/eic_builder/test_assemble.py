"""``assemble``: EIC train/val from ILSVRC and ImageNet-21K manifests, on the synthetic download shapes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from eic_builder.assemble import AssembleOptions, assemble, rank_key
from eic_builder.dataset.manifest import read_manifest, resolve_image_root, write_manifest
from eic_builder.errors import ManifestError, OptionError
from eic_builder.image_source import ImageReader, image_refs
from eic_builder.reference_lists import data_manifests_dir
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import (
    DEMO_WNIDS,
    EIC_NEW_WNIDS,
    NOT_EIC_WNID,
    PLANTED_VAL_IMAGE,
    make_synthetic_archives,
)

CLASSES = data_manifests_dir() / "eic_classes.parquet"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Scans of the synthetic ILSVRC train/val tree and of fall11_whole.tar + Annotation.tar.gz."""
    root = tmp_path_factory.mktemp("eic")
    made = make_synthetic_archives(root / "downloads", new_per_class=12, other_per_class=5)
    out = {"train": root / "m/ilsvrc_train", "val": root / "m/ilsvrc_val", "21k": root / "m/21k"}
    scan(made.ilsvrc.root, out["train"], split="train", workers=1)
    scan(made.ilsvrc.root, out["val"], split="val", workers=1)
    scan([made.images_tar, made.annotations_tgz], out["21k"], workers=1)
    out["root"] = root
    return out


def _run(manifests: dict[str, Path], out: Path, **options) -> tuple:
    result = assemble([manifests["train"], manifests["val"], manifests["21k"]], CLASSES, out,
                      AssembleOptions(**options))
    return result, read_manifest(out / "train"), read_manifest(out / "val")


def test_rules_split_and_leakage(manifests, tmp_path: Path) -> None:
    r, train, val = _run(manifests, tmp_path / "eic", val_per_class=3, max_train_per_class=6)
    tid, vid = set(train.images["image_id"].to_pylist()), set(val.images["image_id"].to_pylist())
    assert not tid & vid
    # ILSVRC classes keep ILSVRC's split: 4 classes x 12 train (one unannotated each), 4 x 4 val
    il_train = train.images.filter(pc.invert(pc.is_in(train.images["label"], pa.array(EIC_NEW_WNIDS))))
    assert len(il_train) == 48 and all(i.startswith("n0") and "_" in i for i in il_train["image_id"].to_pylist())
    il_val = val.images.filter(pc.invert(pc.is_in(val.images["label"], pa.array(EIC_NEW_WNIDS))))
    assert len(il_val) == 16 and all(i.startswith("ILSVRC2012_val_") for i in il_val["image_id"].to_pylist())
    # new classes: 12 images (+1 planted copy in the first), 3 to val, at most 6 to train, chosen by hash
    for wnid in EIC_NEW_WNIDS:
        in_val = sorted(i for i, lab in zip(val.images["image_id"].to_pylist(), val.images["label"].to_pylist())
                        if lab == wnid)
        in_train = [i for i, lab in zip(train.images["image_id"].to_pylist(), train.images["label"].to_pylist())
                    if lab == wnid]
        ordered = sorted((f"{wnid}_{n}" for n in range(1, 13)), key=lambda i: (rank_key(i, 0), i))
        assert in_val == sorted(ordered[:3]) and sorted(in_train) == sorted(ordered[3:9])
    # what must not be there
    assert NOT_EIC_WNID not in set(train.images["label"].to_pylist()) | set(val.images["label"].to_pylist())
    planted = f"{EIC_NEW_WNIDS[0]}_13"
    assert planted not in tid | vid
    assert r.effects["pool image with the bytes of an ILSVRC val image"] == 1
    assert r.effects["not an EIC class"] == 5  # the dog synset
    assert r.effects["ILSVRC class image in a pool manifest, or new class image in an ILSVRC split"] == 2 * 5
    assert r.effects["over --max-train-per-class=6 (new classes)"] == 4 * 3
    rejected = train.rejects.to_pylist()
    assert [(x["image_id"], x["reason"]) for x in rejected] == [(planted, "copy_of_val_image")]
    assert PLANTED_VAL_IMAGE in rejected[0]["detail"]
    # boxes follow their images; images without boxes are kept
    assert set(train.boxes["image_id"].to_pylist()) <= tid and set(val.boxes["image_id"].to_pylist()) <= vid
    assert sum(train.images["n_boxes"].to_pylist()) == len(train.boxes)
    assert 0 in train.images["n_boxes"].to_pylist()
    assert r.images == {"train": 48 + 4 * 6, "val": 16 + 4 * 3} and r.classes == {"train": 8, "val": 8}
    # every image reads from the common root, archive members by offset, and the bytes are the hashed ones
    for part in (train, val):
        reader = ImageReader(resolve_image_root(part.meta))
        assert all(hashlib.sha1(reader.read(ref)).hexdigest() == digest
                   for ref, digest in zip(image_refs(part.images), part.images["sha1"].to_pylist()))
    report = (tmp_path / "eic" / "report.md").read_text()
    assert "| images | 72 | 28 | 2,456,727 | 273,140 |" in report
    assert "| pool image with the bytes of an ILSVRC val image | 1 |" in report


def test_same_inputs_same_bytes(manifests, tmp_path: Path) -> None:
    _run(manifests, tmp_path / "a", val_per_class=3)
    _run(manifests, tmp_path / "b", val_per_class=3)
    for split in ("train", "val"):
        for name in ("images", "boxes", "rejects"):
            assert (tmp_path / "a" / split / f"{name}.parquet").read_bytes() == \
                (tmp_path / "b" / split / f"{name}.parquet").read_bytes()
    _, train_seed1, _ = _run(manifests, tmp_path / "c", val_per_class=3, seed=1)
    _, train_seed0, _ = _run(manifests, tmp_path / "d", val_per_class=3, seed=0)
    assert not train_seed0.images["image_id"].equals(train_seed1.images["image_id"])


def test_training_copy_of_a_val_image_is_removed(manifests, tmp_path: Path) -> None:
    """An ILSVRC train image whose bytes equal an ILSVRC val image's (a leak inside ILSVRC itself)."""
    train = read_manifest(manifests["train"])
    val = read_manifest(manifests["val"])
    sha = val.images["sha1"]
    assert sha.null_count == len(sha)  # folder scans without --hash: assemble hashes them itself
    leak_root = tmp_path / "leak"
    (leak_root / "train" / DEMO_WNIDS[0]).mkdir(parents=True)
    src = Path(train.meta["source_root"])
    import shutil

    shutil.copytree(src / "train", leak_root / "train", dirs_exist_ok=True)
    shutil.copy(src / "val" / f"{PLANTED_VAL_IMAGE}.JPEG", leak_root / "train" / DEMO_WNIDS[0] / "n01440764_999.JPEG")
    scan(leak_root, tmp_path / "leak_train", split="train", workers=1)
    r = assemble([tmp_path / "leak_train", manifests["val"], manifests["21k"]], CLASSES, tmp_path / "eic",
                 AssembleOptions(val_per_class=3))
    assert r.effects["training image with the bytes of a val image"] == 1
    assert r.effects["content hashes computed here (not in the scan)"] == 49 + 16
    assert "n01440764_999" not in read_manifest(tmp_path / "eic" / "train").images["image_id"].to_pylist()


def test_short_classes(manifests, tmp_path: Path) -> None:
    """Every new class has 12 usable images (the planted copy is dropped), 3 of them val: 9 train each."""
    r, train, val = _run(manifests, tmp_path / "skip", val_per_class=3, min_train_per_class=10)
    assert r.short_classes == [(w, 9) for w in sorted(EIC_NEW_WNIDS)]
    kept = set(train.images["label"].to_pylist()) | set(val.images["label"].to_pylist())
    assert not set(EIC_NEW_WNIDS) & kept and set(DEMO_WNIDS[:4]) == kept
    assert r.effects["images of classes skipped for too few training images"] == 4 * 12
    with pytest.raises(OptionError, match=r"4 new classes have fewer than min_train_per_class=10 .*n01832493 \(9\)"):
        _run(manifests, tmp_path / "refuse", val_per_class=3, min_train_per_class=10, short="refuse")
    r, train, _ = _run(manifests, tmp_path / "keep", val_per_class=3, min_train_per_class=9, short="keep")
    assert not r.short_classes and set(EIC_NEW_WNIDS) <= set(train.images["label"].to_pylist())


def test_bad_input(manifests, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"short='drop' is not allowed; choose one of 'skip'"):
        assemble([manifests["21k"]], CLASSES, tmp_path / "x", AssembleOptions(short="drop"))
    with pytest.raises(OptionError, match=r"val_per_class=0 must be >= 1"):
        assemble([manifests["21k"]], CLASSES, tmp_path / "x", AssembleOptions(val_per_class=0))
    with pytest.raises(OptionError, match=r"min_train_per_class=5 must be in \[0, max_train_per_class=4\]"):
        assemble([manifests["21k"]], CLASSES, tmp_path / "x", AssembleOptions(min_train_per_class=5,
                                                                              max_train_per_class=4))
    with pytest.raises(OptionError, match="give at least one MANIFEST"):
        assemble([], CLASSES, tmp_path / "x")
    with pytest.raises(OptionError, match=r"out .* is the input manifest 1 .*: they overlap"):
        assemble([manifests["21k"]], CLASSES, manifests["21k"])
    with pytest.raises(ManifestError, match=r"manifest directory .* does not exist"):
        assemble([tmp_path / "nowhere"], CLASSES, tmp_path / "x")
    with pytest.raises(ManifestError, match="is not a eic_classes table"):
        assemble([manifests["21k"]], manifests["21k"] / "images.parquet", tmp_path / "x")
    # an empty pool: every class is missing, nothing crashes
    m = read_manifest(manifests["21k"])
    write_manifest(tmp_path / "empty", m.images.slice(0, 0), m.boxes.slice(0, 0), m.rejects, m.meta)
    r = assemble([tmp_path / "empty"], CLASSES, tmp_path / "out")
    assert r.images == {"train": 0, "val": 0} and len(r.missing_classes) == 2686


def test_moved_images_are_a_clear_error(manifests, tmp_path: Path) -> None:
    m = read_manifest(manifests["21k"])
    write_manifest(tmp_path / "moved", m.images, m.boxes, m.rejects, {**m.meta, "source_root": str(tmp_path / "gone")})
    with pytest.raises(OptionError, match=r"image root .*gone.* \(recorded in the manifest\) does not exist; "
                                          r"the images of .*moved must be where it was scanned"):
        assemble([tmp_path / "moved"], CLASSES, tmp_path / "x")


def test_resized_reencoded_and_mirrored_copies_of_val_images_are_kept_out_and_nothing_else(
        ilsvrc_val_1300: Path, tmp_path: Path) -> None:
    """Real photos: 98 ILSVRC val images, and a pool of one EIC-new class holding 300 other real photos and
    30 copies of val images (halved, re-encoded at JPEG 40, mirrored): exactly the copies are kept out, each
    naming its original, and every other photo stays (precision and recall 1 on photos the pHash threshold
    was not set on)."""
    import shutil

    from eic_builder.planted_copies import transform_bytes

    photos = sorted((ilsvrc_val_1300 / "val").iterdir())
    val_photos, others = photos[600:698], photos[700:1000]
    (tmp_path / "val" / "val").mkdir(parents=True)
    for photo in val_photos:
        shutil.copy(photo, tmp_path / "val" / "val" / photo.name)
    shutil.copy(ilsvrc_val_1300 / "LOC_val_solution.csv", tmp_path / "val")
    pool = tmp_path / "pool" / EIC_NEW_WNIDS[0]
    pool.mkdir(parents=True)
    for k, photo in enumerate(others):
        shutil.copy(photo, pool / f"{EIC_NEW_WNIDS[0]}_{k}.JPEG")
    planted = {}
    for k, photo in enumerate(val_photos[:30]):
        transform = ("resize", "reencode", "flip")[k % 3]
        name = f"{EIC_NEW_WNIDS[0]}_{1000 + k}"
        (pool / f"{name}.JPEG").write_bytes(transform_bytes(photo.read_bytes(), transform))
        planted[name] = photo.stem
    scan(tmp_path / "val", tmp_path / "m_val", split="val", known_wnids=None)
    scan(tmp_path / "pool", tmp_path / "m_pool", split="pool", known_wnids=None)
    r = assemble([tmp_path / "m_val", tmp_path / "m_pool"], CLASSES, tmp_path / "eic",
                 AssembleOptions(val_per_class=10, hash_workers=2))
    key = "pool image that is a resized, re-encoded or mirrored copy of an ILSVRC val image (pHash)"
    assert r.effects[key] == 30
    rejects = read_manifest(tmp_path / "eic" / "train").rejects.to_pylist()
    rejects += read_manifest(tmp_path / "eic" / "val").rejects.to_pylist()
    named = {row["image_id"]: row["detail"] for row in rejects if row["reason"] == "copy_of_val_image"}
    assert set(named) == set(planted) and all(planted[i] in named[i] for i in named)
    kept = set(read_manifest(tmp_path / "eic" / "train").images["image_id"].to_pylist())
    kept |= set(read_manifest(tmp_path / "eic" / "val").images["image_id"].to_pylist())
    assert {f"{EIC_NEW_WNIDS[0]}_{k}" for k in range(len(others))} <= kept
    assert "| " + key + " | 30 |" in (tmp_path / "eic" / "report.md").read_text()
