"""One rule for a stage's ``--out``: a folder, apart from everything the stage reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from eic_builder.errors import OptionError
from eic_builder.output_folder import check_out


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
