from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from eic_builder.errors import InputNotFoundError, OptionError, WordNetError
from eic_builder.expand import ExpandOptions, balanced_choice, expand_classes, explain
from eic_builder.expand.report import write_expansion
from eic_builder.reference_lists import data_manifests_dir


def test_balanced_choice_hand_computed() -> None:
    groups = {"a": ["a1", "a2", "a3", "a4", "a5"], "b": ["b1", "b2"], "c": ["c1", "c2", "c3"]}
    # need 6: q=2 gives 2+2+2=6
    assert balanced_choice(groups, 6) == ["a1", "a2", "b1", "b2", "c1", "c2"]
    # need 8: q=3 gives 3+2+3=8
    assert balanced_choice(groups, 8) == ["a1", "a2", "a3", "b1", "b2", "c1", "c2", "c3"]
    # need 7: q=2 (6), one more to the largest group left (a)
    assert balanced_choice(groups, 7) == ["a1", "a2", "a3", "b1", "b2", "c1", "c2"]
    assert balanced_choice(groups, 20) == [w for g in groups.values() for w in g]


def test_default_expansion(wordnet_index) -> None:
    r = expand_classes(wordnet_index)
    assert [(s.rule, s.left) for s in r.steps] == [
        ("in pool", 3627), ("not an ILSVRC class", 2627), ("not an ancestor of an ILSVRC class", 2302),
        ("not a descendant of an ILSVRC class", 2119), (">= 500 images", 1688),
        ("chosen (balanced over lexnames)", 1686)]
    t = r.table
    assert len(t) == 2686 and t["source"].to_pylist().count("ilsvrc1k") == 1000
    wnids = t["wnid"].to_pylist()
    assert len(set(wnids)) == 2686
    assert "n02084071" not in wnids  # dog: an ancestor of 118 ILSVRC classes
    new = set(wnids[1000:])
    assert not (new & wordnet_index.ancestors(wnids[:1000]))
    assert not (new & wordnet_index.descendants(wnids[:1000]))
    rows = t.to_pylist()
    tench = rows[0]
    assert (tench["wnid"], tench["nearest_ilsvrc"], tench["ilsvrc_hops"]) == ("n01440764", "n01440764", 0)
    # one hop would make it a parent or a child of an ILSVRC class, which rules 3-4 exclude
    assert all(r_["ilsvrc_hops"] >= 2 for r_ in rows[1000:])
    assert r.overlaps and all(a in new and d in new for a, d in r.overlaps)


def test_committed_list_is_reproduced_byte_for_byte(wordnet_index, tmp_path: Path) -> None:
    committed = data_manifests_dir() / "eic_classes.parquet"
    a = write_expansion(expand_classes(wordnet_index), tmp_path / "a.parquet", None)
    b = write_expansion(expand_classes(wordnet_index), tmp_path / "b.parquet", tmp_path / "r.md")
    assert a.read_bytes() == b.read_bytes()
    assert pq.read_table(a).equals(pq.read_table(committed))
    assert (tmp_path / "r.md").read_text().startswith("# EIC class expansion")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exclusive(wordnet_index) -> None:
    with pytest.raises(OptionError, match=r"only 1,473 candidates qualify but target 2,686 needs 1,686 .*pool 21k"):
        expand_classes(wordnet_index, ExpandOptions(exclusive=True))
    r = expand_classes(wordnet_index, ExpandOptions(exclusive=True, pool="21k"))
    new = r.table["wnid"].to_pylist()[1000:]
    assert len(new) == 1686 and not (set(new) & wordnet_index.ancestors(new)) and r.overlaps == []


