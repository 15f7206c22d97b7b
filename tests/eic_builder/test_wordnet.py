from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from eic_builder import wordnet
from eic_builder.errors import WordNetError
from eic_builder.wordnet import LEXNAMES, find_wordnet, lexnames_text, offset_of


def test_lexnames_are_the_45_standard_files() -> None:
    lines = lexnames_text().splitlines()
    assert len(lines) == len(LEXNAMES) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[5] == "05\tnoun.animal\t1" and lines[44] == "44\tadj.ppl\t3"
    try:
        man = subprocess.run(["man", "5", "lexnames"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        man = ""
    if "noun.Tops" in man:  # cross-check with wordnet-base's man page when it is installed
        for i, name in enumerate(LEXNAMES):
            assert f"{i:02d}            {name}" in man, name


def test_offset_of() -> None:
    assert offset_of("n01440764") == 1440764
    for bad in ("n123", "x01440764", "n0144076a", ""):
        with pytest.raises(WordNetError, match="is not a wnid: expected 'n' followed by 8 digits"):
            offset_of(bad)


def test_no_wordnet_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EIC_WORDNET_DIR", raising=False)
    monkeypatch.setattr(wordnet, "DEBIAN_WORDNET_DIR", tmp_path / "none")
    monkeypatch.setattr(wordnet, "nltk_data_roots", lambda: [tmp_path / "nltk_data"])
    with pytest.raises(WordNetError, match=r"wordnet_dir DIR.*nltk\.downloader wordnet.*apt-get install "
                                           r"wordnet-base wordnet-sense-index"):
        find_wordnet()


def test_nltk_data_roots_are_nltks(tmp_path: Path) -> None:
    # nltk builds its path at import: compare in a fresh process, with NLTK_DATA set
    env = dict(os.environ, NLTK_DATA=f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    code = ("import nltk.data; from eic_builder.wordnet import nltk_data_roots; "
            "print(nltk.data.path == [str(p) for p in nltk_data_roots()])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_wordnet_on_nltks_path_folder_before_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EIC_WORDNET_DIR", raising=False)
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "corpora").mkdir(parents=True)
    with zipfile.ZipFile(first / "corpora" / "wordnet.zip", "w") as z:
        z.writestr("wordnet/data.noun", "zipped noun data")
    folder = second / "corpora" / "wordnet"
    folder.mkdir(parents=True)
    (folder / "data.noun").write_text("plain noun data")
    monkeypatch.setattr(wordnet, "nltk_data_roots", lambda: [first, second])
    source = find_wordnet()
    assert (source.how, source.folder) == ("nltk", folder)  # nltk.data.find takes folders first
    expected = hashlib.sha1(b"plain noun data" + b"15").hexdigest()[:16]
    assert wordnet._data_key(source) == expected
    shutil.rmtree(folder)
    source = find_wordnet()
    assert source.folder == first / "corpora" / "wordnet.zip"
    assert wordnet._data_key(source) == hashlib.sha1(b"zipped noun data" + b"16").hexdigest()[:16]


def test_warm_index_imports_no_nltk(wordnet_index, wordnet_cache: Path) -> None:
    # the cached index holds what expand-classes needs: nltk's import alone costs seconds
    env = dict(os.environ, EIC_CACHE_DIR=str(wordnet_cache))
    code = ("import sys; from eic_builder.wordnet import load_wordnet_index; idx = load_wordnet_index(); "
            "print(len(idx), 'nltk' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["82115", "False"]


def test_explicit_folder_missing_files(tmp_path: Path) -> None:
    (tmp_path / "data.noun").write_text("")
    with pytest.raises(WordNetError, match=r"lacks index\.noun, noun\.exc"):
        find_wordnet(tmp_path)


def test_hand_checked_facts(wordnet_index) -> None:
    idx = wordnet_index
    tench = idx.position("n01440764")
    assert (idx.lemmas[tench], idx.lexnames[tench]) == ("tench", "noun.animal")
    assert len(idx) == 82115  # noun synsets in WordNet 3.0
    dog_descendants = idx.descendants(["n02084071"])
    assert "n02085620" in dog_descendants  # Chihuahua
    assert idx.ancestors(["n02085620"]) >= {"n02084071", "n00001740"}  # dog, entity
    assert idx.depths[idx.position("n00001740")] == 0
    with pytest.raises(WordNetError, match=r"n99999999 is not a WordNet 3\.0 noun synset"):
        idx.position("n99999999")


def test_index_agrees_with_nltk(wordnet_index, wordnet_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIC_CACHE_DIR", str(wordnet_cache))
    reader = wordnet.open_reader(find_wordnet())
    for wnid in ("n01440764", "n02084071", "n03000684", "n07753592", "n09193705", "n04592741"):
        s = reader.synset_from_pos_and_offset("n", offset_of(wnid))
        i = wordnet_index.position(wnid)
        assert wordnet_index.depths[i] == s.min_depth()
        assert wordnet_index.glosses[i] == s.definition()
        assert wordnet_index.lexnames[i] == s.lexname()
        up = {f"n{a.offset():08d}" for a in s.closure(lambda x: x.hypernyms() + x.instance_hypernyms())}
        assert wordnet_index.ancestors([wnid]) == up


def test_ilsvrc_has_no_ancestor_descendant_pair(wordnet_index) -> None:
    from eic_builder.reference_lists import ilsvrc_classes

    base = set(ilsvrc_classes()["wnid"].to_pylist())
    assert len(base) == 1000
    assert not (wordnet_index.ancestors(base) & base)


def test_nearest(wordnet_index) -> None:
    idx = wordnet_index
    nearest, hops = idx.nearest(["n02085620"])  # Chihuahua
    dog = idx.position("n02084071")
    assert idx.wnids[nearest[dog]] == "n02085620" and hops[dog] == 2  # dog -> toy dog -> Chihuahua


@pytest.mark.slow
def test_junk_folder_then_fixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Junk in --wordnet-dir is a one-line error; once the folder holds WordNet, the cache notices."""
    import shutil

    real = Path("/usr/share/wordnet")
    if not (real / "data.noun").is_file():
        pytest.skip("no WordNet 3.0 in /usr/share/wordnet; `make test` installs it as root")
    monkeypatch.setenv("EIC_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "wn"
    folder.mkdir()
    for f in real.iterdir():
        (folder / f.name).write_text("junk\n")
    with pytest.raises(WordNetError, match=r"(nltk cannot read WordNet at|WordNet data from) .*/wn") as info:
        wordnet.load_wordnet_index(folder)
    assert "\n" not in str(info.value)
    for f in real.iterdir():
        shutil.copyfile(f, folder / f.name)
    index = wordnet.load_wordnet_index(folder)
    assert "n02084071" in index.noun_wnids()
