"""ImageNet as the Hugging Face Hub holds it (eic_builder.synthetic.make_synthetic_hub): timm's webdataset
shards, resized, with the box archive in the originals' pixels; the 1k validation shards and
ILSVRC/imagenet-1k's archive with a LOC CSV."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from eic_builder.cli import main
from eic_builder.dataset.manifest import open_manifest, read_manifest
from eic_builder.scan.hub import hub_set, hub_split, image_id_of
from eic_builder.scan.samples import read_sample_member, sample_key
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import PLANTED_VAL_IMAGE, _tar_bytes, make_synthetic_archives, make_synthetic_hub

ARGS = {"n_classes": 3, "val_per_class": 3, "new_per_class": 6}


def run(*args: str):
    return CliRunner().invoke(main, ["--no-progress", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_hub(tmp_path_factory.mktemp("hub"), **ARGS)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory):
    """The same images at their original size (the data the hub's shards were made from), scanned."""
    d = tmp_path_factory.mktemp("originals")
    made = make_synthetic_archives(d / "src", ARGS["n_classes"], 1, ARGS["val_per_class"], ARGS["new_per_class"])
    scan([made.images_tar, made.annotations_tgz], d / "m21k", known_wnids=None)
    scan(made.ilsvrc.root, d / "mval", split="val", known_wnids=None)
    return {"21k": read_manifest(d / "m21k"), "val": read_manifest(d / "mval")}


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "eic-cache-hub"))


def test_hub_names() -> None:
    assert hub_set("imagenet22k-train-0042.tar") == "imagenet22k-train"
    assert hub_set("x/imagenet22k-validation-0000.tar") == "imagenet22k-validation"
    assert hub_set("imagenet12k-train-0001.tar") == "imagenet12k-train" and hub_set("n01440764.tar") is None
    assert hub_split("imagenet1k-validation-07.tar") == "val" and hub_split("imagenet1k-train-0003.tar") == "train"
    assert hub_split("imagenet22k-validation-0000.tar") is None  # a pool, never ILSVRC val
    assert hub_split("train_images_3.tar.gz") == "train" and hub_split("val_images.tar.gz") == "val"
    assert image_id_of("val_images.tar.gz/ILSVRC2012_val_00000001_n01751748.JPEG") == ("ILSVRC2012_val_00000001",
                                                                                       "n01751748")
    assert image_id_of("train_images_0.tar.gz/n01440764_10026_n01440764.JPEG") == ("n01440764_10026", "n01440764")
    assert image_id_of("folder/img_n01440764.JPEG") == ("img_n01440764", None)  # the suffix rule is the Hub's only
    assert sample_key("s.tar/a/n01440764_1.seg.png") == "s.tar/a/n01440764_1"


def test_sample_members_by_hand() -> None:
    facts = read_sample_member("k.json", b'{"class_name": "n01440764", "orig_width": 500, "orig_height": 375}')
    assert (facts.wnid, facts.orig_width, facts.orig_height, facts.problem) == ("n01440764", 500, 375, None)
    facts = read_sample_member("k.json", b'{"filename": "n01443537/ILSVRC2012_val_00000293.JPEG", "label": 1}')
    assert facts.wnid == "n01443537"
    assert read_sample_member("k.cls", b"417\n").class_index == 417
    assert "does not parse" in read_sample_member("k.json", b'{"class_name": ').problem
    assert "one original side" in read_sample_member("k.json", b'{"orig_width": 500}').problem


