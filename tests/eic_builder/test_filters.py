from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eic_builder.boxes import box_flags
from eic_builder.dataset.manifest import read_manifest
from eic_builder.errors import OptionError
from eic_builder.filters import FilterOptions, filter_manifest, parse_flags
from eic_builder.scan.scanner import scan
from eic_builder.synthetic import SyntheticBox, ilsvrc_xml


def test_box_flags_hand_computed() -> None:
    # 31x31 small; 32x10 not small (w == 32), aspect 3.2; 41x10 and 10x41 twisted; 100x25 aspect 4.0 is not
    x1 = np.array([0, 0, 0, 0, 0.0])
    y1 = np.zeros(5)
    x2 = np.array([31, 32, 41, 10, 100.0])
    y2 = np.array([31, 10, 10, 41, 25.0])
    f = box_flags(x1, y1, x2, y2, np.full(5, 100), np.full(5, 50))
    assert f.is_small.tolist() == [True, False, False, False, False]
    assert f.is_twisted.tolist() == [False, False, True, True, False]
    np.testing.assert_allclose(f.area_ratio, [961 / 5000, 320 / 5000, 410 / 5000, 410 / 5000, 2500 / 5000], rtol=1e-6)
    f2 = box_flags(x1, y1, x2, y2, np.full(5, 100), np.full(5, 50), small_px=33, twisted_ratio=3)
    assert f2.is_small.tolist() == [True, True, False, False, False]  # 32x10 is under 33x33
    assert f2.is_twisted.tolist() == [False, True, True, True, True]


def test_box_flags_bad_thresholds() -> None:
    z = np.zeros(1)
    with pytest.raises(OptionError, match="small_px=0"):
        box_flags(z, z, z, z, z, z, small_px=0)
    with pytest.raises(OptionError, match="twisted_ratio=1"):
        box_flags(z, z, z, z, z, z, twisted_ratio=1)


def test_parse_flags() -> None:
    assert parse_flags("small, twisted") == {"small", "twisted"}
    assert parse_flags(None) == frozenset()
    with pytest.raises(OptionError, match=r"unknown box flag\(s\) tiny; allowed: 'small', 'twisted'"):
        parse_flags("small,tiny")


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    from PIL import Image

    root = tmp_path / "t"
    w = "n01440764"
    (root / "train" / w).mkdir(parents=True)
    (root / "ann").mkdir()
    boxes = {1: [(w, 0, 0, 9, 9), (w, 0, 0, 99, 9)],  # small + twisted
             2: [(w, 0, 0, 9, 9)],  # small only
             3: [(w, 0, 0, 49, 49)]}  # plain
    for i in (1, 2, 3, 4):
        Image.new("RGB", (100, 100)).save(root / "train" / w / f"{w}_{i}.JPEG")
        if i in boxes:
            (root / "ann" / f"{w}_{i}.xml").write_text(
                ilsvrc_xml(w, f"{w}_{i}", 100, 100, [SyntheticBox(*b) for b in boxes[i]]))
    scan(root, tmp_path / "m", workers=1)
    return tmp_path / "m"


def test_filter_drop_small(manifest: Path, tmp_path: Path) -> None:
    r = filter_manifest(manifest, tmp_path / "f", FilterOptions(drop=frozenset({"small"})))
    m = read_manifest(tmp_path / "f")
    # image 2 loses its only box and goes; image 4 never had boxes and stays
    assert (r.removed_boxes, r.removed_images, r.kept_boxes, r.kept_images) == (2, 1, 2, 3)
    assert dict(zip(m.images["image_id"].to_pylist(), m.images["n_boxes"].to_pylist())) == {
        "n01440764_1": 1, "n01440764_3": 1, "n01440764_4": 0}
    assert m.meta["filter"]["drop"] == ["small"]


def test_filter_keep_and_min_side(manifest: Path, tmp_path: Path) -> None:
    r = filter_manifest(manifest, tmp_path / "k", FilterOptions(keep=frozenset({"twisted"})))
    assert (r.kept_boxes, r.kept_images) == (1, 2)
    r = filter_manifest(manifest, tmp_path / "s", FilterOptions(min_side=20))
    assert (r.kept_boxes, r.removed_boxes) == (1, 3)


def test_filter_bad_options(manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="exclude each other"):
        filter_manifest(manifest, tmp_path / "x", FilterOptions(drop=frozenset({"small"}), keep=frozenset({"twisted"})))
    with pytest.raises(OptionError, match="min_side=-1"):
        filter_manifest(manifest, tmp_path / "x", FilterOptions(min_side=-1))
    with pytest.raises(OptionError, match=r"is the input manifest .*: they overlap"):
        filter_manifest(manifest, manifest)
