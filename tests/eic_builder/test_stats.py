from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eic_builder.dataset.manifest import write_manifest
from eic_builder.dataset.tables import to_table
from eic_builder.errors import ManifestError, OptionError
from eic_builder.scan.scanner import scan
from eic_builder.stats import compute_split_stats, dataset_table, parse_named_dirs


def _manifest(tmp_path: Path) -> Path:
    """3 images (2 of class a, 1 of b; one without boxes), 3 boxes in 100x100 images."""
    images = {"image_id": ["i1", "i2", "i3"], "split": ["val"] * 3, "label": ["a", "a", "b"],
              "wnid": [None] * 3, "path": ["1", "2", "3"], "annotation": [None] * 3, "width": [100] * 3,
              "height": [100] * 3, "has_image": [True] * 3, "n_boxes": [2, 0, 1],
              "archive": [None] * 3, "offset": [None] * 3, "size": [None] * 3, "sha1": [None] * 3,
              "ann_width": [None] * 3, "ann_height": [None] * 3}
    boxes = {"image_id": ["i1", "i1", "i3"], "box_index": [0, 1, 0], "label": ["a", "a", "b"], "wnid": [None] * 3,
             "x1": [0, 0, 0], "y1": [0, 0, 0], "x2": [10, 100, 50], "y2": [10, 20, 50],
             "area_ratio": [0.01, 0.2, 0.25], "is_small": [True, False, False], "is_twisted": [False, True, False]}
    rejects = {"path": [], "image_id": [], "level": [], "reason": [], "detail": []}
    d = tmp_path / "m"
    write_manifest(d, to_table("images", images), to_table("boxes", boxes), to_table("rejects", rejects))
    return d


def test_hand_computed(tmp_path: Path) -> None:
    s = compute_split_stats("x", _manifest(tmp_path))
    assert (s.n_images, s.images_per_class_min, s.images_per_class_max) == (3, 1, 2)
    assert s.anno_per_image == 3 / 2
    assert s.obj_scale_pct == pytest.approx((0.01 + 0.2 + 0.25) / 3 * 100, rel=1e-6)
    assert s.small_pct == pytest.approx(100 / 3) and s.twisted_pct == pytest.approx(100 / 3)
    s2 = compute_split_stats("x", tmp_path / "m", small_px=60, twisted_ratio=6)
    assert s2.small_pct == pytest.approx(200 / 3) and s2.twisted_pct == 0


def test_render_formats(tmp_path: Path) -> None:
    d = _manifest(tmp_path)
    md = dataset_table([f"A={d}", f"B={d}"], fmt="md")
    assert "| # of images        | 3" in md and "| Avg im # per cls   | 1-2" in md and "Definitions:" in md
    assert "n/a (no features)" in md
    csv_text = dataset_table([f"A={d}"], fmt="csv")
    assert csv_text.splitlines()[:4] == ["Dataset split,A", "# of images,3", "Images per class (min),1",
                                         "Images per class (max),2"]
    doc = json.loads(dataset_table([f"A={d}"], fmt="json"))
    assert doc["splits"][0]["n_images"] == 3 and doc["table"][2] == {"Dataset split": "Avg anno per im", "A": "1.50"}
    tex = dataset_table([f"A={d}"], fmt="latex")
    assert r"\# of images & 3 \\" in tex and r"Avg obj scale & 15.33 \% \\" in tex


def test_bad_arguments(tmp_path: Path) -> None:
    d = _manifest(tmp_path)
    with pytest.raises(OptionError, match="at least one manifest"):
        dataset_table([])
    with pytest.raises(OptionError, match="given twice"):
        dataset_table([f"A={d}", f"A={d}"])
    with pytest.raises(OptionError, match=r"fmt='html' is not allowed; choose one of 'md', 'csv'"):
        dataset_table([f"A={d}"], fmt="html")
    with pytest.raises(OptionError, match=r"twisted_ratio=0\.5"):
        dataset_table([f"A={d}"], twisted_ratio=0.5)
    with pytest.raises(ManifestError, match="does not exist"):
        dataset_table([f"A={tmp_path / 'none'}"])
    assert parse_named_dirs(["some/dir"]) == [("dir", Path("some/dir"))]


