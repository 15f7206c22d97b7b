"""Members of a ``.tar.gz`` read in place, by offset, through a seekable index of its gzip stream.

ImageNet-21K ships as ``winter21_whole.tar.gz`` (about 1.1 TB). gzip cannot seek, so without help
every later stage would have to decompress it once to disk. Instead the scan decompresses it once, in
parallel (``rapidgzip``; a large archive in a process of its own, :class:`DecodingProcess`, whose ring of
shared memory the scan parses in place), and keeps an index of the stream: checkpoints every
:data:`INDEX_SPACING` compressed bytes with the 32 KiB window each needs (stored sparse and compressed,
gztool's format: about 0.01 % of the archive). A member is then read by seeking to its offset in the decompressed
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

import contextlib
import hashlib
import io
import json
import mmap
import os
import subprocess
import sys
import threading
import weakref
import zlib
from pathlib import Path
from typing import Any

from eic_builder.errors import (
    DecoderProcessError,
    ImageDataError,
    IndexFolderError,
    InputNotFoundError,
    first_line,
)

INDEX_SPACING = 4 << 20  # compressed bytes between checkpoints: a read decodes at most this much first
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
    from eic_builder.cache_folder import cache_dir

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


class ViewStream(io.RawIOBase):
    """A read-only stream whose reads are views (:meth:`read_view`: the next ``n`` bytes, valid until the
    next read); ``readinto`` copies one, for readers that need a file object (tarfile)."""

    def readable(self) -> bool:
        return True

    def read_view(self, n: int) -> memoryview:
        raise NotImplementedError

    def readinto(self, buffer) -> int:
        view = self.read_view(len(buffer))
        buffer[: len(view)] = view
        return len(view)


class DecodingProcess(ViewStream):
    """The decompressed stream of ``archive`` for one sequential pass, decoded by ``workers`` rapidgzip
    threads in a process of its own (:mod:`eic_builder.gzip_decoder`, which keeps the seek index) into a
    ring of shared memory, :data:`RING_SLOTS` slots of :data:`RING_SLOT_BYTES`: the scan's thread, parsing
    and hashing members in Python, never holds up the decoding, which runs up to the ring's size ahead,
    and :meth:`read_view` hands out the ring's bytes without copying them.

    ``slots`` and ``slot_bytes`` size the ring (0: the defaults). The end of the stream raises what stopped
    the decoder, as the decoder raised it, after every byte before the fault: ``EOFError`` (truncated) or
    ``zlib.error`` (damaged bytes), as zlib tells them apart where rapidgzip failed; ``ValueError`` or
    ``RuntimeError`` (rapidgzip could not open it), :class:`IndexFolderError`, ``OSError``; a decoder that
    died without a word (killed, out of memory) is a :class:`DecoderProcessError`. Close it (a ``with``
    block): a decoder still running is stopped."""

    def __init__(self, archive: str | os.PathLike[str], workers: int, slots: int = 0, slot_bytes: int = 0) -> None:
        self.archive = os.fspath(archive)
        self._slots, self._slot_bytes = slots or RING_SLOTS, slot_bytes or RING_SLOT_BYTES
        self._ring_file = _shared_file(self._slots * self._slot_bytes)
        self._ring = mmap.mmap(self._ring_file.fileno(), self._slots * self._slot_bytes)
        self._view = memoryview(self._ring)
        status_read, status_write = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "eic_builder.gzip_decoder", self.archive, str(max(1, workers)),
                 str(self._ring_file.fileno()), str(self._slots), str(self._slot_bytes), str(status_write)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_child_env(),
                pass_fds=(status_write, self._ring_file.fileno()))
        except BaseException:
            os.close(status_read)
            self._close_ring()
            raise
        finally:
            os.close(status_write)
        self._status: int | None = status_read
        self._notices = self._process.stdout  # 4 bytes a slot filled, 0 at the end
        self._filled = 0  # bytes of the stream in the ring so far
        self._pos = 0  # bytes of the stream read
        self._returned = 0  # slots handed back
        self._ended = False
        self._copy = bytearray()  # for a read that wraps around the ring or is longer than it

    def read_view(self, n: int) -> memoryview:
        """The next ``n`` bytes of the stream (fewer at its end), valid until the next read: a view of the
        ring where they lie in one piece, else a copy."""
        self._hand_back(self._pos // self._slot_bytes)  # what the last view showed is done with
        size = self._slots * self._slot_bytes
        start = self._pos % size
        if start + n <= size:  # in one piece, and within the slots the decoder may fill (these and on)
            got = self._await(self._pos + n) - self._pos
            self._pos += got
            return self._view[start: start + got]
        if n > len(self._copy):
            self._copy = bytearray(n)  # a new one: views of the old stay valid
        out, got = memoryview(self._copy), 0
        while got < n:
            self._hand_back(self._pos // self._slot_bytes)
            start = self._pos % size
            want = min(n - got, size - start, self._slot_bytes - self._pos % self._slot_bytes)
            k = self._await(self._pos + want) - self._pos
            if not k:
                break
            out[got: got + k] = self._view[start: start + k]
            got, self._pos = got + k, self._pos + k
        return out[:got]

    def _await(self, end: int) -> int:
        """Wait until the stream up to byte ``end`` is in the ring, or it ended; returns min(end, filled).
        At an end the decoder's status is read, and its error raised."""
        while self._filled < end and not self._ended:
            notice = self._notices.read(4)
            k = int.from_bytes(notice, "little") if len(notice) == 4 else 0
            if k:
                self._filled += k
            else:
                self._ended = True
                self._raise_status()
        return min(end, self._filled)

    def _hand_back(self, slots: int) -> None:
        """Hand the decoder back the slots before slot number ``slots`` (counted from the stream's start)."""
        if slots > self._returned and self._process.poll() is None:
            with contextlib.suppress(OSError):  # a decoder that ended needs none
                self._process.stdin.write(bytes(slots - self._returned))
                self._process.stdin.flush()
        self._returned = max(self._returned, slots)

    def _raise_status(self) -> None:
        with os.fdopen(self._status, "rb") as f:
            self._status = None
            text = f.read().decode("utf-8", "replace")
        code = self._process.wait()
        try:
            status = json.loads(text)
        except ValueError:  # never a corrupt_archive: the archive may be sound
            raise DecoderProcessError(
                f"the process decoding {self.archive} ended with code {code} and no word (killed, or out of "
                "memory?); scan again (finished units are kept)") from None
        if status.get("ok"):
            return
        kind = _DECODER_ERRORS.get(status.get("error"), RuntimeError)
        raise kind(str(status.get("message") or status.get("error")))

    def close(self) -> None:
        """Stop the decoder if it still runs, and release its pipes and ring."""
        if self.closed:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        if self._status is not None:
            os.close(self._status)
            self._status = None
        self._close_ring()
        super().close()

    def _close_ring(self) -> None:
        if getattr(self, "_view", None) is not None:
            with contextlib.suppress(BufferError):  # a view still held elsewhere: the mapping goes with it
                self._view.release()
                self._ring.close()
        self._ring_file.close()