def test_bad_inputs(wordnet_index, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="target 999 is below the 1,000 base classes"):
        expand_classes(wordnet_index, ExpandOptions(target=999))
    pool = tmp_path / "pool.txt"
    pool.write_text("n01440764\nn99999999\n")
    with pytest.raises(WordNetError, match=r"1 wnid\(s\) of the pool \(file pool.txt\) are not WordNet 3.0 nouns, "
                                           r"e\.g\. n99999999"):
        expand_classes(wordnet_index, ExpandOptions(pool=str(pool)))
    pool.write_text("n01440764\ndog\n")
    with pytest.raises(WordNetError, match=r"pool.txt:2: 'dog' is not a wnid"):
        expand_classes(wordnet_index, ExpandOptions(pool=str(pool)))
    base = tmp_path / "base.txt"
    base.write_text("n01440764\nn00000000\n")
    with pytest.raises(WordNetError, match=r"of the base list are not WordNet 3\.0 nouns"):
        expand_classes(wordnet_index, ExpandOptions(base=str(base), target=5))
    base.write_text("# no class\n\n")
    with pytest.raises(InputNotFoundError, match=r"base\.txt holds no wnid"):
        expand_classes(wordnet_index, ExpandOptions(base=str(base), target=5))
    with pytest.raises(OptionError, match="pool 'nope' is neither one of bbox, 21k nor an existing file"):
        expand_classes(wordnet_index, ExpandOptions(pool="nope"))
    with pytest.raises(OptionError, match="min_images 800 needs real counts"):
        expand_classes(wordnet_index, ExpandOptions(min_images=800))
    with pytest.raises(InputNotFoundError, match="does not exist"):
        expand_classes(wordnet_index, ExpandOptions(base=str(tmp_path / "none.txt")))


def test_small_pool_and_real_counts(wordnet_index, synthetic_tree: Path, tmp_path: Path) -> None:
    from eic_builder.scan.scanner import scan

    base = tmp_path / "base.txt"
    base.write_text("n01440764\n")  # tench
    pool = tmp_path / "pool.txt"
    pool.write_text("n02102040\nn02979186\nn01440764\nn02084071\n")  # springer, cassette player, tench, dog
    scan(synthetic_tree, tmp_path / "m", split="train")  # 12 images in each of 4 classes
    opts = ExpandOptions(base=str(base), pool=str(pool), target=3, min_images=12, image_counts=str(tmp_path / "m"))
    r = expand_classes(wordnet_index, opts)
    assert r.table["wnid"].to_pylist() == ["n01440764", "n02102040", "n02979186"]
    assert r.table["image_count"].to_pylist() == [12, 12, 12]
    assert r.table["image_count_source"][1].as_py().startswith("scan of m (48 images)")
    with pytest.raises(OptionError, match="only 2 candidates qualify but target 4 needs 3"):
        expand_classes(wordnet_index, ExpandOptions(base=str(base), pool=str(pool), target=4, min_images=12,
                                                    image_counts=str(tmp_path / "m")))
    lines = explain(wordnet_index, "n02084071", opts)
    assert lines[-1] == "  verdict: not an EIC class: has 0 images, fewer than 12"


def test_explain(wordnet_index) -> None:
    lines = explain(wordnet_index, "n02084071")
    assert "ancestor of ILSVRC classes: 118" in lines[4]
    assert lines[-1] == "  verdict: not an EIC class: is an ancestor (hypernym) of ILSVRC classes"
    assert explain(wordnet_index, "n01440764")[-1] == "  verdict: an EIC class (ilsvrc1k)"


def test_cli(wordnet_cache: Path, wordnet_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eic_builder.cli import main

    monkeypatch.setenv("EIC_CACHE_DIR", str(wordnet_cache))
    out = tmp_path / "classes.parquet"
    r = CliRunner().invoke(main, ["expand-classes", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "3,627 in pool -> 2,627 not an ILSVRC class" in r.output
    assert (tmp_path / "classes_report.md").is_file() and (tmp_path / "classes_report.png").is_file()
    r = CliRunner().invoke(main, ["expand-classes", "--explain", "n02084071"])
    assert r.exit_code == 0 and "ancestor of ILSVRC classes: 118" in r.output
    r = CliRunner().invoke(main, ["expand-classes", "--target", "10"])
    assert r.exit_code == 2 and r.output == "eic-build: error: --target 10 is below the 1,000 base classes; " \
                                            "it must be at least 1,000\n"