def test_webdataset_shards_scan_in_place_with_classes_and_boxes_in_stored_pixels(hub, originals,
                                                                                 tmp_path: Path) -> None:
    s = scan([hub.root / "in22k", hub.annotations], tmp_path / "m", known_wnids=None)
    assert s.split == "imagenet22k-train" and s.images == hub.train_samples and s.rejects == 0
    m = read_manifest(tmp_path / "m")
    images = m.images.to_pandas().set_index("image_id")
    assert (images["label"] == [i.split("_")[0] for i in images.index]).all()  # the json's class_name
    resized = images[images["ann_width"].notna()]
    assert 0 < len(resized) <= hub.resized  # the held-out shards have the rest
    assert (np.minimum(resized["width"], resized["height"]) == 128).all()
    orig = originals["21k"].boxes.to_pandas().set_index(["image_id", "box_index"])
    got = m.boxes.to_pandas().set_index(["image_id", "box_index"])
    assert len(got) > 10 and got.index.isin(orig.index).all()
    for (image_id, k), box in got.iterrows():
        row = images.loc[image_id]
        ann_w = row["ann_width"] if row["ann_width"] == row["ann_width"] else row["width"]
        ann_h = row["ann_height"] if row["ann_height"] == row["ann_height"] else row["height"]
        sx, sy = row["width"] / ann_w, row["height"] / ann_h
        want = orig.loc[(image_id, k)]
        assert abs(box["x1"] - want["x1"] * sx) < 1e-3 and abs(box["y2"] - want["y2"] * sy) < 1e-3
        assert box["is_small"] == want["is_small"]  # measured in the original's pixels
    with open_manifest(tmp_path / "m") as opened:  # read in place, by offset
        for image_id in opened.image_ids[:5]:
            assert opened.read_image(image_id).size == tuple(images.loc[image_id, ["width", "height"]])


def test_the_validation_shards_are_a_pool_of_their_own_name(hub, tmp_path: Path) -> None:
    s = scan([hub.root / "in22k-val", hub.annotations], tmp_path / "m", known_wnids=None)
    assert s.split == "imagenet22k-validation" and s.images > 0
    r = run("scan", str(hub.root / "in22k"), str(hub.in22k_validation), "--out", str(tmp_path / "both"),
            "--no-wordnet-check")
    assert r.exit_code == 2 and "several sets (imagenet22k-train, imagenet22k-validation)" in r.output


@pytest.mark.parametrize("where", ["in1k", "hf", "hf-parquet"])
def test_the_1k_validation_forms_scan_as_ilsvrc_val(hub, originals, tmp_path: Path, where: str) -> None:
    for split in ("val", None):
        s = scan(hub.root / where, tmp_path / f"m{split}", split=split, known_wnids=None)
        assert (s.split, s.format, s.images, s.rejects) == ("val", "loc-csv", hub.val_images, 0)
    m = read_manifest(tmp_path / "mval")
    want = originals["val"]
    assert m.images["image_id"].to_pylist() == want.images["image_id"].to_pylist()
    assert m.images["label"].to_pylist() == want.images["label"].to_pylist()
    for column in ("x1", "y1", "x2", "y2"):
        assert m.boxes[column].to_pylist() == want.boxes[column].to_pylist()


def test_a_cls_index_names_the_class_through_a_synset_list(tmp_path: Path) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30)).save(jpeg, "JPEG")
    members = [("a_1.cls", b"1"), ("a_1.jpg", jpeg.getvalue()),
               ("a_2.cls", b"5000"), ("a_2.jpg", jpeg.getvalue()),
               ("a_3.jpg", jpeg.getvalue()), ("a_3.json", b'{"class_name": "n01440764", "orig_wid')]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "imagenet1k-train-0000.tar").write_bytes(_tar_bytes(members))
    s = scan(tmp_path / "s", tmp_path / "m", known_wnids=None)
    m = read_manifest(tmp_path / "m")
    assert s.split == "train" and m.images.to_pydict()["label"] == ["n01443537"]  # the 1k order built in
    reasons = dict(zip(m.rejects["image_id"].to_pylist(), m.rejects["reason"].to_pylist()))
    assert reasons == {"a_2": "unknown_class", "a_3": "malformed_json"}
    (tmp_path / "list.txt").write_text("n01440764\nn01443537\n")
    r = run("scan", str(tmp_path / "s"), "--out", str(tmp_path / "m2"), "--synsets", str(tmp_path / "list.txt"),
            "--no-wordnet-check")
    assert r.exit_code == 0 and read_manifest(tmp_path / "m2").images["label"].to_pylist() == ["n01443537"]
    detail = read_manifest(tmp_path / "m2").rejects.to_pylist()
    assert any("beyond the 2 synsets of the list" in row["detail"] for row in detail)


