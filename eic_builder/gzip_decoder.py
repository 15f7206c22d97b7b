"""The decoding process of a ``.tar.gz`` scan: rapidgzip decodes the archive in a process of its own.

Run as ``python -m eic_builder.gzip_decoder ARCHIVE THREADS RING_FD SLOTS SLOT_BYTES STATUS_FD`` by
:class:`eic_builder.gzip_index.DecodingProcess`. The decompressed stream goes into a ring of ``SLOTS``
slots of ``SLOT_BYTES`` in shared memory (the file ``RING_FD``), filled in order, each to its end but
the last: byte ``p`` of the stream lies at ``p % (SLOTS * SLOT_BYTES)`` of the ring. For each slot filled
it writes the bytes it holds to standard output (4 bytes, little-endian), then 0 at the end of the
stream; it fills a slot again only after the scan handed it back (one byte on standard input per slot,
in order). At the end it keeps the seek index (:func:`eic_builder.gzip_index.finish_scan`) and writes one
JSON line to ``STATUS_FD``: ``{"ok": true}``, or ``{"error": TYPE, "message": ...}`` naming what stopped it.

Why a process: rapidgzip's reading thread takes the GIL many times a read (to check for signals), so in
the scan's own process every member parsed or hashed in Python held up the decoding. Why shared memory:
the scan hashes and parses the members where the decoder wrote them, without copying a pipe's bytes.
"""

from __future__ import annotations

import json
import mmap
import os
import sys
import zlib


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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


class _Source:
    """rapidgzip's stream, and where it fails, zlib's (:class:`_ZlibTail`) from the same byte on."""

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


def decode(archive: str, threads: int, ring: memoryview, slots: int, slot_bytes: int) -> None:
    """Decode ``archive`` into the ``ring`` as the module says; raises what
    :func:`~eic_builder.gzip_index.finish_scan` raises, or where rapidgzip fails what :class:`_ZlibTail`
    found. Returns early if the scan stops listening."""
    from eic_builder.gzip_index import finish_scan, open_for_scan

    free, filled = slots, 0
    with open_for_scan(archive, threads) as stream:
        source = _Source(stream, archive)
        while True:
            while not free:
                returned = os.read(0, 4096)
                if not returned:  # the scan stopped reading
                    return
                free += len(returned)
            start = (filled % slots) * slot_bytes
            view, got = ring[start: start + slot_bytes], 0
            try:
                while got < slot_bytes and (n := source.readinto(view[got:])):
                    got += n
            finally:
                if got:  # also before an error: the bytes before the fault are the scan's
                    _write_all(1, got.to_bytes(4, "little"))
                    filled, free = filled + 1, free - 1
            if got < slot_bytes:
                break
        finish_scan(stream, archive)
    _write_all(1, (0).to_bytes(4, "little"))


def main(argv: list[str] | None = None) -> int:
    archive, threads, ring_fd, slots, slot_bytes, status_fd = (argv if argv is not None else sys.argv[1:])
    slots_, slot_bytes_ = int(slots), int(slot_bytes)
    status: dict = {"ok": True}
    try:
        # never closed here: views of it live on in a traceback; the process's end unmaps it
        ring = mmap.mmap(int(ring_fd), slots_ * slot_bytes_)
        decode(archive, int(threads), memoryview(ring), slots_, slot_bytes_)
    except BaseException as exc:  # every failure is reported to the scan, which words it
        status = {"error": type(exc).__name__, "message": str(exc)}
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # closes the notices' pipe (the scan reads the status next); print() stays harmless
        os.close(devnull)
        with os.fdopen(int(status_fd), "w") as f:
            f.write(json.dumps(status) + "\n")
    except OSError:  # the scan is gone
        return 1
    return 0 if status.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
