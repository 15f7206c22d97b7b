from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from eic_builder.dataset.manifest import read_manifest
from eic_builder.errors import InputNotFoundError, OptionError
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import SyntheticBox, ilsvrc_xml


def _jpeg(path: Path, size=(100, 80), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path, "JPEG")
    return path


def _xml(path: Path, boxes: list[tuple[str, int, int, int, int]], size=(100, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ilsvrc_xml("f", path.stem, size[0], size[1], [SyntheticBox(*b) for b in boxes]))
    return path


def _accounted(root: Path, out: Path) -> None:
    """Every file under root is an image, an image's annotation, a reject, or ignored (counted)."""
    m = read_manifest(out)
    seen = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and out not in p.parents}
    used = set(m.images["path"].drop_null().to_pylist()) | set(m.images["annotation"].drop_null().to_pylist())
    file_rejects = [r for r in m.rejects.to_pylist() if r["level"] == "file"]
    rejected = {r["path"] for r in file_rejects}
    ignored = sum(m.meta["ignored"].values())
    assert not (used & rejected), used & rejected
    assert len(seen - used - rejected) == ignored, sorted(seen - used - rejected)


def test_synthetic_train_split(synthetic_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    s = scan(synthetic_tree, out, split="train", workers=2)
    m = read_manifest(out)
    assert (s.split, s.format, s.images, s.rejects) == ("train", "ilsvrc-xml", 48, 0)
    assert s.ignored == {"other split (val)": 32}
    labels = m.images["label"].to_pylist()
    assert labels == sorted(labels) and len(set(labels)) == 4
    # one image per class has no XML: kept, with no boxes
    assert sum(n == 0 for n in m.images["n_boxes"].to_pylist()) == 4
    assert sum(m.images["n_boxes"].to_pylist()) == len(m.boxes) == s.boxes
    assert set(m.images["split"].to_pylist()) == {"train"}
    _accounted(synthetic_tree, out)


def test_several_splits_need_split_option(synthetic_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"several splits \(train, val\).*split NAME"):
        scan(synthetic_tree, tmp_path / "m")


def test_ilsvrc_box_convention_and_flags(tmp_path: Path) -> None:
    root = tmp_path / "t"
    _jpeg(root / "train/n01440764/n01440764_1.JPEG", (100, 80))
    # inclusive 10..19 is 10 px wide; 0..99 x 0..14 is twisted (100/15 > 4)
    _xml(root / "Annotations/n01440764/n01440764_1.xml",
         [("n01440764", 10, 10, 19, 19), ("n01440764", 0, 0, 99, 14), ("n01440764", 0, 0, 99, 79)])
    scan(root, tmp_path / "m", workers=1)
    b = read_manifest(tmp_path / "m").boxes.to_pylist()
    assert [(r["x1"], r["y1"], r["x2"], r["y2"]) for r in b] == [(10, 10, 20, 20), (0, 0, 100, 15), (0, 0, 100, 80)]
    assert [r["is_small"] for r in b] == [True, False, False]
    assert [r["is_twisted"] for r in b] == [False, True, False]
    assert [round(r["area_ratio"], 6) for r in b] == [round(100 / 8000, 6), round(1500 / 8000, 6), 1.0]


def test_bad_inputs_are_rejected_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "t"
    w = "n01440764"
    d = root / "train" / w
    a = root / "Annotations" / w
    _jpeg(d / f"{w}_1.JPEG")
    _xml(a / f"{w}_1.xml", [(w, 5, 5, 50, 50)])
    (d / f"{w}_2.JPEG").write_bytes(b"")  # zero-byte
    full = _jpeg(d / f"{w}_3.JPEG", (300, 200)).read_bytes()
    (d / f"{w}_3.JPEG").write_bytes(full[: len(full) // 2])  # truncated
    _xml(a / f"{w}_3.xml", [(w, 5, 5, 50, 50)])
    Image.new("RGB", (10, 10)).save(d / f"{w}_4.JPEG", "PNG")  # PNG named .JPEG
    (d / f"{w}_5.JPEG").write_text("not an image")
    _jpeg(d / f"{w}_6.JPEG", mode="L")  # grayscale: accepted
    _jpeg(d / f"{w}_7.JPEG", mode="CMYK")  # CMYK: accepted
    _jpeg(d / f"{w}_8.JPEG")
    (a / f"{w}_8.xml").write_text("<annotation><object>")  # malformed
    _jpeg(d / f"{w}_9.JPEG")
    (a / f"{w}_9.xml").write_text('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
                                  "<annotation><object><name>&b;</name></object></annotation>")
    _jpeg(d / f"{w}_10.JPEG", (100, 80))
    _xml(a / f"{w}_10.xml", [(w, 10, 10, 5, 20),  # x2 <= x1
                            (w, 0, 0, 100, 80),  # one past the edge (inclusive 100 -> 101): clipped
                            (w, 0, 0, 150, 60),  # far outside: rejected
                            ("dog", 0, 0, 10, 10),  # not a wnid
                            (w, 1, 1, 30, 30)], size=(100, 80))
    _xml(a / f"{w}_11.xml", [(w, 1, 1, 5, 5)])  # no image while images are expected
    _jpeg(root / "train" / "other" / f"{w}_1.JPEG")  # duplicate id
    (root / "README.txt").write_text("ignored by rule")
    out = tmp_path / "m"
    s = scan(root, out, workers=2)
    m = read_manifest(out)
    got = sorted((r["path"].rsplit("/", 1)[-1], r["level"], r["reason"]) for r in m.rejects.to_pylist())
    assert got == sorted([
        (f"{w}_2.JPEG", "file", "empty_file"),
        (f"{w}_3.JPEG", "file", "truncated"),
        (f"{w}_3.xml", "file", "image_rejected"),
        (f"{w}_4.JPEG", "file", "wrong_format"),
        (f"{w}_5.JPEG", "file", "not_an_image"),
        (f"{w}_8.xml", "file", "malformed_xml"),
        (f"{w}_9.xml", "file", "unsafe_xml"),
        (f"{w}_10.xml", "box", "degenerate_box"),
        (f"{w}_10.xml", "box", "box_outside_image"),
        (f"{w}_10.xml", "box", "bad_wnid"),
        (f"{w}_11.xml", "file", "image_missing"),
        (f"{w}_1.JPEG", "file", "duplicate_image_id"),
    ])
    images = {r["image_id"]: r for r in m.images.to_pylist()}
    assert sorted(images) == sorted(f"{w}_{i}" for i in (1, 6, 7, 8, 9, 10))
    assert images[f"{w}_8"]["n_boxes"] == 0 and images[f"{w}_8"]["annotation"] is None
    assert images[f"{w}_10"]["n_boxes"] == 2
    clipped = next(b for b in m.boxes.to_pylist() if b["image_id"] == f"{w}_10")
    assert (clipped["x2"], clipped["y2"]) == (100.0, 80.0)
    assert s.ignored == {"not an image or annotation (.txt)": 1}
    _accounted(root, out)


def test_annotation_only_tree_matches_full_tree(tmp_path: Path, synthetic_tree: Path) -> None:
    ann_only = tmp_path / "ann"
    shutil.copytree(synthetic_tree / "Annotations", ann_only / "Annotations")
    scan(synthetic_tree, tmp_path / "full", split="val")
    scan(ann_only, tmp_path / "ann_m", split="val")
    full, only = read_manifest(tmp_path / "full"), read_manifest(tmp_path / "ann_m")
    assert only.images["has_image"].to_pylist() == [False] * len(only.images)
    assert len(only.images) == len(full.images) == 16
    for col in ("x1", "y1", "x2", "y2", "area_ratio", "is_small", "is_twisted"):
        assert only.boxes[col].to_pylist() == full.boxes[col].to_pylist()


def test_annotation_only_without_size_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "a").mkdir(parents=True)
    (root / "a/x.xml").write_text("<annotation><object><name>n01440764</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                                  "<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    s = scan(root, tmp_path / "m")
    assert s.reject_reasons == {"no_image_size": 1} and s.images == 0


def test_voc_xml(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    _jpeg(root / "JPEGImages/2007_000027.jpg", (50, 40))
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations/2007_000027.xml").write_text(
        "<annotation><folder>VOC2012</folder><size><width>50</width><height>40</height></size>"
        "<object><name>person</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>40</ymax></bndbox>"
        "</object></annotation>")
    s = scan(root, tmp_path / "m")
    m = read_manifest(tmp_path / "m")
    assert s.format == "voc-xml"
    b = m.boxes.to_pylist()[0]
    assert (b["label"], b["wnid"], b["x1"], b["y1"], b["x2"], b["y2"]) == ("person", None, 0, 0, 50, 40)
    assert m.images["label"].to_pylist() == ["person"]


def test_loc_csv_layout(tmp_path: Path) -> None:
    root = tmp_path / "kaggle"
    _jpeg(root / "val/ILSVRC2012_val_00000001.JPEG", (60, 60))
    _jpeg(root / "val/ILSVRC2012_val_00000002.JPEG", (60, 60))
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 0 0 59 59 n01440764 10 10 19 19 \n"
        "ILSVRC2012_val_00000003,n01440764 0 0 5 5 \n")
    s = scan(root, tmp_path / "m")
    m = read_manifest(tmp_path / "m")
    assert (s.split, s.format, s.images, s.boxes) == ("val", "loc-csv", 2, 2)
    assert m.rejects.to_pylist() == [{"path": "LOC_val_solution.csv", "image_id": "ILSVRC2012_val_00000003",
                                      "level": "file", "reason": "image_missing",
                                      "detail": "annotation without an image file in the tree"}]
    assert dict(zip(m.images["image_id"].to_pylist(), m.images["n_boxes"].to_pylist())) == {
        "ILSVRC2012_val_00000001": 2, "ILSVRC2012_val_00000002": 0}


def test_coco_layout(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    _jpeg(root / "images/a.jpg", (40, 30))
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
           "categories": [{"id": 1, "name": "cat"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 30]},
                           {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, "x", 1]}]}
    (root / "instances.json").write_text(json.dumps(doc))
    s = scan(root, tmp_path / "m")
    assert (s.format, s.images, s.boxes, s.reject_reasons) == ("coco", 1, 1, {"malformed_box": 1})