def test_empty_manifest(tmp_path: Path) -> None:
    empty = {k: [] for k in ("path", "image_id", "level", "reason", "detail")}
    from eic_builder.dataset.tables import empty_table

    write_manifest(tmp_path / "e", empty_table("images"), empty_table("boxes"), to_table("rejects", empty))
    md = dataset_table([f"E={tmp_path / 'e'}"])
    assert "| # of images        | 0" in md and "| Avg anno per im    | n/a" in md


def test_real_ilsvrc_table(ilsvrc_val_1300: Path, tmp_path: Path) -> None:
    scan(ilsvrc_val_1300, tmp_path / "m")
    s = compute_split_stats("val", tmp_path / "m")
    # 1,943 boxes / 1,300 images; 112 small and 65 twisted boxes (counted from the CSV)
    assert s.anno_per_image == pytest.approx(1943 / 1300)
    assert s.small_pct == pytest.approx(112 / 1943 * 100)
    assert s.twisted_pct == pytest.approx(65 / 1943 * 100)
    assert (s.images_per_class_min, s.images_per_class_max) == (1, 7)


def test_stats_on_large_random_manifest(tmp_path: Path) -> None:
    """Correctness on a large random manifest (speed is measured in benchmarks/, not here)."""
    rng = np.random.default_rng(0)
    n = 200_000
    x1 = rng.uniform(0, 100, n)
    y1 = rng.uniform(0, 100, n)
    w = rng.uniform(1, 100, n)
    h = rng.uniform(1, 100, n)
    images = {"image_id": ["i"], "split": ["s"], "label": ["a"], "wnid": [None], "path": [None],
              "annotation": [None], "width": [200], "height": [200], "has_image": [False], "n_boxes": [n],
              "archive": [None], "offset": [None], "size": [None], "sha1": [None],
              "ann_width": [None], "ann_height": [None]}
    boxes = {"image_id": ["i"] * n, "box_index": np.arange(n, dtype=np.int32), "label": ["a"] * n,
             "wnid": [None] * n, "x1": x1, "y1": y1, "x2": x1 + w, "y2": y1 + h,
             "area_ratio": (w * h / 40000), "is_small": np.zeros(n, bool), "is_twisted": np.zeros(n, bool)}
    from eic_builder.dataset.tables import empty_table

    write_manifest(tmp_path / "big", to_table("images", images), to_table("boxes", boxes), empty_table("rejects"))
    s = compute_split_stats("big", tmp_path / "big")
    w32, h32 = w.astype(np.float32), h.astype(np.float32)  # stored as float32
    expect_small = np.mean(((x1 + w).astype(np.float32) - x1.astype(np.float32) < 32)
                           & ((y1 + h).astype(np.float32) - y1.astype(np.float32) < 32)) * 100
    assert s.small_pct == pytest.approx(expect_small, abs=0.01)
    assert s.twisted_pct == pytest.approx(np.mean((w32 / h32 > 4) | (w32 / h32 < 0.25)) * 100, abs=0.05)


def test_eic_classes_present(synthetic_tree: Path, tmp_path: Path) -> None:
    from eic_builder.dataset.tables import read_table
    from eic_builder.reference_lists import data_manifests_dir

    scan(synthetic_tree, tmp_path / "m", split="train")
    eic = frozenset(read_table(data_manifests_dir() / "eic_classes.parquet", "eic_classes")["wnid"].to_pylist())
    md = dataset_table([f"train={tmp_path / 'm'}"], eic_wnids=eic)
    assert "| EIC classes present | 4 of 2,686" in md  # the four synthetic classes are ILSVRC classes


