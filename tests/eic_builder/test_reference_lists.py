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
    with pytest.raises(WordNetError, match=r"l\.txt:4: 'n0144' is not a wnid"):
        read_wnid_list(p)
