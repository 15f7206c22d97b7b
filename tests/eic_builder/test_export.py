"""export: COCO, VOC and Hugging Face folders, checked with the readers people use (pycocotools,
datasets) and by scanning the export back, to the pixel, on the real data."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from eic_builder.cli import main
from eic_builder.dataset.manifest import read_manifest
from eic_builder.errors import InputNotFoundError, ManifestError, OptionError, WordNetError
from eic_builder.export import ExportOptions, export_manifests
from eic_builder.export.hf import check_split_names
from eic_builder.export.labels import label_names
from eic_builder.scan.scanner import scan

BOX_COLUMNS = ["image_id", "box_index", "label", "x1", "y1", "x2", "y2"]


@pytest.fixture(scope="module")
def real(ilsvrc_val_1300: Path, voc_85: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two real sets scanned: val1300 (LOC CSV, wnid labels) and voc85 (COCO JSON, VOC names)."""
    d = tmp_path_factory.mktemp("export")
    scan(ilsvrc_val_1300, d / "val1300")
    scan(voc_85, d / "voc85")
    return {"val1300": d / "val1300", "voc85": d / "voc85"}


def boxes_of(directory: Path):
    frame = read_manifest(directory).boxes.select(BOX_COLUMNS).to_pandas()
    return frame.sort_values(["image_id", "box_index"]).reset_index(drop=True)


def sizes_of(directory: Path) -> dict[str, tuple[int, int]]:
    images = read_manifest(directory).images
    return dict(zip(images["image_id"].to_pylist(), zip(images["width"].to_pylist(), images["height"].to_pylist())))