def test_resume_skips_finished_units(synthetic_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import eic_builder.scan.scanner as scanner

    out = tmp_path / "m"
    real = scanner.scan_unit
    calls = []

    def flaky(part_dir, items, cfg):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user presses Ctrl-C after two units
        calls.append(part_dir)
        return real(part_dir, items, cfg)

    monkeypatch.setattr(scanner, "UNIT_SIZE", 12)  # one unit per class folder
    monkeypatch.setattr(scanner, "scan_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        scan(synthetic_tree, out, split="train", workers=1)
    monkeypatch.setattr(scanner, "scan_unit", real)
    s = scan(synthetic_tree, out, split="train", workers=1)
    assert (s.units_resumed, s.units_total, s.images) == (2, 4, 48)
    assert not (out / ".scan-parts").exists()
    fresh = tmp_path / "fresh"
    scan(synthetic_tree, fresh, split="train", workers=1)
    assert read_manifest(out).boxes.equals(read_manifest(fresh).boxes)


def test_missing_or_empty_root(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        scan(tmp_path / "nope", tmp_path / "m")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/notes.txt").write_text("x")
    with pytest.raises(InputNotFoundError, match="holds no image"):
        scan(tmp_path / "empty", tmp_path / "m")


def test_real_ilsvrc_val_1300(ilsvrc_val_1300: Path, tmp_path: Path) -> None:
    s = scan(ilsvrc_val_1300, tmp_path / "m")
    m = read_manifest(tmp_path / "m")
    # Golden figures counted independently from LOC_val_solution.csv with the csv module:
    # 1,943 boxes on 1,300 images of 725 classes; 112 boxes under 32x32, 65 with aspect > 4 or < 1/4.
    assert (s.format, s.split, s.images, s.boxes, s.rejects) == ("loc-csv", "val", 1300, 1943, 0)
    assert len(set(m.images["label"].to_pylist())) == 725
    assert max(m.images["n_boxes"].to_pylist()) == 19
    assert sum(m.boxes["is_small"].to_pylist()) == 112
    assert sum(m.boxes["is_twisted"].to_pylist()) == 65
    assert set(m.images["width"].to_pylist()) == {227}
    assert max(m.boxes["x2"].to_pylist()) == 227.0
    _accounted(ilsvrc_val_1300, tmp_path / "m")


def test_real_voc_85(voc_85: Path, tmp_path: Path) -> None:
    s = scan(voc_85, tmp_path / "m")
    m = read_manifest(tmp_path / "m")
    # Counted from instances.json: 686 boxes in 30 categories; 29 small, 17 twisted.
    assert (s.format, s.images, s.boxes, s.rejects) == ("coco", 85, 686, 0)
    assert len(set(m.boxes["label"].to_pylist())) == 30
    assert sum(m.boxes["is_small"].to_pylist()) == 29
    assert sum(m.boxes["is_twisted"].to_pylist()) == 17


def test_wordnet_check_rejects_non_nouns(tmp_path: Path, wordnet_index) -> None:
    root = tmp_path / "t"
    _jpeg(root / "train/n01440764/n01440764_1.JPEG")
    _xml(root / "ann/n01440764_1.xml", [("n01440764", 1, 1, 50, 50), ("n99999999", 1, 1, 50, 50)])
    s = scan(root, tmp_path / "m", known_wnids=wordnet_index.noun_wnids())
    assert (s.boxes, s.reject_reasons) == (1, {"not_a_wordnet_noun": 1})


def test_wordnet_vocabulary_loaded_only_for_wnid_formats(tmp_path: Path, voc_85: Path) -> None:
    calls = []

    def vocabulary() -> frozenset[str]:
        calls.append(1)
        return frozenset({"n01440764"})

    scan(voc_85, tmp_path / "voc", known_wnids=vocabulary)
    assert calls == []  # COCO labels are names: WordNet is never asked
    root = tmp_path / "t"
    _jpeg(root / "train/n01440764/n01440764_1.JPEG")
    _xml(root / "ann/n01440764_1.xml", [("n01440764", 1, 1, 50, 50), ("n01443537", 1, 1, 50, 50)])
    s = scan(root, tmp_path / "m", known_wnids=vocabulary)
    assert calls == [1] and s.reject_reasons == {"not_a_wordnet_noun": 1}


def test_every_folder_and_odd_file_is_accounted_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    request: pytest.FixtureRequest) -> None:
    """Symlinked folders are scanned (a loop once), an unreadable folder is a reject, FIFOs and devices are
    counted and never opened (no hang), the --out folder inside a source is counted, any depth works."""
    import os

    root = tmp_path / "tree"
    wnid = "n01440764"
    real = tmp_path / "elsewhere" / wnid
    real.mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(real / f"{wnid}_1.JPEG")
    (root / "train").mkdir(parents=True)
    (root / "train" / wnid).symlink_to(real, target_is_directory=True)
    (root / "train" / "loop").symlink_to(root, target_is_directory=True)
    os.mkfifo(root / "train" / "pipe.JPEG")
    (root / "train" / "zero.xml").symlink_to("/dev/zero")
    (root / "train" / "broken.JPEG").symlink_to(tmp_path / "nowhere.JPEG")
    (root / "locked").mkdir()
    Image.new("RGB", (40, 30)).save(root / "locked" / "n01443537_1.JPEG")
    def remove_deep() -> None:  # shutil.rmtree (and so pytest's clean-up of old tmp dirs) would recurse too deep
        level = str(root / "deep")
        while os.path.isdir(os.path.join(level, "d")):
            level = os.path.join(level, "d")
        while level != str(root):
            for name in os.listdir(level):
                if name != "d":
                    os.remove(os.path.join(level, name))
            os.rmdir(level)
            level = os.path.dirname(level)

    request.addfinalizer(remove_deep)
    deep = str(root / "deep")
    os.mkdir(deep)
    for _ in range(1200):  # Path.mkdir(parents=True) itself would recurse too deep
        deep = os.path.join(deep, "d")
        os.mkdir(deep)
    Image.new("RGB", (40, 30)).save(os.path.join(deep, "n01443537_2.JPEG"))
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    (root / "out").mkdir()  # an earlier scan's output, inside the tree
    s = scan(root, root / "out", workers=1)
    m = read_manifest(root / "out")
    assert sorted(m.images["image_id"].to_pylist()) == [f"{wnid}_1", "n01443537_2"]
    assert m.images.to_pylist()[0]["label"] in (wnid, None)
    rejects = m.rejects.to_pylist()
    assert [(r["path"], r["reason"]) for r in rejects] == [("locked", "unreadable")]
    assert s.ignored["not a regular file (FIFO, socket, device or broken link)"] == 3
    assert s.ignored["symlinked folder already scanned (a loop or a second link)"] == 1
    assert not any("--out" in rule for rule in s.ignored)  # the empty output folder holds nothing to count


def test_resume_redoes_units_whose_files_changed(synthetic_tree: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished unit is reused only while its files are unchanged: an XML edited between the
    interruption and the resume gives its new boxes, not the old ones."""
    import eic_builder.scan.scanner as scanner

    tree = tmp_path / "tree"
    shutil.copytree(synthetic_tree, tree)
    out = tmp_path / "m"
    real = scanner.scan_unit
    calls = []

    def flaky(part_dir, items, cfg):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(items[0].image_id)
        return real(part_dir, items, cfg)

    monkeypatch.setattr(scanner, "UNIT_SIZE", 12)
    monkeypatch.setattr(scanner, "scan_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        scan(tree, out, split="train", workers=1)
    wnid = calls[0].split("_")[0]  # a class whose unit finished
    xml = sorted((tree / "Annotations" / "train" / wnid).glob("*.xml"))[0]
    text = xml.read_text()
    xml.write_text(text.replace("<xmin>", "<xmin>1", 1))  # e.g. xmin 5 -> 15: other boxes
    monkeypatch.setattr(scanner, "scan_unit", real)
    s = scan(tree, out, split="train", workers=1)
    assert (s.units_resumed, s.units_total) == (1, 4)
    fresh = tmp_path / "fresh"
    scan(tree, fresh, split="train", workers=1)
    assert read_manifest(out).boxes.equals(read_manifest(fresh).boxes)


def test_names_that_are_not_utf8_are_rejects(tmp_path: Path) -> None:
    import os

    root = tmp_path / "tree"
    root.mkdir()
    Image.new("RGB", (20, 20)).save(root / "ok_1.JPEG")
    raw = os.path.join(os.fsencode(root), b"bad\xff_2.JPEG")
    with open(raw, "wb") as f:
        f.write((root / "ok_1.JPEG").read_bytes())
    s = scan(root, tmp_path / "m", workers=1)
    m = read_manifest(tmp_path / "m")
    assert s.images == 1 and [(r["path"], r["reason"]) for r in m.rejects.to_pylist()] == [
        ("bad\\xff_2.JPEG", "bad_file_name")]


def test_stated_size_disagreeing_with_the_header_is_recorded(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "train" / "n01440764").mkdir(parents=True)
    (root / "Annotations" / "n01440764").mkdir(parents=True)
    for i, stated in enumerate(((40, 30), (80, 60))):
        Image.new("RGB", (40, 30)).save(root / "train" / "n01440764" / f"n01440764_{i}.JPEG")
        (root / "Annotations" / "n01440764" / f"n01440764_{i}.xml").write_text(
            ilsvrc_xml("n01440764", f"n01440764_{i}", *stated, [SyntheticBox("n01440764", 1, 1, 20, 20)]))
    s = scan(root, tmp_path / "m", workers=1, split="train")
    rows = read_manifest(tmp_path / "m").images.to_pylist()
    assert [(r["width"], r["height"], r["ann_width"], r["ann_height"]) for r in rows] == [(40, 30, 40, 30),
                                                                                        (40, 30, 80, 60)]
    assert s.size_disagreements == 1
    boxes = read_manifest(tmp_path / "m").boxes.to_pylist()  # the second measured on an 80x60 original: halved
    assert [(b["image_id"], b["x1"], b["y1"], b["x2"], b["y2"]) for b in boxes] == [
        ("n01440764_0", 1, 1, 21, 21), ("n01440764_1", 0.5, 0.5, 10.5, 10.5)]


def test_boxes_of_a_resized_copy_are_scaled_and_of_another_image_refused(ilsvrc_val_1300: Path,
                                                                          tmp_path: Path) -> None:
    """Real photos (227x227) under XMLs stating the size of their originals: the boxes move to the stored
    pixels when the stored image is the stated one resized (within a pixel per side), and are refused
    otherwise; the small flag stays in the original's pixels."""
    root = tmp_path / "tree"
    photos = sorted((ilsvrc_val_1300 / "val").iterdir())[:4]
    stated = [(454, 454), (455, 453), (500, 375), (227, 227)]  # 2x; 2x within a pixel; another aspect; the same
    (root / "val").mkdir(parents=True)
    for photo, (w, h) in zip(photos, stated):
        shutil.copy(photo, root / "val" / photo.name)
        boxes = [SyntheticBox("n01440764", 40, 40, 79, 79), SyntheticBox("n01440764", 100, 100, 119, 119)]
        (root / "val" / f"{photo.stem}.xml").write_text(ilsvrc_xml("val", photo.stem, w, h, boxes))
    s = scan(root, tmp_path / "m", workers=1, split="val", known_wnids=None)
    m = read_manifest(tmp_path / "m")
    got = {(b["image_id"], b["box_index"]): b for b in m.boxes.to_pylist()}
    first = got[(photos[0].stem, 0)]
    assert (first["x1"], first["y1"], first["x2"], first["y2"]) == (20, 20, 40, 40)
    assert not first["is_small"] and got[(photos[0].stem, 1)]["is_small"]  # 40 and 20 px in the original
    second = got[(photos[1].stem, 0)]
    assert second["x1"] == pytest.approx(40 * 227 / 455) and second["y2"] == pytest.approx(80 * 227 / 453)
    assert (photos[2].stem, 0) not in got and s.reject_reasons == {"size_mismatch": 2}
    fourth = got[(photos[3].stem, 1)]
    assert (fourth["x1"], fourth["x2"], fourth["is_small"]) == (100, 120, True)
    from eic_builder.stats import compute_split_stats

    assert compute_split_stats("m", tmp_path / "m").small_pct == pytest.approx(100 * 3 / 6)  # original pixels


@pytest.mark.parametrize(("database", "names", "flavour"), [
    ("The VOC2012 Database", ["n01440764", "n01440764"], "voc-xml"),  # VOC convention, wnid labels
    ("ILSVRC_2012", ["dog", "cat"], "ilsvrc-xml"),  # ImageNet convention, whatever the names
    (None, ["n01440764", "dog"], "voc-xml"),  # no database: most names are not wnids
    (None, ["n01440764", "n01443537", "dog"], "ilsvrc-xml"),
])
def test_xml_convention_follows_the_database_then_the_labels(tmp_path: Path, database: str | None, names: list[str],
                                                              flavour: str) -> None:
    from eic_builder.scan.layout import detect_format, index_tree

    source = f"<source><database>{database}</database></source>" if database else ""
    for i, name in enumerate(names):
        box = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
        (tmp_path / f"im{i}.xml").write_text(f"<annotation>{source}<object><name>{name}</name>{box}</object>"
                                             "</annotation>")
    assert detect_format(index_tree(tmp_path)) == flavour


# --- hostile input of the downloads of today (issue 20) ---------------------------------------------------


def test_a_stray_json_beside_the_data_is_ignored_not_taken_for_coco(ilsvrc_val_1300: Path, tmp_path: Path) -> None:
    tree = tmp_path / "val1300"
    shutil.copytree(ilsvrc_val_1300, tree)
    (tree / "imagenet_class_index.json").write_text(json.dumps({"0": ["n01440764", "tench"]}))
    (tree / "empty.json").write_text("")  # does not parse: a named reject, and the tree stays LOC CSV
    s = scan(tree, tmp_path / "m")
    assert (s.format, s.images, s.boxes) == ("loc-csv", 1300, 1943)
    assert s.ignored == {"JSON that is not COCO instances (no images, annotations and categories)": 1}
    assert s.reject_reasons == {"malformed_json": 1}


@pytest.mark.parametrize("damage", ["cut before categories", "cut inside images", "nested 100,000 deep",
                                    "not UTF-8"])
def test_a_json_that_does_not_parse_is_a_malformed_json_reject(voc_85: Path, tmp_path: Path,
                                                               damage: str) -> None:
    tree = tmp_path / "voc"
    shutil.copytree(voc_85 / "images", tree / "images")
    whole = (voc_85 / "instances.json").read_bytes()
    data = {"cut before categories": whole[: whole.index(b'"categories"')],
            "cut inside images": whole[: len(whole) // 10],
            "nested 100,000 deep": b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "not UTF-8": whole.replace(b'"images"', b'"im\xff\xfeges"', 1) + b'"images"'}[damage]
    (tree / "instances.json").write_bytes(data)
    s = scan(tree, tmp_path / "m")
    assert s.reject_reasons == {"malformed_json": 1} and s.boxes == 0 and s.images == 85, damage
    rejects = read_manifest(tmp_path / "m").rejects.to_pylist()
    (row,) = [r for r in rejects if r["reason"] == "malformed_json"]
    assert row["path"] == "instances.json" and "not valid JSON" in row["detail"]


def test_symlinks_to_nowhere_and_to_a_device_are_counted(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    _jpeg(tree / "n01440764" / "n01440764_1.JPEG")
    (tree / "n01440764" / "n01440764_2.JPEG").symlink_to(tmp_path / "nowhere.JPEG")
    (tree / "n01440764" / "n01440764_3.JPEG").symlink_to("/dev/zero")
    (tree / "n01440764" / "gone").symlink_to(tmp_path / "no_folder")
    s = scan(tree, tmp_path / "m", split="train")
    assert s.files_seen == 4 and s.images == 1
    assert s.ignored == {"not a regular file (FIFO, socket, device or broken link)": 3}
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        tar.add(tree, arcname="t")
    s = scan(tmp_path / "t.tar", tmp_path / "mt", split="train")
    assert s.images == 1 and s.ignored == {"not a regular file in an archive (link, device)": 3}


def test_out_inside_a_source_keeps_the_images_there(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    for k in range(3):
        _jpeg(tree / "train" / "n01440764" / f"n01440764_{k}.JPEG")
    out = tree / "train" / "n01440764"  # a class folder given as --out
    for run in (1, 2):  # the second run sees the manifest the first wrote: left out, the images kept
        s = scan(tree, out, split="train")
        assert s.images == 3, run
    assert s.ignored == {"the manifest this scan writes (--out inside a source)": 3}


def test_loc_csv_with_quoted_fields(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    _jpeg(tree / "val" / "ILSVRC2012_val_00000001.JPEG")
    _jpeg(tree / "val" / "ILSVRC2012_val_00000002.JPEG")
    (tree / "LOC_val_solution.csv").write_text('"ImageId","PredictionString"\n'
                                               '"ILSVRC2012_val_00000001","n01440764 1 1 50 50"\n'
                                               'ILSVRC2012_val_00000002,n01440764 2 2 40 40 n01443537 3 3 9 9\n')
    s = scan(tree, tmp_path / "m")
    boxes = read_manifest(tmp_path / "m").boxes.to_pydict()
    assert (s.boxes, s.rejects) == (3, 0)
    assert list(zip(boxes["image_id"], boxes["x2"])) == [("ILSVRC2012_val_00000001", 51.0),
                                                         ("ILSVRC2012_val_00000002", 41.0),
                                                         ("ILSVRC2012_val_00000002", 10.0)]


@pytest.mark.parametrize("fmt", ["xml", "coco"])
def test_a_size_beyond_int32_is_one_reject_row(tmp_path: Path, fmt: str) -> None:
    tree = tmp_path / "t"
    for k in (1, 2):
        _jpeg(tree / "train" / "n01440764" / f"n01440764_{k}.JPEG")
    if fmt == "xml":
        _xml(tree / "Annotations" / "n01440764" / "n01440764_2.xml", [("n01440764", 1, 1, 50, 50)])
        bad = _xml(tree / "Annotations" / "n01440764" / "n01440764_1.xml", [("n01440764", 1, 1, 50, 50)])
        bad.write_text(bad.read_text().replace("<width>100</width>", "<width>3000000000</width>"))
    else:
        images = [{"id": k, "file_name": f"n01440764_{k}.JPEG", "width": 1e12 if k == 1 else 100, "height": 80}
                  for k in (1, 2)]
        annotations = [{"id": k, "image_id": k, "category_id": 1, "bbox": [1, 1, 40, 40]} for k in (1, 2)]
        (tree / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                          "categories": [{"id": 1, "name": "fish"}]}))
    s = scan(tree, tmp_path / "m", split="train")
    m = read_manifest(tmp_path / "m")
    assert (s.images, s.boxes, s.reject_reasons) == (2, 2, {"malformed_size": 1})
    detail = m.rejects["detail"][0].as_py()
    assert ("3000000000x80" if fmt == "xml" else "1000000000000x80") in detail and "2,147,483,647" in detail
    assert m.images["ann_width"].to_pylist() == [None, 100]


def test_verify_images_counts_a_decoder_warning_as_corruption(ilsvrc_val_1300: Path, tmp_path: Path) -> None:
    import numpy as np

    tree = tmp_path / "t" / "val"
    tree.mkdir(parents=True)
    names = sorted(p.name for p in (ilsvrc_val_1300 / "val").iterdir())[:2]
    for name in names:
        shutil.copy(ilsvrc_val_1300 / "val" / name, tree / name)
    data = (tree / names[0]).read_bytes()
    sos = data.find(b"\xff\xda")
    start, end = sos + 2 + int.from_bytes(data[sos + 2: sos + 4], "big"), data.rfind(b"\xff\xd9")
    garbage = np.random.default_rng(0).integers(0, 255, end - start, dtype=np.uint8).tobytes()  # no 0xFF marker
    (tree / names[0]).write_bytes(data[:start] + garbage + data[end:])
    assert scan(tree.parent, tmp_path / "headers").images == 2  # its headers are intact: only decoding tells
    s = scan(tree.parent, tmp_path / "m", verify_images=True)
    rejects = read_manifest(tmp_path / "m").rejects.to_pydict()
    assert s.images == 1 and s.reject_reasons == {"corrupt_image": 1}
    assert rejects["path"] == [f"val/{names[0]}"] and "Corrupt JPEG data" in rejects["detail"][0]
