"""Scanning tars and .tar.gz in place: the download shapes of ImageNet-21K, bad archives, reading by offset."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import tarfile
from dataclasses import asdict
from pathlib import Path

import pyarrow.compute as pc
import pytest

import eic_builder.scan.archives as archives
from eic_builder.dataset.manifest import read_manifest, resolve_image_root
from eic_builder.errors import InputNotFoundError
from eic_builder.image_source import ImageReader, ImageRef, image_refs
from eic_builder.scan.scanner import scan
from eic_builder.stats import compute_split_stats
from eic_builder.synthetic import EIC_NEW_WNIDS, ilsvrc_xml, make_synthetic_archives
from eic_builder.synthetic import _tar_bytes as tar_bytes


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic shapes of fall11_whole.tar + Annotation.tar.gz (and their ILSVRC tree)."""
    return make_synthetic_archives(tmp_path_factory.mktemp("downloads"), new_per_class=10, other_per_class=4)


def _all_bytes_match(manifest: Path) -> bool:
    m = read_manifest(manifest)
    reader = ImageReader(resolve_image_root(m.meta))
    return all(hashlib.sha1(reader.read(ref)).hexdigest() == digest
               for ref, digest in zip(image_refs(m.images), m.images["sha1"].to_pylist()))


def test_nested_tar_and_annotation_tgz_pair_by_image_id(downloads, tmp_path: Path) -> None:
    s = scan([downloads.images_tar, downloads.annotations_tgz], tmp_path / "m", workers=1)
    m = read_manifest(tmp_path / "m")
    # 4 new synsets x 10 + 2 ILSVRC + 1 other synsets x 4, and the planted copy
    assert s.images == downloads.images_in_tar == 4 * 10 + 3 * 4 + 1
    assert s.rejects == 0 and s.split == "fall11_whole"
    assert s.files_seen == 2 + downloads.images_in_tar + downloads.annotated_in_tar
    annotated = sum(n > 0 for n in m.images["n_boxes"].to_pylist())
    assert annotated == downloads.annotated_in_tar
    row = m.images.filter(pc.equal(m.images["image_id"], f"{EIC_NEW_WNIDS[0]}_1")).to_pylist()[0]
    assert row["path"] == f"fall11_whole.tar/{EIC_NEW_WNIDS[0]}.tar/{EIC_NEW_WNIDS[0]}_1.JPEG"
    assert row["archive"] == "fall11_whole.tar" and row["label"] == EIC_NEW_WNIDS[0]
    assert row["offset"] % 512 == 0 and row["size"] > 0
    with open(downloads.images_tar, "rb") as f:
        f.seek(row["offset"])
        assert hashlib.sha1(f.read(row["size"])).hexdigest() == row["sha1"]
    assert _all_bytes_match(tmp_path / "m")


def test_every_shape_gives_the_same_manifest(downloads, tmp_path: Path, monkeypatch) -> None:
    """Whole tar, listed tar (cut into units), the unpacked outer folder and the .tar.gz agree."""
    ann = downloads.annotations_tgz
    scan([downloads.images_tar, ann], tmp_path / "whole", workers=1)
    whole = read_manifest(tmp_path / "whole")
    folder = tmp_path / "unpacked"
    folder.mkdir()
    with tarfile.open(downloads.images_tar) as tf:
        for info in tf:
            (folder / info.name).write_bytes(tf.extractfile(info).read())
    scan([folder, ann], tmp_path / "folder", workers=2)
    gz = tmp_path / "winter21_whole.tar.gz"
    gz.write_bytes(gzip.compress(downloads.images_tar.read_bytes()))
    scan([gz, ann], tmp_path / "gz", workers=1)
    monkeypatch.setattr(archives, "WHOLE_ARCHIVE_BYTES", 1000)
    monkeypatch.setattr(archives, "RUN_MEMBERS", 3)
    s = scan([downloads.images_tar, ann], tmp_path / "listed", workers=2)
    assert s.units_total > 8  # one unit per per-synset tar, at least
    listed = read_manifest(tmp_path / "listed")
    assert listed.images.equals(whole.images) and listed.boxes.equals(whole.boxes)
    for other in ("folder", "gz"):
        m = read_manifest(tmp_path / other)
        assert m.boxes.equals(whole.boxes), other
        assert m.images["sha1"].equals(whole.images["sha1"]) and m.images["label"].equals(whole.images["label"])
    assert _all_bytes_match(tmp_path / "folder")
    assert _all_bytes_match(tmp_path / "gz")  # read in place through the seek index the scan built
    # a run of plain members: a tar of JPEGs (as ILSVRC2012_img_val.tar), cut into runs of 3
    s = scan([folder / f"{EIC_NEW_WNIDS[1]}.tar"], tmp_path / "runs", workers=1)
    assert s.images == 10 and s.units_total >= 4 and _all_bytes_match(tmp_path / "runs")


