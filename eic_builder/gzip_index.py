"""Members of a ``.tar.gz`` read in place, by offset, through a seekable index of its gzip stream.

ImageNet-21K ships as ``winter21_whole.tar.gz`` (about 1.1 TB). gzip cannot seek, so without help
every later stage would have to decompress it once to disk. Instead the scan decompresses it once, in
parallel (``rapidgzip``), and keeps an index of the stream: checkpoints every :data:`INDEX_SPACING`
compressed bytes with the 32 KiB window each needs (stored sparse and compressed, gztool's format:
about 0.01 % of the archive). A member is then read by seeking to its offset in the decompressed
stream: decoding starts at the checkpoint before it, never at byte 0.

Where the index lives: ``<cache>/gzip-index/<hash of the archive's path>-<size>-<mtime_ns>.gzidx``
(``EIC_GZIP_INDEX_DIR``, else under ``EIC_CACHE_DIR``, else ``~/.cache/eic``), so it is found from
the archive alone and a changed archive never meets an old index. The scan manifest records, per
archive, the size, mtime and index it was read through (:func:`archive_record`); a reader of a member
checks the bytes it gets against the SHA-1 the scan recorded, so a wrong byte is an error, never data.

A ``RapidgzipFile`` left open when the interpreter exits aborts it: every file opened here is closed
by its owner, and :class:`IndexedGzip` closes its files at exit if nobody did.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from eic_builder.errors import ImageDataError, IndexFolderError, InputNotFoundError, first_line

INDEX_SPACING = 2 << 20  # compressed bytes between checkpoints: a read decodes at most this much first
INDEX_SUFFIX = ".gzidx"
ENV_INDEX_DIR = "EIC_GZIP_INDEX_DIR"


def _rapidgzip():
    try:
        import rapidgzip
    except ImportError as exc:  # a dependency of the package: only a broken install lacks it
        raise InputNotFoundError("reading a .tar.gz in place needs the rapidgzip package (pip install "
                                 "rapidgzip)") from exc
    return rapidgzip


def index_path(archive: str | os.PathLike[str]) -> Path:
    """Where the index of ``archive`` (as it is now: its size and mtime) is kept."""
    path = os.path.abspath(archive)
    st = os.stat(path)
    key = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return index_dir() / f"{key}-{st.st_size}-{st.st_mtime_ns}{INDEX_SUFFIX}"


def index_dir() -> Path:
    """``EIC_GZIP_INDEX_DIR``, else ``<cache>/gzip-index`` (``EIC_CACHE_DIR``, else ``~/.cache/eic``)."""
    from eic_builder.wordnet import cache_dir

    return Path(os.environ.get(ENV_INDEX_DIR) or cache_dir() / "gzip-index")


def archive_record(archive: str | os.PathLike[str]) -> dict[str, Any]:
    """What a scan manifest records of a ``.tar.gz`` it read: size, mtime and the index it built."""
    st = os.stat(archive)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "index": str(index_path(archive))}


def open_for_scan(archive: str | os.PathLike[str], workers: int):
    """The decompressed stream of ``archive`` for one sequential pass, decoded by ``workers`` threads; the
    caller closes it (a ``with`` block) after :func:`finish_scan`."""
    return _rapidgzip().RapidgzipFile(os.fspath(archive), parallelization=max(1, workers),
                                      chunk_size=INDEX_SPACING)


def finish_scan(stream, archive: str | os.PathLike[str]) -> Path:
    """After a whole pass over ``stream`` (from :func:`open_for_scan`): check the stream ended at the end of
    the file (rapidgzip ends a truncated gzip without a word) and keep its index; returns the index's path.

    Raises ``EOFError`` for a truncated archive."""
    size = os.stat(archive).st_size
    path = _export(stream, archive)  # a truncated archive's index still serves the members read before the end
    if stream.tell_compressed() < size * 8:
        raise EOFError(f"the gzip stream ends at byte {stream.tell_compressed() // 8:,} of {size:,}: truncated")
    return path


def check_index_dir() -> Path:
    """The index folder (:func:`index_dir`), made if missing; raises :class:`IndexFolderError` naming it and
    ``EIC_GZIP_INDEX_DIR`` when it cannot be written. A scan calls this before it decodes anything."""
    import tempfile

    folder = index_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise IndexFolderError(_unwritable(folder, exc)) from None
    return folder


def _unwritable(folder: Path, exc: OSError) -> str:
    return (f"cannot write the gzip seek index folder {folder} ({exc.strerror or exc}): a .tar.gz is read in "
            f"place through an index kept there; make it writable, or set {ENV_INDEX_DIR} to a writable folder")


def _export(stream, archive: str | os.PathLike[str]) -> Path:
    from eic_builder.atomic_files import temporary_sibling

    path = index_path(archive)
    tmp = temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream.export_index(os.fspath(tmp), _rapidgzip().IndexFormat.GZTOOL)
        os.replace(tmp, path)
    except OSError as exc:  # the folder, not the archive: one line naming it, never a corrupt_archive
        raise IndexFolderError(_unwritable(path.parent, exc)) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _close_all(files: dict[str, Any]) -> None:
    for stream, _ in files.values():
        stream.close()
    files.clear()


def _unreadable(archive: str, what: str) -> ImageDataError:
    return ImageDataError(f"{archive} cannot be read through its seek index {index_path(archive)} ({what}): the "
                          "archive changed since the scan, or the index is another archive's; delete the index "
                          "and scan the archive again")


class IndexedGzip:
    """Reads byte ranges of the decompressed streams of ``.tar.gz`` files through their indexes; one open
    file per archive, shared by threads under a lock (a seek and a read are one step)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[Any, threading.Lock]] = {}
        self._opening = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._files)

    def _open(self, archive: str) -> tuple[Any, threading.Lock]:
        with self._opening:
            found = self._files.get(archive)
            if found is None:
                index = index_path(archive)
                if not index.is_file():
                    raise InputNotFoundError(
                        f"{archive} has no seek index (looked for {index}): it changed since the scan, or the "
                        "cache was cleared; scan it again (the scan builds the index)")
                stream = _rapidgzip().RapidgzipFile(archive, parallelization=1, chunk_size=INDEX_SPACING)
                try:
                    stream.import_index(os.fspath(index))
                except Exception as exc:
                    stream.close()
                    raise InputNotFoundError(f"the seek index {index} of {archive} is damaged "
                                             f"({first_line(exc)[:160]}); delete it and scan the archive again") \
                        from None
                found = self._files[archive] = (stream, threading.Lock())
            return found

    def read(self, archive: str, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of the decompressed stream of ``archive`` (a path).

        The one checked read of a ``.tar.gz`` member: whatever goes wrong in decoding (an index of another
        archive, bytes changed since the scan with the size and mtime kept, a damaged index) is one
        :class:`ImageDataError` naming the archive and its index; the caller checks the bytes' hash."""
        stream, lock = self._open(archive)
        with lock:
            try:
                stream.seek(offset)
                data = stream.read(size)
            except (ValueError, RuntimeError, OSError, EOFError) as exc:
                raise _unreadable(archive, first_line(exc)[:160]) from None
        if len(data) != size:
            raise _unreadable(archive, f"its stream ends before {size} bytes at {offset}")
        return data

    def close(self) -> None:
        """Close every open archive (also done at exit)."""
        _close_all(self._files)
