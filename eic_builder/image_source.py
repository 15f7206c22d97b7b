"""The one image reader of the toolkit: loose files and archive members alike, by the manifest's columns.

A manifest row locates its image by ``path`` (relative to the image root) and,
for an image inside an archive, by ``archive`` (the physical tar, relative to
the root), ``offset`` and ``size`` (bytes of the member's data). A member of
an uncompressed tar is read with one ``pread`` on a file descriptor kept open
per process, which is as fast as opening a loose file
(``benchmarks/bench_archive.py``); a member of a ``.tar.gz`` through the seek
index the scan built (:mod:`eic_builder.gzip_index`). Every image's bytes are
checked against the SHA-1 the scan recorded, where it recorded one.

The image root is resolved in one place for every stage: ``--root`` when
given, else the ``source_root`` the manifest records.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from eic_builder.errors import ImageDataError, InputNotFoundError, first_line

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class ImageRef:
    """Where an image's bytes are: a file at ``path``, or ``size`` bytes at ``offset`` of ``archive`` (of
    its decompressed stream for a ``.tar.gz``); ``sha1`` (hex), when the scan recorded it, checks the
    bytes read from a ``.tar.gz``."""

    path: str
    archive: str | None = None
    offset: int | None = None
    size: int | None = None
    sha1: str | None = None


REF_COLUMNS = ("path", "archive", "offset", "size")


def image_refs(images: pa.Table) -> list[ImageRef]:
    """The :class:`ImageRef` of every row of an images table, in order."""
    names = [*REF_COLUMNS, "sha1"] if "sha1" in images.column_names else list(REF_COLUMNS)
    cols = images.select(names).to_pydict()
    return [ImageRef(*row) for row in zip(*(cols[c] for c in names))]


# what Pillow and torchvision's decoders raise on bytes they cannot decode (Pillow's
# UnidentifiedImageError is an OSError; a truncated stream raises OSError or SyntaxError; torchvision
# raises RuntimeError)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, RuntimeError)


@contextlib.contextmanager
def decoding(what: str) -> Iterator[None]:
    """Decode an image inside this block: a decoder's error becomes one :class:`ImageDataError` naming
    ``what`` (the image id, its file, its manifest) instead of a traceback about a ``BytesIO``."""
    try:
        yield
    except DECODE_ERRORS as exc:
        raise ImageDataError(f"{what} cannot be decoded ({first_line(exc)}); its bytes changed since the scan: "
                             "scan it again, or leave it out with `eic-build filter`") from exc


class ImageReader:
    """Reads image bytes under ``root``; archives stay open (per process, so it is safe in DataLoader workers)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self._fds: dict[str, int | None] = {}  # None: a gzip-compressed archive, read through self._gz
        self._gz = None
        self._parquet = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {"root": self.root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"])

    def read(self, ref: ImageRef) -> bytes:
        """The bytes of the image ``ref``; raises :class:`InputNotFoundError` naming it when they cannot be
        read, and :class:`ImageDataError` when they are not the bytes the scan hashed (``ref.sha1``, recorded
        for every archive member and for loose files with ``scan --hash``): a file or archive changed since
        the scan, its size and mtime kept or not, is an error, never data."""
        if ref.archive is None:
            try:
                with open(os.path.join(self.root, ref.path), "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise InputNotFoundError(f"cannot read image {ref.path} under {self.root}: {exc.strerror}") from exc
            return self._checked(ref, data)
        if ref.offset is None or ref.size is None:
            raise InputNotFoundError(
                f"image {ref.path} lies under a compressed layer inside {ref.archive}, which cannot be read by "
                "offset; unpack that member (tar -xf) and scan the result")
        if ref.archive.lower().endswith(".parquet"):  # a row of an image table: offset is the row
            data = self._parquet_row(ref)
            return self._checked(ref, data)
        fd = self._archive_fd(ref)
        if fd is None:  # a .tar.gz: through its seek index
            data = self._gzip().read(os.path.join(self.root, ref.archive), ref.offset, ref.size)
        else:
            data = os.pread(fd, ref.size, ref.offset)
        if len(data) != ref.size:
            raise InputNotFoundError(f"archive {ref.archive} ends before image {ref.path} "
                                     f"({ref.size} bytes at {ref.offset}); has it changed since the scan?")
        return self._checked(ref, data)

    @staticmethod
    def _checked(ref: ImageRef, data: bytes) -> bytes:
        # about 0.1 ms for an ImageNet JPEG, a few % of decoding it: cheap insurance against a wrong byte
        if ref.sha1 is not None and hashlib.sha1(data).hexdigest() != ref.sha1:
            where = f"read from {ref.archive}" if ref.archive else "read"
            raise ImageDataError(f"image {ref.path} {where} is not the image the scan hashed: the "
                                 f"{'archive' if ref.archive else 'file'} changed since the scan; scan it again")
        return data

    def _parquet_row(self, ref: ImageRef) -> bytes:
        self._forget_if_forked()
        if self._parquet is None:
            from eic_builder.scan.parquet_images import ParquetImages

            self._parquet = ParquetImages()
        path = os.path.join(self.root, ref.archive)
        try:
            data = self._parquet.read(path, ref.offset)
        except (OSError, ValueError, IndexError) as exc:
            raise InputNotFoundError(f"cannot read image {ref.path} from row {ref.offset} of {ref.archive}: "
                                     f"{first_line(exc)[:160]}; has it changed since the scan?") from None
        if data is None or len(data) != ref.size:
            raise InputNotFoundError(f"row {ref.offset} of {ref.archive} is not the image {ref.path} the scan "
                                     "read; has the file changed since the scan?")
        return data

    def _gzip(self):
        if self._gz is None:
            from eic_builder.gzip_index import IndexedGzip

            self._gz = IndexedGzip()
        return self._gz

    def _forget_if_forked(self) -> None:
        if os.getpid() != self._pid:  # forked: descriptors are shared with the parent's file offsets
            self._fds, self._gz, self._parquet, self._pid = {}, None, None, os.getpid()

    def _archive_fd(self, ref: ImageRef) -> int | None:
        """The descriptor of an uncompressed archive, or None for a gzip-compressed one."""
        self._forget_if_forked()
        if ref.archive in self._fds:
            return self._fds[ref.archive]
        path = os.path.join(self.root, ref.archive)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise InputNotFoundError(f"cannot open archive {path} (image {ref.path}): {exc.strerror}") from exc
        if os.pread(fd, 2, 0) == _GZIP_MAGIC:
            os.close(fd)
            fd = None
        self._fds[ref.archive] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
        self._fds = {}
        if self._gz is not None:
            self._gz.close()
            self._gz = None
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