def _jpeg(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_bad_archives_are_reported_not_fatal(tmp_path: Path) -> None:
    good = _jpeg(0)
    src = tmp_path / "src"
    src.mkdir()
    # a member that is not an image, duplicates, unsafe names
    members = [("a_1.JPEG", good), ("a_2.JPEG", b"not a jpeg"), ("a_1.JPEG", _jpeg(1)), ("../evil_1.JPEG", good),
               ("/abs_1.JPEG", good), ("notes.txt", b"hello")]
    (src / "mixed.tar").write_bytes(tar_bytes(members))
    # a truncated tar: the first member survives
    whole = tar_bytes([("t_1.JPEG", good), ("t_2.JPEG", _jpeg(2))])
    (src / "cut.tar").write_bytes(whole[: 512 + len(good) + 700])
    # a gzip with a broken CRC
    gz = bytearray(gzip.compress(tar_bytes([("g_1.JPEG", good)])))
    gz[-8] ^= 0xFF
    (src / "crc.tar.gz").write_bytes(bytes(gz))
    # an empty .tar, and nesting beyond the depth limit
    (src / "empty.tar").write_bytes(b"")
    deep = tar_bytes([("d_1.JPEG", good)])
    for level in range(archives.MAX_DEPTH + 1):
        deep = tar_bytes([(f"level{level}.tar", deep)])
    (src / "deep.tar").write_bytes(deep)
    s = scan(src, tmp_path / "m", workers=1)
    m = read_manifest(tmp_path / "m")
    reasons = sorted(zip(m.rejects["reason"].to_pylist(), m.rejects["path"].to_pylist()))
    assert ("not_an_image", "mixed.tar/a_2.JPEG") in reasons
    assert ("duplicate_member", "mixed.tar/a_1.JPEG") in reasons
    assert ("unsafe_member_name", "mixed.tar/../evil_1.JPEG") in reasons
    assert ("unsafe_member_name", "mixed.tar//abs_1.JPEG") in reasons
    assert ("corrupt_archive", "cut.tar") in reasons
    assert ("corrupt_archive", "crc.tar.gz") in reasons
    assert ("corrupt_archive", "empty.tar") in reasons
    assert any(r == "archive_too_deep" for r, _ in reasons)
    # the CRC damage may lie anywhere in crc.tar.gz: none of its members is kept
    assert sorted(m.images["image_id"].to_pylist()) == ["a_1", "t_1"]
    first = m.images.filter(pc.equal(m.images["image_id"], "a_1")).to_pylist()[0]
    assert first["sha1"] == hashlib.sha1(good).hexdigest()  # the first a_1 is kept, the second reported
    assert s.ignored["not an image or annotation in an archive (.txt)"] == 1
    crc = m.rejects.filter(pc.equal(m.rejects["path"], "crc.tar.gz"))["detail"][0].as_py()
    assert "CRC" in crc or "incorrect data check" in crc  # zlib's words for a CRC that does not match


def test_member_under_a_compressed_layer_has_no_offset(tmp_path: Path) -> None:
    inner = tar_bytes([("x_1.JPEG", _jpeg(3))], gzip_level=1)
    (tmp_path / "outer.tar").write_bytes(tar_bytes([("x.tar.gz", inner)]))
    scan(tmp_path / "outer.tar", tmp_path / "m", workers=1)
    m = read_manifest(tmp_path / "m")
    row = m.images.to_pylist()[0]
    assert row["offset"] is None and row["archive"] == "outer.tar" and row["sha1"]
    with pytest.raises(InputNotFoundError, match=r"under a compressed layer inside outer\.tar"):
        ImageReader(tmp_path).read(image_refs(m.images)[0])


def test_reader_errors_name_the_image(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match=r"cannot read image a\.JPEG under"):
        ImageReader(tmp_path).read(ImageRef("a.JPEG"))
    (tmp_path / "s.tar").write_bytes(b"x" * 100)
    with pytest.raises(InputNotFoundError, match=r"archive s\.tar ends before image s\.tar/a\.JPEG"):
        ImageReader(tmp_path).read(ImageRef("s.tar/a.JPEG", "s.tar", 50, 100))


def test_an_image_changed_in_place_since_the_scan_is_an_error_not_data(tmp_path: Path) -> None:
    """A plain tar (and a loose file scanned with --hash) rewritten with its size kept: the bytes read are
    checked against the scan's SHA-1, as a .tar.gz member's are."""
    import os

    from eic_builder.dataset.manifest import open_manifest
    from eic_builder.errors import ImageDataError

    first, second = _jpeg(3), _jpeg(4)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.tar").write_bytes(tar_bytes([("n01440764_1.JPEG", first)]))
    (tmp_path / "t" / "n01440764_2.JPEG").write_bytes(first)
    scan(tmp_path / "t", tmp_path / "m", workers=1, hash_files=True)
    tar = tmp_path / "t" / "a.tar"
    data = bytearray(tar.read_bytes())
    at = data.index(first) + len(first) // 2
    data[at] ^= 0xFF
    st = tar.stat()
    tar.write_bytes(bytes(data))
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns))
    loose = tmp_path / "t" / "n01440764_2.JPEG"
    loose.write_bytes(second[: len(first)].ljust(len(first), b"\0"))
    with open_manifest(tmp_path / "m") as m:
        with pytest.raises(ImageDataError, match=r"read from a\.tar is not the image the scan hashed: the archive"):
            m.read_bytes("n01440764_1")
        with pytest.raises(ImageDataError, match=r"n01440764_2\.JPEG read is not the image the scan hashed: the "
                                                 r"file changed"):
            m.read_bytes("n01440764_2")


