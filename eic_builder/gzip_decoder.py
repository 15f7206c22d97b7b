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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def decode(archive: str, threads: int, ring: memoryview, slots: int, slot_bytes: int) -> None:
    """Decode ``archive`` into the ``ring`` as the module says; raises what
    :func:`~eic_builder.gzip_index.finish_scan` raises, or where rapidgzip fails what
    :class:`~eic_builder.gzip_index.SalvagingStream` found. Returns early if the scan stops listening."""
    from eic_builder.gzip_index import SalvagingStream, finish_scan, open_for_scan

    free, filled = slots, 0
    with open_for_scan(archive, threads) as stream:
        source = SalvagingStream(stream, archive)
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
