"""safe_names: any name from data becomes one harmless path component, injectively."""

from __future__ import annotations

from pathlib import Path

import pytest

from eic_builder.safe_names import MAX_COMPONENT_BYTES, child_path, path_component

HOSTILE = ["x/../../../esc", "../../esc", "..", ".", "/etc/passwd", "a\\b", "nul\x00x", ".hidden", "CON", "con.txt",
           "lpt9", "trail.", "trail ", "", "%2E", "%", "50%", "tab\there", "new\nline", "C:evil", "é/ü", "x" * 300,
           "é" * 200, "%~0123456789abcdef", "a:b*c?d<e>f|g\"h"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_is_one_safe_component(name: str) -> None:
    part = path_component(name)
    assert part not in ("", ".", "..")
    assert "/" not in part and "\\" not in part and "\x00" not in part and ":" not in part
    assert not part.startswith(".")
    assert not part.endswith((".", " "))
    assert part.split(".")[0].lower() not in {"con", "prn", "aux", "nul", "lpt9", "com1"}
    assert len(part.encode()) <= MAX_COMPONENT_BYTES
    assert all(c.isprintable() for c in part)


def test_ordinary_names_are_unchanged() -> None:
    for name in ["n01440764", "ILSVRC2012_val_00000001", "train", "val", "n01440764_18", "dining table", "café"]:
        assert path_component(name) == name
    assert path_component("ILSVRC2012_val_00000001", ".JPEG") == "ILSVRC2012_val_00000001.JPEG"


def test_escapes_by_hand() -> None:
    assert path_component("x/../esc") == "x%2F..%2Fesc"
    assert path_component("..") == "%2E%2E"
    assert path_component(".hidden") == "%2Ehidden"
    assert path_component("CON") == "%43ON"
    assert path_component("") == "%"
    assert path_component("50%") == "50%25"
    assert path_component("a.", ".xml") == "a..xml"  # only the whole name's last character matters
    assert path_component("..", ".xml") == "%2E..xml"


def test_the_escape_is_injective() -> None:
    names = HOSTILE + [path_component(n) for n in HOSTILE] + ["x" * 299, "x" * 301, "x" * 300 + "y"]
    parts = [path_component(n) for n in names]
    assert len(set(parts)) == len(set(names))
    assert len({path_component(n, ".json") for n in names}) == len(set(names))


def test_long_names_keep_their_suffix_and_differ_by_hash() -> None:
    a, b = path_component("x" * 300 + "a", ".JPEG"), path_component("x" * 300 + "b", ".JPEG")
    assert a != b and a.endswith(".JPEG") and b.endswith(".JPEG") and "%~" in a
    assert len(a.encode()) == MAX_COMPONENT_BYTES
    assert len(path_component("é" * 200).encode()) <= MAX_COMPONENT_BYTES


def test_child_path_stays_inside(tmp_path: Path) -> None:
    for name in HOSTILE:
        path = child_path(tmp_path / "out", "images", name, name, suffix=".JPEG")
        assert path.resolve().is_relative_to((tmp_path / "out").resolve())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")  # the file system takes every one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(ValueError, match="at least one name"):
        child_path(tmp_path)
    with pytest.raises(TypeError, match="must be a str, not NoneType"):
        path_component(None)  # type: ignore[arg-type]