def test_interrupted_archive_scan_resumes_per_unit(downloads, tmp_path: Path, monkeypatch) -> None:
    import eic_builder.scan.scanner as scanner

    monkeypatch.setattr(archives, "WHOLE_ARCHIVE_BYTES", 1000)
    calls: list[str] = []
    real = archives.read_unit

    def dies_at_the_fourth_unit(root, unit, *rest):
        calls.append(unit.prefix)
        if len(calls) == 4:
            raise RuntimeError("killed")
        return real(root, unit, *rest)

    monkeypatch.setattr(scanner, "read_unit", dies_at_the_fourth_unit)
    sources = [downloads.images_tar, downloads.annotations_tgz]
    with pytest.raises(RuntimeError, match="killed"):
        scan(sources, tmp_path / "m", workers=1)
    monkeypatch.setattr(scanner, "read_unit",
                        lambda root, unit, *rest: calls.append(unit.prefix) or real(root, unit, *rest))
    calls.clear()
    s = scan(sources, tmp_path / "m", workers=1)
    # 7 synset tars + Annotation.tar.gz: the 3 finished before the kill are not read again
    assert s.units_resumed >= 3 and len(calls) == 8 - 3
    scan(sources, tmp_path / "fresh", workers=1)
    assert read_manifest(tmp_path / "m").images.equals(read_manifest(tmp_path / "fresh").images)