def test_webp_shards_scan_with_their_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    members = []
    for k, size in enumerate(((61, 45), (30, 77))):
        data = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(data, "WEBP")
        members += [(f"n01440764_{k}.webp", data.getvalue()),
                    (f"n01440764_{k}.json", json.dumps({"class_name": "n01440764"}).encode())]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "imagenet12k-train-0000.tar").write_bytes(_tar_bytes(members))
    scan(tmp_path / "s", tmp_path / "m", known_wnids=None)
    with open_manifest(tmp_path / "m") as m:
        assert m.images.select(["width", "height"]).to_pylist() == [{"width": 61, "height": 45},
                                                                     {"width": 30, "height": 77}]
        assert m.read_image(m.image_ids[1]).size == (30, 77)


def test_the_planted_copy_is_resized_in_the_shards(hub) -> None:
    with tarfile.open(hub.in22k_train[0]) as a, tarfile.open(hub.in22k_train[1]) as b:
        names = a.getnames() + b.getnames()
    assert f"{hub.planted}.jpg" in names and PLANTED_VAL_IMAGE.startswith("ILSVRC2012_val_")


def test_parquet_rows_are_read_a_row_group_at_a_time(hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    scan(hub.root / "hf-parquet", tmp_path / "m", known_wnids=None)
    loads = []
    real = pq.ParquetFile.read_row_group

    def counted(self, i, *args, **kwargs):
        loads.append(i)
        return real(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    with open_manifest(tmp_path / "m") as m:
        images = m.images.to_pylist()
        assert [r["offset"] for r in images] == list(range(hub.val_images))  # each image by its row
        for image_id in m.image_ids:
            m.read_bytes(image_id)
    assert loads == list(range((hub.val_images + 4) // 5))  # row groups of 5: each group read once


def test_an_hf_export_scans_back_with_its_ids_classes_and_bytes(hub, tmp_path: Path) -> None:
    scan(hub.hf_val, tmp_path / "m", known_wnids=None)
    r = run("export", str(tmp_path / "m"), "--out", str(tmp_path / "hf"), "--format", "hf")
    assert r.exit_code == 0, r.output
    s = scan(tmp_path / "hf", tmp_path / "back", known_wnids=None)
    a, b = read_manifest(tmp_path / "m").images, read_manifest(tmp_path / "back").images
    assert s.split == "val" and s.images == a.num_rows
    for column in ("image_id", "label", "sha1", "width", "height"):
        assert b[column].to_pylist() == a[column].to_pylist(), column


def test_hostile_samples_and_parquet_rows_are_named_rejects(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from eic_builder.dataset.schemas import HF_IMAGE_TYPE

    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30)).save(jpeg, "JPEG")
    jpg = jpeg.getvalue()
    members = [("a_1.jpg", jpg), ("a_1.cls", b"abc"), ("a_2.jpg", jpg), ("a_2.json", b"\xff\xfe"),
               ("a_3.jpg", jpg), ("a_3.json", b"[" * 100_000 + b"]" * 100_000), ("a_4.jpg", b"notajpeg"),
               ("a_5.jpg", jpg), ("a_5.json", b'"a string"'), ("a_6.jpg", jpg), ("a_6.json", b'{"class_name": 5}')]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "imagenet12k-train-0000.tar").write_bytes(_tar_bytes(members))
    scan(tmp_path / "s", tmp_path / "ms", known_wnids=None)
    m = read_manifest(tmp_path / "ms")
    reasons = dict(zip(m.rejects["image_id"].to_pylist(), m.rejects["reason"].to_pylist()))
    assert reasons == {"a_1": "malformed_json", "a_2": "malformed_json", "a_3": "malformed_json",
                       "a_4": "not_an_image", "a_5": "malformed_json"}
    assert m.images.select(["image_id", "label"]).to_pylist() == [{"image_id": "a_6", "label": None}]
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "garbage.parquet").write_bytes(b"PAR1 not really")
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "p" / "table.parquet")
    pq.write_table(pa.table({"image": pa.array([{"bytes": None, "path": "x.JPEG"}, {"bytes": b"zz", "path": "y.JPEG"},
                                                {"bytes": jpg, "path": "z.JPEG"}], HF_IMAGE_TYPE)}),
                   tmp_path / "p" / "rows.parquet")
    s = scan(tmp_path / "p", tmp_path / "mp", known_wnids=None)
    assert (s.images, s.reject_reasons) == (1, {"empty_file": 1, "not_an_image": 1, "unreadable": 1})
    assert s.ignored["Parquet file without an Image column (not an image table)"] == 1