def test_two_level_header_in_the_papers_layout(tmp_path: Path) -> None:
    d = _manifest(tmp_path)
    specs = [f"EIC/Train={d}", f"EIC/Val={d}", f"ILSVRC/Train={d}", f"ILSVRC/Val={d}"]
    md = dataset_table(specs, fmt="md").splitlines()
    assert [c.strip() for c in md[0].strip("|").split("|")] == ["Dataset split", "Extended ImageNet", "",
                                                                "ILSVRC CLS 2012", ""]
    assert [c.strip() for c in md[2].strip("|").split("|")] == ["", "Train", "Val", "Train", "Val"]
    assert md[3].startswith("| # of images")
    tex = dataset_table(specs, fmt="latex")
    assert (r"Dataset split & \multicolumn{2}{c}{Extended ImageNet} & \multicolumn{2}{c}{ILSVRC CLS 2012} \\"
            in tex) and r"\cline{2-3}\cline{4-5}" in tex and r" & Train & Val & Train & Val \\" in tex
    flat = dataset_table(specs, fmt="csv").splitlines()
    assert flat[0] == "Dataset split,EIC/Train,EIC/Val,ILSVRC/Train,ILSVRC/Val" and flat[1] == "# of images,3,3,3,3"
    assert flat[4] == "Avg anno per im,1.5,1.5,1.5,1.5"
    # a plain name beside grouped ones keeps its own column
    md = dataset_table([f"A={d}", f"EIC/Train={d}", f"EIC/Val={d}"], fmt="md").splitlines()
    assert [c.strip() for c in md[0].strip("|").split("|")] == ["Dataset split", "", "Extended ImageNet", ""]
    assert [c.strip() for c in md[2].strip("|").split("|")] == ["", "A", "Train", "Val"]


def test_the_papers_columns_beside_ours_in_every_format(ilsvrc_val_1300: Path, tmp_path: Path) -> None:
    import csv as csv_module
    import io
    import json

    from eic_builder.stats import PAPER_COLUMNS, dataset_table

    scan(ilsvrc_val_1300, tmp_path / "m")
    spec = [f"ILSVRC/Val={tmp_path / 'm'}"]
    md = dataset_table(spec, fmt="md", paper=True)
    assert "ILSVRC CLS 2012 (paper)" in md and "Extended ImageNet (paper)" in md
    row = next(line for line in md.splitlines() if line.startswith("| # of images"))
    assert [c.strip() for c in row.strip("|").split("|")] == ["# of images", "1,300", "2,456,727", "273,140",
                                                               "1,281,167", "50,000"]
    inter = next(line for line in md.splitlines() if line.startswith("| Inter-cls distance"))
    assert [c.strip() for c in inter.strip("|").split("|")] == ["Inter-cls distance", "n/a (no features)", "1.12",
                                                                 "1.46", "1.52", "1.55"]  # as printed
    rows = list(csv_module.reader(io.StringIO(dataset_table(spec, fmt="csv", paper=True))))
    assert rows[0] == ["Dataset split", "ILSVRC/Val", *PAPER_COLUMNS]
    by_name = {r[0]: r[1:] for r in rows[1:]}
    assert by_name["# of images"] == ["1300", "2456727", "273140", "1281167", "50000"]  # plain numbers
    assert by_name["Images per class (min)"][1:] == ["251", "34", "732", "50"]
    assert by_name["Avg obj scale %"][1:] == ["25.37", "25.5", "25.39", "25.61"]
    assert by_name["Inter-cls distance"] == ["", "1.12", "1.46", "1.52", "1.55"]
    doc = json.loads(dataset_table(spec, fmt="json", paper=True))
    assert doc["paper"]["Paper EIC/Train"]["# of images"] == 2456727
    assert doc["paper"]["Paper ILSVRC/Val"]["Twisted obj %"] == 42.94
    latex = dataset_table(spec, fmt="latex", paper=True)
    assert r"\multicolumn{2}{c}{Extended ImageNet (paper)}" in latex and "2,456,727" in latex
    assert "Paper" not in dataset_table(spec, fmt="md")  # only when asked