@pytest.mark.parametrize("name", ["val1300", "voc85"])
def test_coco_loads_in_pycocotools_and_scans_back_to_the_pixel(real: dict[str, Path], name: str,
                                                               tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    manifest = real[name]
    r = export_manifests([manifest], tmp_path / "coco", ExportOptions(fmt="coco"))
    (json_path,) = r.files
    coco = COCO(str(json_path))
    expected = boxes_of(manifest)
    assert len(coco.getAnnIds()) == len(expected) == r.splits[0][2]
    # every box, through pycocotools' own index: [x, y, w, h] gives the manifest's corners back
    found = []
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            x, y, w, h = ann["bbox"]
            label = coco.loadCats(ann["category_id"])[0]["name"]
            found.append((info["eic_image_id"], ann["eic_box_index"], label, x, y, x + w, y + h))
    found.sort()
    want = sorted(expected.itertuples(index=False, name=None))
    assert [f[:3] for f in found] == [w[:3] for w in want]
    np.testing.assert_array_equal(np.array([f[3:] for f in found], dtype=np.float32),
                                  np.array([w[3:] for w in want], dtype=np.float32))
    root = Path(r.image_roots[r.splits[0][0]])
    assert coco.dataset["info"]["eic_image_root"] == str(root)
    first = coco.loadImgs(coco.getImgIds()[0])[0]
    assert (root / first["file_name"]).is_file()  # file_name under the image root the JSON names
    # scanned back (the JSON alone: annotation-only images, sizes from the JSON)
    back = tmp_path / "back"
    summary = scan(tmp_path / "coco", back, split="x")
    assert (summary.format, summary.rejects) == ("coco", 0)
    assert boxes_of(back).equals(expected)
    assert sizes_of(back) == sizes_of(manifest)


@pytest.mark.parametrize("name", ["val1300", "voc85"])
def test_voc_is_one_based_and_scans_back_to_the_pixel(real: dict[str, Path], name: str, tmp_path: Path) -> None:
    manifest = real[name]
    r = export_manifests([manifest], tmp_path / "voc", ExportOptions(fmt="voc"))
    assert r.placement.written == r.splits[0][1] and r.placement.bytes_written == 0  # links, not copies
    back = tmp_path / "back"
    assert scan(tmp_path / "voc", back, split="x").format == "voc-xml"  # wnid labels too: <database> says VOC
    assert boxes_of(back).equals(boxes_of(manifest))
    assert sizes_of(back) == sizes_of(manifest)
    assert read_manifest(back).images["has_image"].to_pylist() == [True] * r.splits[0][1]
    images = sorted((tmp_path / "voc" / "JPEGImages").iterdir())
    assert all(p.is_symlink() and p.resolve().is_file() for p in images)
    # a second run keeps the links
    again = export_manifests([manifest], tmp_path / "voc", ExportOptions(fmt="voc"))
    assert (again.placement.written, again.placement.kept) == (0, r.splits[0][1])


@pytest.mark.parametrize("name", ["val1300", "voc85"])
def test_hf_shards_scan_back_to_the_pixel(real: dict[str, Path], name: str, tmp_path: Path) -> None:
    """Our own Parquet, scanned in place: every image, its size and every box (``objects``: COCO's
    ``[x, y, w, h]``, the ClassLabel's names), as the manifest it was exported from holds them."""
    manifest = real[name]
    export_manifests([manifest], tmp_path / "hf", ExportOptions(fmt="hf"))
    back = tmp_path / "back"
    summary = scan(tmp_path / "hf" / "data", back, known_wnids=None)
    assert summary.rejects == 0
    assert summary.boxes == len(boxes_of(manifest)) > 0
    got, want = boxes_of(back), boxes_of(manifest)
    assert got[["image_id", "box_index", "label"]].equals(want[["image_id", "box_index", "label"]])
    np.testing.assert_array_equal(got[["x1", "y1", "x2", "y2"]].to_numpy(np.float32),
                                  want[["x1", "y1", "x2", "y2"]].to_numpy(np.float32))
    assert sizes_of(back) == sizes_of(manifest)


def test_hf_objects_that_name_no_box_are_named_rejects(tmp_path: Path) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from eic_builder.dataset.schemas import hf_schema

    buf = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buf, "JPEG")
    objects = {"bbox": [[1, 2, 10, 20], [1, 2, 3], [0, 0, 8, 8]], "category": [0, 0, 7]}
    schema = hf_schema(["n01440764"])  # bbox a list of any length: another writer's rows, a short one among them
    loose = pa.struct([pa.field("bbox", pa.list_(pa.list_(pa.float32()))), pa.field("category", pa.list_(pa.int64()))])
    schema = schema.set(schema.get_field_index("objects"), pa.field("objects", loose))
    table = pa.table({"image": [{"bytes": buf.getvalue(), "path": "a.jpg"}], "image_id": ["a"], "width": [64],
                      "height": [48], "label": ["n01440764"], "objects": [objects]}, schema=schema)
    (tmp_path / "p").mkdir()
    pq.write_table(table, tmp_path / "p" / "train-00000-of-00001.parquet")
    summary = scan(tmp_path / "p", tmp_path / "m", split="train", known_wnids=None)
    m = read_manifest(tmp_path / "m")
    assert (summary.images, summary.boxes) == (1, 1)
    assert m.boxes.select(["label", "x1", "y1", "x2", "y2"]).to_pylist() == [
        {"label": "n01440764", "x1": 1.0, "y1": 2.0, "x2": 11.0, "y2": 22.0}]
    details = sorted(m.rejects["detail"].to_pylist())
    assert summary.reject_reasons == {"malformed_box": 2}
    assert "bad bbox" in details[0] and "category 7 names no class" in details[1]
    # the same objects as a list of structs (datasets >= 4 writes List({...}) so): the same boxes
    rows = [{"bbox": b, "category": c} for b, c in zip(objects["bbox"], objects["category"])]
    listed = pa.struct([pa.field("bbox", pa.list_(pa.float32())), pa.field("category", pa.int64())])
    schema = schema.set(schema.get_field_index("objects"), pa.field("objects", pa.list_(listed)))
    pq.write_table(table.set_column(table.schema.get_field_index("objects"), pa.field("objects", pa.list_(listed)),
                                    pa.array([rows], pa.list_(listed))).cast(schema),
                   tmp_path / "p" / "train-00000-of-00001.parquet")
    assert scan(tmp_path / "p", tmp_path / "m2", split="train", known_wnids=None).boxes == 1


def test_voc_corners_by_hand(real: dict[str, Path], tmp_path: Path) -> None:
    # voc85's first box of 2007_000027 is COCO bbox [176, 206, 49, 60]: 0-based corners 176,206 - 225,266
    # (exclusive), so VOC's 1-based inclusive corners are 177,207 - 225,266
    export_manifests([real["voc85"]], tmp_path, ExportOptions(fmt="voc"))
    text = (tmp_path / "Annotations" / "2007_000027.xml").read_text()
    assert "<xmin>177</xmin><ymin>207</ymin><xmax>225</xmax><ymax>266</ymax>" in text
    assert "<database>EIC, exported by eic-build (PASCAL VOC format)</database>" in text
    width, height = sizes_of(real["voc85"])["2007_000027"]
    assert "<filename>2007_000027.jpg</filename>" in text
    assert f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" in text
    assert (tmp_path / "ImageSets" / "Main" / "voc2012_85.txt").read_text().count("\n") == 85