def _child_env() -> dict[str, str]:
    """This environment, with the folder this package is imported from first on ``PYTHONPATH``: the
    decoder imports it as the scan did, installed or not."""
    here = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here + (os.pathsep + path if path else "")}


def _shared_file(size: int):
    """An unnamed file of ``size`` bytes that a child process can map: memory (memfd) where the OS has it."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("eic-gzip-ring")
        os.ftruncate(fd, size)
        return os.fdopen(fd, "r+b", buffering=0)
    import tempfile

    f = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
    f.truncate(size)
    return f


RING_SLOTS = 32
RING_SLOT_BYTES = 4 << 20  # 128 MiB of decoded stream ahead of the scan at most


# what the decoding process may report, raised again here as the same type
_DECODER_ERRORS: dict[str | None, type[Exception]] = {
    "ValueError": ValueError, "RuntimeError": RuntimeError, "EOFError": EOFError,
    "IndexFolderError": IndexFolderError, "InputNotFoundError": InputNotFoundError, "OSError": OSError,
    "FileNotFoundError": FileNotFoundError, "PermissionError": PermissionError, "MemoryError": MemoryError,
    "error": zlib.error,
}


class _ZlibTail:
    """The decompressed stream of a gzip file read again with zlib from its start, past the ``skip`` bytes
    already handed on: where rapidgzip failed (``words``: the first line of its error). rapidgzip loses the
    bytes of its failing read and says the same of a cut file and of damaged bytes; zlib reads on to the
    fault and tells which, as the gzip module does: ``EOFError`` (truncated: every byte before the cut is
    good) or ``zlib.error`` (damaged bytes)."""

    def __init__(self, path: str, skip: int, words: str) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 - closed at the end of the stream, or with the process
        self.inflate = zlib.decompressobj(wbits=31)
        self.data, self.skip, self.words = b"", skip, words

    def readinto(self, view: memoryview) -> int:
        while True:
            if not self.data:
                self.data = self.file.read(1 << 20)
                if not self.data:
                    self.file.close()
                    if not self.inflate.eof:
                        raise EOFError("the gzip stream ends before its end-of-stream marker: truncated "
                                       f"({self.words})")
                    raise zlib.error(self.words)  # zlib read it all without fault: rapidgzip's error stands
                if self.inflate.eof:  # a further gzip member (concatenated files)
                    self.inflate = zlib.decompressobj(wbits=31)
            limit = min(self.skip, 1 << 20) if self.skip else len(view)
            try:
                out = self.inflate.decompress(self.data, limit)
            except zlib.error as damage:
                raise zlib.error(f"damaged compressed bytes: {damage}") from None
            if self.inflate.eof:
                self.data = self.inflate.unused_data
                if self.data:
                    self.inflate = zlib.decompressobj(wbits=31)
            else:
                self.data = self.inflate.unconsumed_tail
            if self.skip:
                dropped = min(self.skip, len(out))
                out, self.skip = out[dropped:], self.skip - dropped
            if out:
                view[: len(out)] = out
                return len(out)


class SalvagingStream:
    """rapidgzip's stream (``stream``, from :func:`open_for_scan`), and where it fails, zlib's
    (:class:`_ZlibTail`) from the same byte on: every byte before a fault, then ``EOFError`` (truncated) or
    ``zlib.error`` (damaged bytes)."""

    def __init__(self, stream, archive: str) -> None:
        self.stream, self.archive, self.pos, self.tail = stream, archive, 0, None

    def readinto(self, view: memoryview) -> int:
        if self.tail is None:
            try:
                n = self.stream.readinto(view)
                self.pos += n
                return n
            except (ValueError, RuntimeError) as exc:
                words = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
                self.tail = _ZlibTail(self.archive, self.pos, words)
        n = self.tail.readinto(view)
        self.pos += n
        return n


DECODER_PROCESS_BYTES = 64 << 20  # a smaller .tar.gz decodes in the scan's process: a process costs more than it saves


def open_decoded(archive: str | os.PathLike[str], workers: int) -> DecodingProcess | DecodedInProcess:
    """The decompressed stream of a whole ``.tar.gz`` for the scan's one pass (``read_view``, ``readinto``;
    a ``with`` block): in a :class:`DecodingProcess` from :data:`DECODER_PROCESS_BYTES` up, else in this
    process (a folder of thousands of small per-synset ``.tar.gz`` would start as many processes)."""
    if os.path.getsize(archive) >= DECODER_PROCESS_BYTES:
        return DecodingProcess(archive, workers)
    return DecodedInProcess(archive, workers)


class DecodedInProcess(ViewStream):
    """:class:`DecodingProcess`'s stream and errors, decoded in this process (small archives): rapidgzip
    through a :class:`SalvagingStream`, the seek index kept at the end. Raises what rapidgzip raises for a
    file it cannot open."""

    def __init__(self, archive: str | os.PathLike[str], workers: int) -> None:
        self.archive = os.fspath(archive)
        self._stream = open_for_scan(self.archive, workers)
        self._source = SalvagingStream(self._stream, self.archive)
        self._buffer = bytearray()
        self._ended = False

    def read_view(self, n: int) -> memoryview:
        """The next ``n`` bytes (fewer at the end), valid until the next read."""
        if n > len(self._buffer):
            self._buffer = bytearray(n)  # a new one: views of the old stay valid
        view, got = memoryview(self._buffer)[:n], 0
        while got < n and not self._ended:
            k = self._source.readinto(view[got:])
            if not k:
                self._ended = True
                finish_scan(self._stream, self.archive)
            got += k
        return view[:got]

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


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
