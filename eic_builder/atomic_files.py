"""Files written whole or not at all: a temporary name beside the target, then ``os.replace``.

Every file the toolkit writes (Parquet tables, reports, JSON, checkpoints) goes through here, so a
full disk or a kill leaves the old file, if any, as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from eic_builder.errors import ManifestError


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path`` for writing it before a rename: ``.NAME.tmp-PID``, with NAME cut so
    that the whole stays within the file system's 255-byte limit (``path``'s own name may use all of it)."""
    name = path.name.encode()[:200].decode("utf-8", "ignore")
    return path.with_name(f".{name}.tmp-{os.getpid()}")


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it to ``path``. A full disk or a
    read-only folder raises :class:`ManifestError` and leaves the old file, if any, as it was."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write a file (a report, a plot) atomically: a temporary file in the same folder, then a rename."""
    return write_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`write_bytes` for text (UTF-8)."""
    return write_bytes(path, text.encode())


def write_folder_atomically(dest: Path, fill: Callable[[Path], object]) -> Path:
    """``fill(tmp)`` a temporary folder beside ``dest``, then rename it to ``dest``: readers see the whole
    folder or none. When another process put ``dest`` in place first, ours is dropped and theirs kept."""
    import shutil

    tmp = temporary_sibling(dest)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        fill(tmp)
        os.replace(tmp, dest)
    except OSError:
        if not dest.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
