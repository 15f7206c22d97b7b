"""The run module: a stage's ``--out`` apart from its inputs, one run per folder, units resumed by digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from eic_builder.errors import OptionError
from eic_builder.output_folder import RUN_FILE, Run, check_out, digest_of


def test_out_is_a_folder_apart_from_the_inputs(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "file").write_text("x")
    inputs = {"the manifest": tmp_path / "m"}
    assert check_out(tmp_path / "new", inputs) == tmp_path / "new"
    assert check_out(tmp_path / "m2", inputs) == tmp_path / "m2"  # a name that starts alike is apart
    for out, relation in ((tmp_path / "m", "is"), (tmp_path / "m" / "sub", "lies inside"), (tmp_path, "holds")):
        with pytest.raises(OptionError, match=rf"{relation} the manifest .*: they overlap"):
            check_out(out, inputs)
    with pytest.raises(OptionError, match=r"is a file; give a folder"):
        check_out(tmp_path / "file")
    # through a symbolic link, the same folder
    (tmp_path / "link").symlink_to(tmp_path / "m")
    with pytest.raises(OptionError, match=r"is the manifest"):
        check_out(tmp_path / "link", inputs)


def test_a_run_is_its_identity(tmp_path: Path) -> None:
    run = Run("thing", {"size": 32, "sizes": (1, 2), "path": tmp_path})
    assert run.key == Run("thing", {"path": tmp_path, "sizes": [1, 2], "size": 32}).key == digest_of(
        {"command": "thing", "identity": {"size": 32, "sizes": [1, 2], "path": str(tmp_path)}})
    assert len(run.key) == 16 and run.key != Run("other", run.identity).key
    assert run.differences({"size": 32, "sizes": [1, 2], "path": str(tmp_path)}) == []
    assert run.differences({"size": 64, "sizes": [1, 2]}) == ["path", "size"]
    assert run.differences(None) == ["path", "size", "sizes"]
    with pytest.raises(OptionError, match=r"out .*shards of another thing run \(it differs in size\); choose a new"):
        run.refuse_other({"size": 64, "sizes": [1, 2], "path": str(tmp_path)}, tmp_path, what="shards")


def test_finished_units_by_their_digests() -> None:
    recorded = {"a": "1", "b": "2", "c": "9"}  # c's inputs changed since; d was never done
    digests = {"a": "1", "b": "2", "c": "3", "d": "4"}
    asked = []

    def digest(unit: str) -> str:
        asked.append(unit)
        return digests[unit]

    assert Run.finished(["a", "b", "c", "d"], recorded.get, digest) == (["a", "b"], ["c"])
    assert asked == ["a", "b", "c"]  # no digest of a unit that has no record (a scan's stat of every file)


def test_claim_a_folder_for_one_run(tmp_path: Path) -> None:
    run = Run("thing", {"seed": 0})
    out = run.claim(tmp_path / "out", owned=("files",))
    assert (out / RUN_FILE).is_file()
    (out / "files").mkdir()
    assert run.claim(out, owned=("files",)) == out  # the same run resumes
    with pytest.raises(OptionError, match=r"holds the files of another thing run \(it differs in seed\)"):
        Run("thing", {"seed": 1}).claim(out, owned=("files",))
    with pytest.raises(OptionError, match=r"holds the files of another thing run \(it differs in its command\)"):
        Run("other", {"seed": 0}).claim(out, owned=("files",))
    (out / RUN_FILE).unlink()
    with pytest.raises(OptionError, match=r"already holds files of an earlier run it cannot tell apart"):
        run.claim(out, owned=("files",))
    with pytest.raises(OptionError, match=r"they overlap"):
        run.claim(tmp_path / "in" / "out", owned=("files",), inputs={"the input": tmp_path / "in"})
