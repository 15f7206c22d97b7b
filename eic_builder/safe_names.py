"""Names from data as path components: the one way a split, a label or an image id becomes a file name.

Split names, labels and image ids come from manifests, annotation files and options, which anyone can
write: ``x/../../../esc`` or a COCO category named ``../../esc`` must never become a path outside
``--out``. Every writer that puts such a name into a file or folder name goes through
:func:`path_component` (or :func:`child_path`), which escapes it into one harmless component:

* kept as it is: letters and digits (any script), and ``- _ . , + = @ ( ) [ ] { } ~ ! # $ & ' ;`` and space;
* every other character (``/``, ``\\``, ``%``, ``:``, NUL and other control characters, ``*``, ``?``, ...)
  becomes ``%XX`` per UTF-8 byte, as in URLs, so the escape is injective: two names never share a file;
* a leading ``.`` (``.``, ``..``, hidden files), a trailing ``.`` or space (dropped by Windows) and the
  first letter of a name reserved on Windows (``CON``, ``NUL``, ``COM1``, ...) are escaped the same way;
* the empty name is ``%`` (never produced otherwise);
* a component longer than :data:`MAX_COMPONENT_BYTES` keeps its first bytes and ends in ``%~`` and 16 hex
  digits of the name's SHA-1 (``%~`` is never produced otherwise).

Ordinary names (``n01440764``, ``ILSVRC2012_val_00000001``, ``train``) are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from eic_builder.errors import OptionError

MAX_COMPONENT_BYTES = 255  # the file-name limit of ext4, XFS, APFS and NTFS (in bytes or UTF-16 units)
_KEEP_PUNCTUATION = frozenset("-_.,+=@()[]{}~!#$&'; ")
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_HASHED_TAIL = 2 + 16  # "%~" and 16 hex digits


def _escape_char(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def _escape(text: str, leading: bool) -> str:
    chars = [c if (c.isalnum() and c.isprintable()) or c in _KEEP_PUNCTUATION else _escape_char(c) for c in text]
    if leading and chars and chars[0] == ".":
        chars[0] = _escape_char(".")
    return "".join(chars)


def path_component(name: str, suffix: str = "") -> str:
    """``name`` (then ``suffix``, e.g. ``".json"`` or an image's extension) as one safe file or folder name.

    Both parts are escaped (see the module's doc); the result holds no separator, is never ``.``,
    ``..``, hidden or reserved, and is at most :data:`MAX_COMPONENT_BYTES` bytes long. Injective on
    ``(name, suffix)`` pairs of one suffix.
    """
    if not isinstance(name, str):
        raise TypeError(f"a name for a path must be a str, not {type(name).__name__}")
    stem = _escape(name, leading=True) if name else "%"
    if _RESERVED.match(stem):
        stem = _escape_char(stem[0]) + stem[1:]
    tail = _escape(suffix, leading=False)
    if stem[-1] in ". " and not tail:
        stem = stem[:-1] + _escape_char(stem[-1])
    if tail and tail[-1] in ". ":
        tail = tail[:-1] + _escape_char(tail[-1])
    if len((stem + tail).encode()) > MAX_COMPONENT_BYTES:
        budget = MAX_COMPONENT_BYTES - _HASHED_TAIL - len(tail.encode())
        if budget < 1:
            raise OptionError(f"suffix {suffix!r} is too long for a file name ({len(tail.encode())} bytes)")
        kept = stem.encode()[:budget].decode("utf-8", "ignore")
        kept = re.sub(r"%[0-9A-F]?$", "", kept)  # never end inside an escape
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        stem = f"{kept}%~{digest}"
    return stem + tail


def child_path(root: str | os.PathLike[str], *names: str, suffix: str = "") -> Path:
    """``root`` / each of ``names`` as a :func:`path_component` (``suffix`` on the last): a path that
    stays inside ``root`` whatever the names hold."""
    if not names:
        raise ValueError("child_path needs at least one name")
    parts = [path_component(n) for n in names[:-1]] + [path_component(names[-1], suffix)]
    path = Path(root).joinpath(*parts)
    base = os.path.abspath(root)
    if os.path.commonpath([base, os.path.abspath(path)]) != base:  # cannot happen after escaping: a last guard
        raise OptionError(f"refusing to write {path}: it lies outside {root}")
    return path
