from __future__ import annotations

from pathlib import Path

import pytest

from eic_builder.errors import WordNetError
from eic_builder.reference_lists import (
    MIN500_FILE,
    POOL_FILES,
    data_manifests_dir,
    ilsvrc_classes,
    read_wnid_list,
)


def test_committed_lists_match_their_sources(bbox_synsets_file: Path) -> None:
    timm_info = pytest.importorskip("timm").__path__[0] + "/data/_info/"
    d = data_manifests_dir()
    assert ilsvrc_classes()["wnid"].to_pylist() == Path(timm_info, "imagenet_synsets.txt").read_text().split()
    assert read_wnid_list(d / POOL_FILES["21k"]) == Path(timm_info, "imagenet22k_synsets.txt").read_text().split()
    assert read_wnid_list(d / MIN500_FILE) == Path(timm_info, "imagenet21k_miil_synsets.txt").read_text().split()
    assert read_wnid_list(d / POOL_FILES["bbox"]) == bbox_synsets_file.read_text().split()


def test_list_sizes_and_facts() -> None:
    t = ilsvrc_classes()
    assert len(t) == 1000 and t["class_index"].to_pylist() == list(range(1000))
    assert t.slice(0, 1).to_pylist()[0]["wnid"] == "n01440764" and t["lemma"][0].as_py() == "tench"
    d = data_manifests_dir()
    assert len(read_wnid_list(d / POOL_FILES["bbox"])) == 3627
    assert len(read_wnid_list(d / POOL_FILES["21k"])) == 21841
    assert set(t["wnid"].to_pylist()) <= set(read_wnid_list(d / POOL_FILES["bbox"]))


def test_read_wnid_list_errors(tmp_path: Path) -> None:
    p = tmp_path / "l.txt"
    p.write_text("# comment\nn01440764\n\nn0144\n")
    with pytest.raises(WordNetError, match=r"l\.txt:4: .n0144. is not a wnid"):
        read_wnid_list(p)


@pytest.mark.parametrize(("values", "bad"), [
    ([" n01832493 ", "n01440764"], r"row 0: ' n01832493 ' is not a wnid"),
    (["n01440764", "N01998183"], r"row 1: 'N01998183' is not a wnid"),
    ([1440764, 1998183], r"row 0: 1440764 is not a wnid"),
])
def test_a_parquet_class_list_follows_the_text_lists_rule(tmp_path: Path, values: list, bad: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "classes.parquet"
    pq.write_table(pa.table({"wnid": values}), path)
    with pytest.raises(WordNetError, match=rf"classes\.parquet {bad}: expected"):
        read_wnid_list(path)
    text = tmp_path / "classes.txt"
    text.write_text("".join(f"{v}\n" for v in values))
    if isinstance(values[0], str) and values[0].strip() == values[0]:  # a text line is stripped; case is not
        with pytest.raises(WordNetError, match=r"classes\.txt:2: .N01998183. is not a wnid"):
            read_wnid_list(text)


def test_an_empty_class_list_is_refused_before_any_work(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from eic_builder.cli import main
    from eic_builder.errors import InputNotFoundError

    for name, data in (("empty.txt", ""), ("comments.txt", "# none\n\n")):
        (tmp_path / name).write_text(data)
        with pytest.raises(InputNotFoundError, match=rf"{name} holds no wnid"):
            read_wnid_list(tmp_path / name)
    r = CliRunner().invoke(main, ["scan", str(tmp_path / "nowhere_needed"), "--out", str(tmp_path / "m"),
                                  "--classes", str(tmp_path / "empty.txt")])
    assert r.exit_code == 2 and "empty.txt holds no wnid" in r.output and not (tmp_path / "m").exists()
