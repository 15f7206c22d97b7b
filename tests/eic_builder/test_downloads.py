"""The downloads users get today, shaped exactly as image-net.org ships them (eic_builder.synthetic's
make_synthetic_downloads): the four official ILSVRC-2012 files side by side, ImageNet-21K as
winter21_whole.tar.gz with the bounding-box archive, scanned, assembled and embedded without extracting
anything."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from eic_builder.cli import main
from eic_builder.dataset.manifest import read_manifest
from eic_builder.errors import InputNotFoundError, OptionError
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import EIC_NEW_WNIDS, NOT_EIC_WNID, _tar_bytes, make_synthetic_downloads


def run(*args: str):
    return CliRunner().invoke(main, ["--no-progress", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory):
    return make_synthetic_downloads(tmp_path_factory.mktemp("downloads"), n_classes=3, train_per_class=6,
                                    val_per_class=3, new_per_class=8)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "eic-cache-downloads"))


def test_the_four_official_files_give_each_split_its_own_images(downloads, tmp_path: Path) -> None:
    folder = downloads.img_train.parent
    assert sorted(p.name for p in folder.iterdir()) == ["ILSVRC2012_bbox_train_v2.tar.gz",
                                                         "ILSVRC2012_bbox_val_v3.tgz", "ILSVRC2012_img_train.tar",
                                                         "ILSVRC2012_img_val.tar"]
    for split, n in (("train", downloads.train_images), ("val", downloads.val_images)):
        r = run("scan", str(folder), "--split", split, "--out", str(tmp_path / split), "--no-wordnet-check")
        assert r.exit_code == 0, r.output
        images = read_manifest(tmp_path / split).images
        assert images.num_rows == n and set(images["split"].to_pylist()) == {split}
        ids = images["image_id"].to_pylist()
        assert all(i.startswith("ILSVRC2012_val_") == (split == "val") for i in ids)
        assert all(a.startswith(f"ILSVRC2012_img_{split}.tar") for a in images["archive"].to_pylist())
        assert read_manifest(tmp_path / split).boxes.num_rows > 0  # each split's boxes from its own bbox file
    r = run("scan", str(folder), "--out", str(tmp_path / "both"), "--no-wordnet-check")
    assert r.exit_code == 2 and "holds several splits (train, val)" in r.output and "--split NAME" in r.output
    r = run("scan", str(folder), "--split", "test", "--out", str(tmp_path / "test"), "--no-wordnet-check")
    assert r.exit_code == 2 and "holds no file of split 'test'" in r.output and "train, val" in r.output
    assert "--split one of those" in r.output


def test_a_source_whose_split_cannot_be_told_is_named_not_merged(downloads, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(downloads.img_train.parent, folder)
    shutil.copy(downloads.img_val, folder / "images.tar")  # the val images under a name that tells nothing
    with pytest.raises(OptionError, match=r"1 image file\(s\) or archive\(s\) name no split \(images\.tar\) "
                                          r"beside others that name train, val"):
        scan(folder, tmp_path / "m", split="train")
    assert not (tmp_path / "m" / "images.parquet").exists()


def test_a_tar_of_a_whole_tree_is_split_by_its_folders(synthetic_tree: Path, tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "tree.tar", "w") as tar:
        tar.add(synthetic_tree, arcname="ILSVRC")
    for split in ("train", "val"):
        s = scan(tmp_path / "tree.tar", tmp_path / split, split=split)
        assert set(read_manifest(tmp_path / split).images["split"].to_pylist()) == {split}
        assert s.ignored[f"other split ({'val' if split == 'train' else 'train'})"] > 0
    with pytest.raises(OptionError, match=r"holds several splits \(train, val\) inside its archives"):
        scan(tmp_path / "tree.tar", tmp_path / "both")


def test_winter21_is_read_in_place_through_its_index(downloads, tmp_path: Path) -> None:
    from eic_builder.dataset.manifest import open_manifest
    from eic_builder.gzip_index import index_path

    out = tmp_path / "21k"
    r = run("scan", str(downloads.winter21), str(downloads.annotations), "--out", str(out), "--no-wordnet-check")
    assert r.exit_code == 0, r.output
    m = open_manifest(out)
    assert len(m) == downloads.winter21_images
    assert set(m.images["archive"].to_pylist()) == {"winter21_whole.tar.gz"}
    assert m.meta["gzip_indexes"]["winter21_whole.tar.gz"]["index"] == str(index_path(downloads.winter21))
    with tarfile.open(downloads.winter21) as outer:  # every member, read by offset, is the tar's own bytes
        for info in outer.getmembers():
            with tarfile.open(fileobj=outer.extractfile(info)) as inner:
                for member in inner.getmembers():
                    assert m.read_bytes(member.name.rsplit(".", 1)[0]) == inner.extractfile(member).read()
    m.close()
    r = run("features", str(out), "--out", str(tmp_path / "f"), "--weights", "random", "--resize", "40",
            "--crop", "32", "--device", "cpu", "--workers", "1")
    assert r.exit_code == 0 and f"{downloads.winter21_images} images -> 1 shards" in r.output, r.output


def test_assemble_from_todays_downloads_says_which_classes_they_lack(downloads, tmp_path: Path) -> None:
    folder = downloads.img_train.parent
    for split in ("train", "val"):
        scan(folder, tmp_path / split, split=split)
    scan([downloads.winter21, downloads.annotations], tmp_path / "21k", classes=frozenset(EIC_NEW_WNIDS))
    r = run("assemble", str(tmp_path / "train"), str(tmp_path / "val"), str(tmp_path / "21k"), "--out",
            str(tmp_path / "eic"), "--val-per-class", "2", "--min-train-per-class", "1")
    assert r.exit_code == 0, r.output
    absent = 2686 - 3 - len(EIC_NEW_WNIDS)
    line = f"{absent:,} of the 2,686 listed classes have no image in the inputs"
    assert line in r.output and line in (tmp_path / "eic" / "report.md").read_text()
    assert read_manifest(tmp_path / "eic" / "train").images.num_rows > 0


def test_scan_classes_skips_other_synsets_unread(downloads, tmp_path: Path) -> None:
    from eic_builder.scan.archives import SKIPPED_SYNSET

    wanted = tmp_path / "wanted.txt"
    wanted.write_text("# two synsets\n" + "\n".join(EIC_NEW_WNIDS[:2]) + "\n")
    r = run("scan", str(downloads.winter21), str(downloads.annotations), "--out", str(tmp_path / "m"),
            "--classes", str(wanted), "--no-wordnet-check")
    assert r.exit_code == 0, r.output
    assert set(read_manifest(tmp_path / "m").images["label"].to_pylist()) == set(EIC_NEW_WNIDS[:2])
    assert SKIPPED_SYNSET in r.output
    with tarfile.open(downloads.winter21) as tf:
        synsets = len(tf.getmembers())
    with tarfile.open(downloads.annotations) as tf:
        annotated = len(tf.getmembers())
    s = scan([downloads.winter21, downloads.annotations], tmp_path / "m2", classes=frozenset(EIC_NEW_WNIDS[:2]))
    assert s.ignored[SKIPPED_SYNSET] == synsets - 2 + annotated - 2  # each skipped tar counted once, none read
    full = scan([downloads.winter21], tmp_path / "m3")
    assert s.images < full.images and NOT_EIC_WNID not in set(read_manifest(tmp_path / "m2").images["label"])


def test_a_damaged_or_truncated_gzip_is_a_reject_and_a_changed_one_is_refused(downloads, tmp_path: Path) -> None:
    data = bytearray(downloads.winter21.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "winter21_whole.tar.gz").write_bytes(bytes(data))
    s = scan(tmp_path / "bad", tmp_path / "mb")
    assert s.reject_reasons == {"corrupt_archive": 1} and s.images == 0  # no member of damaged bytes is trusted
    # an archive replaced after the scan: its index is not found (another size or mtime), never a wrong byte
    (tmp_path / "ok").mkdir()
    shutil.copy(downloads.winter21, tmp_path / "ok" / "winter21_whole.tar.gz")
    scan(tmp_path / "ok", tmp_path / "mo")
    with tarfile.open(downloads.winter21) as tf:
        members = [(i.name, tf.extractfile(i).read()) for i in tf.getmembers()][::-1]
    (tmp_path / "ok" / "winter21_whole.tar.gz").write_bytes(_tar_bytes(members, gzip_level=6))
    from eic_builder.dataset.manifest import open_manifest

    with open_manifest(tmp_path / "mo") as m, pytest.raises(InputNotFoundError, match=r"has no seek index .* "
                                                                                      r"scan it again"):
        m.read_bytes(m.image_ids[0])


@pytest.mark.parametrize("percent", [40, 75, 90])
def test_a_gzip_cut_short_keeps_no_image_it_cannot_read(downloads, tmp_path: Path, percent: int) -> None:
    """A download stopped part way: every image kept reads in place, the others are named rejects; scanning
    again ends the same way."""
    from eic_builder.dataset.manifest import open_manifest

    data = downloads.winter21.read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "winter21_whole.tar.gz").write_bytes(data[: len(data) * percent // 100])
    for attempt in ("first", "again"):
        s = scan(tmp_path / "cut", tmp_path / "m")
        assert set(s.reject_reasons) == {"corrupt_archive"} and s.images < downloads.winter21_images, attempt
        with open_manifest(tmp_path / "m") as m:
            assert all(m.read_bytes(i) for i in m.image_ids)  # kept means readable
            lost = [d for p, d in zip(m.rejects["path"].to_pylist(), m.rejects["detail"].to_pylist())
                    if p != "winter21_whole.tar.gz"]
        assert s.images + len(lost) > 0 and all("no seek index" in d for d in lost)


def _scanned_copy(downloads, tmp_path: Path, name: str) -> Path:
    (tmp_path / name).mkdir()
    shutil.copy(downloads.winter21, tmp_path / name / "winter21_whole.tar.gz")
    assert scan(tmp_path / name, tmp_path / f"m{name}").images == downloads.winter21_images
    return tmp_path / name / "winter21_whole.tar.gz"


def test_an_index_of_another_archive_is_one_error_naming_it(downloads, tmp_path: Path) -> None:
    from eic_builder.dataset.manifest import open_manifest
    from eic_builder.errors import ImageDataError
    from eic_builder.gzip_index import index_path

    archive = _scanned_copy(downloads, tmp_path, "a")
    (tmp_path / "b").mkdir()
    shutil.copy(downloads.annotations, tmp_path / "b" / "Annotation.tar.gz")
    scan(tmp_path / "b", tmp_path / "mb")
    shutil.copy(index_path(tmp_path / "b" / "Annotation.tar.gz"), index_path(archive))
    with open_manifest(tmp_path / "ma") as m, pytest.raises(ImageDataError, match=r"winter21_whole\.tar\.gz cannot "
                                                                                  r"be read through its seek index"):
        m.read_image(m.image_ids[-1])
    r = run("features", str(tmp_path / "ma"), "--out", str(tmp_path / "f"), "--weights", "random", "--crop", "32",
            "--resize", "36")
    assert r.exit_code == 2 and r.output.count("\n") <= 2 and "delete the index and scan the archive again" in r.output


def test_an_archive_changed_with_its_size_and_mtime_kept_is_one_error(downloads, tmp_path: Path) -> None:
    import os

    archive = _scanned_copy(downloads, tmp_path, "a")
    st = archive.stat()
    data = bytearray(archive.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 4096):
        data[i] ^= 0x55
    archive.write_bytes(bytes(data))
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = run("export", str(tmp_path / "ma"), "--out", str(tmp_path / "x"), "--materialize")
    assert r.exit_code == 2 and "Traceback" not in r.output and "winter21_whole.tar.gz" in r.output, r.output
    assert "scan" in r.output.splitlines()[-1]


def test_an_index_folder_that_cannot_be_written_is_one_error_before_any_work(downloads, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a_file").write_text("")  # root may write anywhere: a file where the folder should be
    monkeypatch.setenv("EIC_GZIP_INDEX_DIR", str(tmp_path / "a_file"))
    r = run("scan", str(downloads.winter21), "--out", str(tmp_path / "m"))
    assert r.exit_code == 2 and "EIC_GZIP_INDEX_DIR" in r.output and str(tmp_path / "a_file") in r.output
    assert not (tmp_path / "m" / "images.parquet").exists()


def test_an_open_indexed_reader_does_not_abort_the_interpreter(downloads, tmp_path: Path) -> None:
    scan([downloads.winter21], tmp_path / "m")
    code = (f"import eic_builder; m = eic_builder.open_manifest({str(tmp_path / 'm')!r}); "
            "m.read_bytes(m.image_ids[0]); print('read')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "read", done.stderr


def test_gzip_stream_offsets_match_gzip(downloads, tmp_path: Path) -> None:
    """Cross-check against the standard library: the bytes at a member's offset in gzip's own stream."""
    from eic_builder.gzip_index import IndexedGzip

    scan([downloads.winter21], tmp_path / "m")
    raw = gzip.decompress(downloads.winter21.read_bytes())
    images = read_manifest(tmp_path / "m").images.to_pydict()
    reader = IndexedGzip()
    try:
        for offset, size in list(zip(images["offset"], images["size"]))[::7]:
            assert reader.read(str(downloads.winter21), offset, size) == raw[offset: offset + size]
    finally:
        reader.close()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_a_tar_gz_stream_of_any_header_format_scans_as_its_plain_tar(downloads, tmp_path: Path, fmt) -> None:
    """The .tar.gz stream parser (GNU long names, pax paths) against the plain tar's offsets and bytes."""
    long_dir = "winter21_whole/" + "a_long_folder_name_" * 6  # > 100 characters: a long-name header
    members = []
    with tarfile.open(downloads.winter21) as tf:
        for info in tf.getmembers():
            members.append((f"{long_dir}/{info.name.rsplit('/', 1)[-1]}", tf.extractfile(info).read()))
    raw = _tar_bytes(members, tar_format=fmt)
    (tmp_path / "plain").mkdir()
    (tmp_path / "gz").mkdir()
    (tmp_path / "plain" / "w.tar").write_bytes(raw)
    (tmp_path / "gz" / "w.tar.gz").write_bytes(gzip.compress(raw, 6))
    plain, gz = scan(tmp_path / "plain", tmp_path / "mp"), scan(tmp_path / "gz", tmp_path / "mg")
    assert plain.images == gz.images == downloads.winter21_images and gz.rejects == 0
    a, b = read_manifest(tmp_path / "mp").images, read_manifest(tmp_path / "mg").images
    assert a["offset"].equals(b["offset"]) and a["sha1"].equals(b["sha1"])  # the same bytes at the same offsets
    from eic_builder.dataset.manifest import open_manifest

    with open_manifest(tmp_path / "mg") as m:
        assert all(m.read_bytes(i) for i in m.image_ids[::9])