def test_hf_folder_loads_with_datasets(real: dict[str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "hf"
    r = export_manifests([real["val1300"], real["voc85"]], out, ExportOptions(fmt="hf", labels="name"))
    assert [p.name for p in r.files] == ["val-00000-of-00001.parquet", "voc2012_85-00000-of-00001.parquet",
                                         "README.md"]
    card = (out / "README.md").read_text()
    assert "  - split: val\n    path: \"data/val-*.parquet\"" in card
    assert "| # of images" in card and "1,300" in card and str(real["val1300"].resolve()) in card
    # the schema and its ClassLabel names are in the files themselves
    meta = json.loads(pq.read_schema(out / "data" / "val-00000-of-00001.parquet").metadata[b"huggingface"])
    names = meta["info"]["features"]["objects"]["feature"]["category"]["names"]
    assert "tench" in names and "crane (n02012849)" in names and "crane (n03126707)" in names
    assert "backpack" in names and "backpack (n02769748)" in names  # VOC's name kept, the wnid's lemma marked

    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert {k: v.num_rows for k, v in ds.items()} == {"val": 1300, "voc2012_85": 85}
    category = ds["val"].features["objects"]["category"]
    category = getattr(category, "feature", category)
    assert category.names == names
    expected = boxes_of(real["voc85"])
    sizes = sizes_of(real["voc85"])
    for row in ds["voc2012_85"].select(range(0, 85, 17)):
        assert row["image"].size == sizes[row["image_id"]] == (row["width"], row["height"])
        want = expected[expected.image_id == row["image_id"]]
        got = np.array(row["objects"]["bbox"], dtype=np.float32)
        np.testing.assert_array_equal(got[:, :2], want[["x1", "y1"]].to_numpy())
        np.testing.assert_array_equal(got[:, :2] + got[:, 2:], want[["x2", "y2"]].to_numpy())
        assert [category.names[c] for c in row["objects"]["category"]] == want["label"].tolist()
    plain = datasets.load_dataset("parquet", data_files={"val": str(out / "data" / "val-*.parquet")},
                                  cache_dir=str(tmp_path / "cache2"))
    assert plain["val"].features == ds["val"].features


def test_hf_shards_split_by_bytes(real: dict[str, Path], tmp_path: Path) -> None:
    from eic_builder.export.hf import write_split_shards
    from eic_builder.export.source import load_split

    split = load_split(real["voc85"])
    names = label_names(split.labels())
    categories = sorted({b.label for boxes in split.boxes.values() for b in boxes})
    shards = write_split_shards(split, names, categories, tmp_path, shard_bytes=1_000_000)
    n = len(shards)
    assert n > 3 and [p.name for p in shards][-1] == f"voc2012_85-{n - 1:05d}-of-{n:05d}.parquet"
    rows = [pq.read_table(p, columns=["image_id"]).num_rows for p in shards]
    assert sum(rows) == 85
    again = write_split_shards(split, names, categories, tmp_path, shard_bytes=100_000_000)  # stale shards go
    assert sorted(tmp_path.glob("*.parquet")) == again


@pytest.fixture(scope="module")
def archive_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images that live inside nested tars (the ImageNet-21K shape), scanned in place."""
    from eic_builder.synthetic import make_synthetic_archives

    d = tmp_path_factory.mktemp("archives")
    make_synthetic_archives(d / "src", n_classes=2, train_per_class=2, val_per_class=1, new_per_class=5,
                            other_per_class=2)
    scan([d / "src" / "fall11_whole.tar", d / "src" / "Annotation.tar.gz"], d / "m", known_wnids=None)
    return d / "m"


def test_materialize_writes_archive_members_once_and_resumes(archive_manifest: Path, tmp_path: Path) -> None:
    images = read_manifest(archive_manifest).images
    n = images.num_rows
    sha1 = dict(zip(images["image_id"].to_pylist(), images["sha1"].to_pylist()))
    r = export_manifests([archive_manifest], tmp_path, ExportOptions(fmt="coco", materialize=True))
    assert (r.placement.written, r.placement.kept) == (n, 0) and r.archive_references == 0
    folder = Path(r.image_roots["fall11_whole"])
    files = sorted(folder.iterdir())
    assert len(files) == n and r.placement.bytes_written == sum(p.stat().st_size for p in files)
    assert all(hashlib.sha1(p.read_bytes()).hexdigest() == sha1[p.stem] for p in files)  # the very bytes
    doc = json.loads(r.files[0].read_text())
    assert all((folder / i["file_name"]).is_file() and "eic_archive" not in i for i in doc["images"])
    # interrupted run: one file missing, one cut short, one temporary file left behind
    files[0].unlink()
    files[1].write_bytes(b"cut")
    (folder / ".x.JPEG.tmp-1").write_bytes(b"")
    again = export_manifests([archive_manifest], tmp_path, ExportOptions(fmt="coco", materialize=True))
    assert (again.placement.written, again.placement.kept) == (2, n - 2)
    assert hashlib.sha1(files[1].read_bytes()).hexdigest() == sha1[files[1].stem]


def test_archive_members_are_referenced_in_coco_and_refused_by_voc(archive_manifest: Path, tmp_path: Path) -> None:
    r = export_manifests([archive_manifest], tmp_path / "coco", ExportOptions(fmt="coco"))
    n = read_manifest(archive_manifest).images.num_rows
    assert r.archive_references == n and r.placement.written == 0
    doc = json.loads(r.files[0].read_text())
    image = doc["images"][0]
    with open(Path(doc["info"]["eic_image_root"]) / image["eic_archive"], "rb") as f:  # the bytes, by offset
        data = os.pread(f.fileno(), image["eic_size"], image["eic_offset"])
    assert data[:2] == b"\xff\xd8" and len(data) == image["eic_size"]
    with pytest.raises(OptionError, match=rf"{n} images of .* lie inside archives.*add materialize"):
        export_manifests([archive_manifest], tmp_path / "voc", ExportOptions(fmt="voc"))
    assert not (tmp_path / "voc" / "Annotations").exists()  # refused before writing


def test_disk_space_is_checked_before_the_first_copy(archive_manifest: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import eic_builder.export.files as files

    monkeypatch.setattr(files, "_free_bytes", lambda folder: 1000)
    with pytest.raises(OptionError, match=r"materialize needs 0\.\d\d GB for \d+ images but .* has 0\.00 GB free"):
        export_manifests([archive_manifest], tmp_path, ExportOptions(fmt="voc", materialize=True))
    assert not (tmp_path / "JPEGImages").exists()


def test_annotation_only_images_are_counted_not_exported(voc_85: Path, tmp_path: Path) -> None:
    scan(voc_85 / "instances.json", tmp_path / "m")  # the JSON alone: 85 images without files
    r = export_manifests([tmp_path / "m"], tmp_path / "coco", ExportOptions(fmt="coco"))
    assert r.splits == [("instances", 0, 0)] and (r.without_file, r.boxes_without_file) == (85, 686)
    assert json.loads(r.files[0].read_text())["images"] == []


def test_label_names() -> None:
    names = label_names(["n01440764", "n02012849", "n03126707", "dog", "crane"], "name")
    assert names == {"n01440764": "tench", "n02012849": "crane (n02012849)", "n03126707": "crane (n03126707)",
                     "dog": "dog", "crane": "crane"}
    assert label_names(["n01440764", "dog"]) == {"n01440764": "n01440764", "dog": "dog"}
    with pytest.raises(OptionError, match=r"labels='lemma' is not allowed; choose one of 'wnid', 'name'"):
        label_names(["dog"], "lemma")


def test_label_names_outside_the_class_lists_come_from_wordnet(wordnet_index, wordnet_cache: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIC_CACHE_DIR", str(wordnet_cache))
    assert label_names(["n02084071"], "name") == {"n02084071": "dog"}  # dog.n.01: no EIC class
    with pytest.raises(WordNetError, match=r"n09999999 is not a WordNet 3\.0 noun"):
        label_names(["n09999999"], "name")


def test_bad_requests(real: dict[str, Path], tmp_path: Path) -> None:
    m = real["voc85"]
    with pytest.raises(OptionError, match=r"fmt='yolo' is not allowed; choose one of 'coco', 'voc', 'hf'"):
        export_manifests([m], tmp_path, ExportOptions(fmt="yolo"))
    with pytest.raises(OptionError, match=r"materialize is for fmt coco and voc"):
        export_manifests([m], tmp_path, ExportOptions(fmt="hf", materialize=True))
    with pytest.raises(OptionError, match="at least one MANIFEST"):
        export_manifests([], tmp_path)
    with pytest.raises(ManifestError, match="does not exist"):
        export_manifests([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptionError, match=r"out .*file is a file"):
        export_manifests([m], tmp_path / "file")
    with pytest.raises(OptionError, match=r"are both named 'voc2012_85'"):
        export_manifests([m, m], tmp_path / "twice")
    for fmt in ("coco", "hf"):  # a moved image root, in the stage's words whichever writer reads the images
        with pytest.raises(OptionError, match=r"image root .*gone.* \(given with root\) does not exist; give root DIR"):
            export_manifests([m], tmp_path / f"moved_{fmt}", ExportOptions(fmt=fmt, root=tmp_path / "gone"))
    with pytest.raises(OptionError, match=r"split name 'my split' is not one datasets accepts"):
        check_split_names(["val", "my split"])


def test_cli(real: dict[str, Path], archive_manifest: Path, tmp_path: Path) -> None:
    def run(*args: str):
        return CliRunner().invoke(main, ["--no-progress", "export", *args], catch_exceptions=False)

    r = run(str(real["voc85"]), "--out", str(tmp_path / "c"))
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == "voc2012_85: 85 images, 686 boxes"
    assert f"wrote {tmp_path / 'c' / 'annotations' / 'instances_voc2012_85.json'}" in r.output
    r = run(str(archive_manifest), "--out", str(tmp_path / "v"), "--format", "voc")
    assert r.exit_code == 2 and "lie inside archives" in r.output and len(r.output.strip().splitlines()) == 1
    r = run(str(archive_manifest), "--out", str(tmp_path / "v"), "--format", "voc", "--materialize")
    assert r.exit_code == 0 and "images: " in r.output and " copied (" in r.output
    r = run(str(real["voc85"]), "--out", str(tmp_path / "h"), "--format", "parquet")
    assert r.exit_code == 2 and "'parquet' is not one of 'coco', 'voc', 'hf'" in r.output


def test_an_image_gone_since_the_scan_is_named_not_linked(voc_85: Path, tmp_path: Path) -> None:
    images = tmp_path / "src"
    images.mkdir()
    for path in sorted((voc_85 / "images").iterdir())[:3]:
        (images / path.name).write_bytes(path.read_bytes())
    scan(images, tmp_path / "m", split="train")
    gone = sorted(images.iterdir())[1]
    gone.unlink()
    for fmt, materialize in (("voc", False), ("voc", True), ("coco", True)):
        out = tmp_path / f"{fmt}{materialize}"
        r = CliRunner().invoke(main, ["--no-progress", "export", str(tmp_path / "m"), "--out", str(out),
                                      "--format", fmt, *(["--materialize"] if materialize else [])])
        assert r.exit_code == 2 and str(gone) in r.output and "Traceback" not in r.output, r.output
        assert not (out / "JPEGImages").exists() or not any(p.is_symlink() and not p.exists()
                                                             for p in (out / "JPEGImages").iterdir())
    with pytest.raises(InputNotFoundError, match=rf"1 image file\(s\) of the manifest are gone since the scan, "
                                                 rf"e\.g\. '{gone.stem}' \({gone}\)"):
        export_manifests([tmp_path / "m"], tmp_path / "voc_api", ExportOptions(fmt="voc"))


def test_an_out_folder_of_another_export_is_refused(real: dict[str, Path], tmp_path: Path, first_images) -> None:
    first_images(real["voc85"], tmp_path / "a", 3)
    first_images(real["voc85"], tmp_path / "b", 5)
    export_manifests([tmp_path / "a"], tmp_path / "out", ExportOptions(fmt="voc"))
    again = export_manifests([tmp_path / "a"], tmp_path / "out",
                             ExportOptions(fmt="voc"))  # the same export: resumed in place
    assert again.placement.kept == 3
    with pytest.raises(OptionError, match=r"holds the files of another export run \(it differs in manifests\); "
                                          r"choose a new out, or remove that folder first"):
        export_manifests([tmp_path / "b"], tmp_path / "out", ExportOptions(fmt="voc"))
    assert len(list((tmp_path / "out" / "Annotations").iterdir())) == 3
    export_manifests([tmp_path / "a"], tmp_path / "out2", ExportOptions(fmt="coco"))
    with pytest.raises(OptionError, match=r"holds the files of another export run \(it differs in manifests\)"):
        export_manifests([tmp_path / "b"], tmp_path / "out2", ExportOptions(fmt="coco", materialize=True))