def test_real_images_packed_as_the_downloads_scan_as_the_folder(ilsvrc_val_1300: Path, tmp_path: Path) -> None:
    """The 1,300 real val images packed into per-synset tars in an outer tar, their LOC CSV boxes written as
    per-synset Annotation .tar.gz of ILSVRC XML: the same boxes and statistics as scanning the folder."""
    from eic_builder.imagesize import read_image_header

    with open(ilsvrc_val_1300 / "LOC_val_solution.csv", newline="") as f:
        rows = {r[0]: r[1].split() for r in list(csv.reader(f))[1:]}
    by_synset: dict[str, list[str]] = {}
    for image_id, parts in sorted(rows.items()):
        by_synset.setdefault(parts[0], []).append(image_id)
    image_tars, xml_tars = [], []
    for wnid, ids in sorted(by_synset.items()):
        images, xmls = [], []
        for image_id in ids:
            path = ilsvrc_val_1300 / "val" / f"{image_id}.JPEG"
            header = read_image_header(path)
            images.append((f"{image_id}.JPEG", path.read_bytes()))
            parts = rows[image_id]
            objects = [(parts[i], *parts[i + 1: i + 5]) for i in range(0, len(parts), 5)]
            body = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                           f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
            xml = ilsvrc_xml(wnid, image_id, header.width, header.height, []).replace("</annotation>",
                                                                                      body + "</annotation>")
            xmls.append((f"Annotation/{wnid}/{image_id}.xml", xml.encode()))
        image_tars.append((f"{wnid}.tar", tar_bytes(images)))
        xml_tars.append((f"{wnid}.tar.gz", tar_bytes(xmls, gzip_level=1)))
    (tmp_path / "fall11_whole.tar").write_bytes(tar_bytes(image_tars))
    (tmp_path / "Annotation.tar.gz").write_bytes(tar_bytes(xml_tars, gzip_level=1))
    scan(ilsvrc_val_1300, tmp_path / "folder")
    scan([tmp_path / "fall11_whole.tar", tmp_path / "Annotation.tar.gz"], tmp_path / "archives")
    folder, packed = read_manifest(tmp_path / "folder"), read_manifest(tmp_path / "archives")
    assert len(packed.images) == len(folder.images) == 1300 and len(packed.rejects) == 0
    assert packed.boxes.equals(folder.boxes) and len(packed.boxes) == 1943
    a = asdict(compute_split_stats("x", tmp_path / "folder"))
    b = asdict(compute_split_stats("x", tmp_path / "archives"))
    assert a == b
    assert _all_bytes_match(tmp_path / "archives")


def test_shards_partition_the_scan_by_synset(downloads, tmp_path: Path) -> None:
    import pyarrow as pa

    from eic_builder.errors import OptionError
    from eic_builder.scan.scanner import parse_shard

    sources = [downloads.images_tar, downloads.annotations_tgz]
    scan(sources, tmp_path / "all", workers=1)
    whole = read_manifest(tmp_path / "all")
    parts = []
    for k in range(3):
        scan(sources, tmp_path / f"s{k}", workers=1, shard=(k, 3))
        parts.append(read_manifest(tmp_path / f"s{k}"))
    ids = [set(p.images["image_id"].to_pylist()) for p in parts]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    assert set().union(*ids) == set(whole.images["image_id"].to_pylist())
    for p in parts:  # a synset lies in one shard, with its boxes
        labels = set(p.images["label"].to_pylist())
        assert all(set(o.images["label"].to_pylist()).isdisjoint(labels) for o in parts if o is not p)
    merged = pa.concat_tables([p.boxes for p in parts]).sort_by(
        [("label", "ascending"), ("image_id", "ascending"), ("box_index", "ascending")])
    assert merged.equals(whole.boxes)
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("3/3", "a/2", "1", "-1/2"):
        with pytest.raises(OptionError, match=r"shard .* is not K/N with 0 <= K < N"):
            parse_shard(bad)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_formats_read_alike(fmt: int, tmp_path: Path) -> None:
    """Headers the direct parser reads (ustar) and those it leaves to tarfile (pax, GNU long names) agree."""
    long_dir = "d" * 120  # longer than a ustar name field: a pax header or a GNU long-name record
    members = [(f"{long_dir}/n01440764_{i}.JPEG", _jpeg(i)) for i in range(3)] if fmt != tarfile.USTAR_FORMAT \
        else [(f"n01440764_{i}.JPEG", _jpeg(i)) for i in range(3)]
    (tmp_path / "n01440764.tar").write_bytes(tar_bytes(members, tar_format=fmt))
    scan(tmp_path / "n01440764.tar", tmp_path / "m", workers=1)
    m = read_manifest(tmp_path / "m")
    assert m.images["image_id"].to_pylist() == [f"n01440764_{i}" for i in range(3)]
    assert m.images["sha1"].to_pylist() == [hashlib.sha1(d).hexdigest() for _, d in members]
    assert m.images["path"][0].as_py() == f"n01440764.tar/{members[0][0]}"
    assert _all_bytes_match(tmp_path / "m") and len(m.rejects) == 0


def test_a_source_that_is_only_damage_is_a_manifest_of_rejects(tmp_path: Path) -> None:
    (tmp_path / "fake.tar.gz").write_bytes(b"not gzip at all")
    s = scan(tmp_path / "fake.tar.gz", tmp_path / "m", workers=1)
    m = read_manifest(tmp_path / "m")
    assert (s.images, s.split) == (0, "fake")
    assert [(r["path"], r["reason"]) for r in m.rejects.to_pylist()] == [("fake.tar.gz", "corrupt_archive")]
