"""Image dimensions from file headers, without decoding pixels.

A scan of millions of images cannot afford to decode them: this module reads
the JPEG frame header (SOF marker), the PNG ``IHDR`` chunk or the WebP ``VP8``/``VP8L``/``VP8X``
chunk, and checks that a JPEG ends with its end-of-image marker and a WebP holds the bytes its RIFF
header counts, which catches truncated downloads.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from eic_builder.rejects import Rejected

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WEBP_MAGIC = (b"RIFF", b"WEBP")  # bytes 0-3 and 8-11
# SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
# Entropy-coded data never holds FF D9 (FF is stuffed as FF 00), so an EOI in the
# last bytes means the file was written to its end. Some encoders pad after EOI, and
# many cameras append data after it: then the scan data is searched for the EOI.
_TAIL_BYTES = 1024
_READ_SIZE = 4096

EXTENSION_FORMATS = {".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: ``format`` ("JPEG", "PNG" or "WEBP"), size in pixels, colour channels."""

    format: str
    width: int
    height: int
    channels: int


# Pillow's decompression-bomb limit (2 x its warning threshold, about 13,000 x 13,000 pixels): an image
# larger than this is refused at scan and never decoded, since decoding it would take gigabytes.
MAX_PIXELS = 2 * 89_478_485


def check_pixels(header: ImageHeader) -> ImageHeader:
    """``header`` unchanged, or :class:`Rejected` ``image_too_large`` above :data:`MAX_PIXELS`."""
    if header.width * header.height > MAX_PIXELS:
        raise Rejected("image_too_large", f"{header.width}x{header.height} pixels is more than the "
                               f"{MAX_PIXELS:,} an image may have (decoding it would take gigabytes)")
    return header


def sniff_format(head: bytes) -> str | None:
    """The image format named by the first bytes of a file, or None."""
    if head.startswith(JPEG_MAGIC):
        return "JPEG"
    if head.startswith(PNG_MAGIC):
        return "PNG"
    if head[:4] == WEBP_MAGIC[0] and head[8:12] == WEBP_MAGIC[1]:
        return "WEBP"
    return None


def _jpeg_size(read_at: Callable[[int, int], bytes], head: bytes) -> ImageHeader:
    """Walk the marker segments from offset 2 to the first SOF; ``head`` holds the first bytes and
    ``read_at(n, pos)`` returns up to ``n`` bytes from offset ``pos``."""
    buf, base, pos = head, 0, 2  # buf holds the file's bytes [base, base + len(buf))
    while True:
        if pos + 10 > base + len(buf):  # 10 bytes cover a marker, its length and a frame header
            buf, base = read_at(_READ_SIZE, pos), pos
            if len(buf) < 4:
                raise Rejected("truncated", "JPEG ends before its frame header")
        i = pos - base
        if buf[i] != 0xFF:
            raise Rejected("corrupt_image", f"JPEG has no marker at byte {pos}")
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            raise Rejected("corrupt_image", "JPEG has no frame header before its scan data")
        if marker in _SOF_MARKERS:
            if len(buf) < i + 10:
                raise Rejected("truncated", "JPEG ends inside its frame header")
            _, height, width, channels = struct.unpack_from(">BHHB", buf, i + 4)
            if width == 0 or height == 0:
                raise Rejected("corrupt_image", f"JPEG frame header says {width}x{height}")
            return check_pixels(ImageHeader("JPEG", width, height, channels))
        length = (buf[i + 2] << 8) | buf[i + 3]
        if length < 2:
            raise Rejected("corrupt_image", f"JPEG marker FF{marker:02X} has length {length}")
        pos += 2 + length


def _eoi_after_scan(read_at: Callable[[int, int], bytes], pos: int = 2) -> bool:
    """Whether an end-of-image marker (FF D9) follows the image's first scan. A JPEG whose last bytes hold
    no FF D9 may carry trailing data after its end (common in real photos) or be truncated; only the
    scan data tells which. The segments before the scan are skipped by their lengths, so that an EXIF
    thumbnail's own FF D9 is not taken for the image's."""
    while True:
        seg = read_at(4, pos)
        if len(seg) < 4 or seg[0] != 0xFF:
            return False
        marker = seg[1]
        if marker == 0xFF:
            pos += 1
        elif marker in _STANDALONE:
            pos += 2
        elif marker == 0xD9:
            return False
        else:
            pos += 2 + ((seg[2] << 8) | seg[3])
            if marker == 0xDA:
                break
    carry = b""
    while chunk := read_at(1 << 20, pos):
        if b"\xff\xd9" in carry + chunk:  # entropy-coded data stuffs FF as FF 00: only the EOI is FF D9
            return True
        carry, pos = chunk[-1:], pos + len(chunk)
    return False


def _check_head(head: bytes, ext: str) -> str:
    """The format of an image whose first bytes are ``head``, checked against its extension."""
    expected = EXTENSION_FORMATS.get(ext)
    if not head:
        raise Rejected("empty_file", "zero-byte file")
    fmt = sniff_format(head)
    if fmt is None:
        raise Rejected("not_an_image", f"first bytes {head[:8]!r} are neither JPEG, PNG nor WebP")
    if expected is not None and fmt != expected:
        raise Rejected("wrong_format", f"{fmt} data in a {ext} file")
    return fmt


def _png_header(head: bytes) -> ImageHeader:
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise Rejected("truncated", "PNG ends before its IHDR chunk")
    width, height, _, colour = struct.unpack(">IIBB", head[16:26])
    if width == 0 or height == 0:
        raise Rejected("corrupt_image", f"PNG header says {width}x{height}")
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour, 0)
    return check_pixels(ImageHeader("PNG", width, height, channels))


def _webp_header(head: bytes, file_size: int) -> ImageHeader:
    """The size of a WebP from its first chunk (lossy ``VP8 ``, lossless ``VP8L``, extended ``VP8X``);
    ``truncated`` when the file holds fewer bytes than its RIFF header counts."""
    if len(head) < 30:
        raise Rejected("truncated", "WebP ends inside its header")
    riff_size = struct.unpack("<I", head[4:8])[0]
    if file_size < riff_size + 8:
        raise Rejected("truncated", f"WebP holds {file_size:,} bytes where its RIFF header counts {riff_size + 8:,}")
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", head[26:30]))
        channels = 3
    elif chunk == b"VP8L" and head[20] == 0x2F:
        bits = struct.unpack("<I", head[21:25])[0]
        width, height, channels = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 4
    elif chunk == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        channels = 4 if head[20] & 0x10 else 3
    else:
        raise Rejected("corrupt_image", f"WebP whose first chunk {chunk!r} is not VP8, VP8L or VP8X")
    if width == 0 or height == 0:
        raise Rejected("corrupt_image", f"WebP header says {width}x{height}")
    return check_pixels(ImageHeader("WEBP", width, height, channels))


def _check_jpeg_end(tail: bytes, read_at: Callable[[int, int], bytes]) -> None:
    if b"\xff\xd9" not in tail and not _eoi_after_scan(read_at):
        raise Rejected("truncated", "JPEG has no end-of-image marker (FF D9): truncated file")


def read_image_header(path: str | os.PathLike[str], check_end: bool = True) -> ImageHeader:
    """Read format and size of the image at ``path`` from its header.

    Raises :class:`Rejected` with reason ``empty_file``, ``not_an_image``,
    ``wrong_format`` (content does not match the extension), ``truncated``, ``corrupt_image``
    or ``image_too_large``. Raw ``os`` calls keep the per-file cost to a few syscalls.
    """
    ext = os.path.splitext(path)[1].lower()
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.read(fd, _READ_SIZE)
        fmt = _check_head(head, ext)
        if fmt == "PNG":
            return _png_header(head)
        if fmt == "WEBP":
            return _webp_header(head, os.fstat(fd).st_size)

        def read_at(n: int, pos: int) -> bytes:
            return os.pread(fd, n, pos)

        header = _jpeg_size(read_at, head)
        if check_end:
            if len(head) < _READ_SIZE:  # the first read reached the end of the file
                tail = head[-_TAIL_BYTES:]
            else:
                os.lseek(fd, -_TAIL_BYTES, os.SEEK_END)
                tail = os.read(fd, _TAIL_BYTES)
            _check_jpeg_end(tail, read_at)
        return header
    finally:
        os.close(fd)


def image_header_of_bytes(data: bytes | memoryview, name: str, check_end: bool = True) -> ImageHeader:
    """:func:`read_image_header` for an image already in memory (an archive member, a hashed file: bytes, or
    a memoryview of them, which only the few bytes read are copied from); ``name`` gives the extension the
    content must match."""
    ext = os.path.splitext(name)[1].lower()
    head = bytes(data[:_READ_SIZE])
    fmt = _check_head(head, ext)
    if fmt == "PNG":
        return _png_header(head)
    if fmt == "WEBP":
        return _webp_header(head, len(data))

    def read_at(n: int, pos: int) -> bytes:
        return bytes(data[pos : pos + n])

    header = _jpeg_size(read_at, head)
    if check_end:
        _check_jpeg_end(bytes(data[-_TAIL_BYTES:]), read_at)
    return header


def verify_image_bytes(data: bytes) -> tuple[int, int]:
    """:func:`verify_image` for an image in memory."""
    return verify_image(io.BytesIO(data))


@contextlib.contextmanager
def _native_stderr() -> Iterator[Callable[[], str]]:
    """Collect what native code writes to file descriptor 2 inside the block (libjpeg prints its warnings
    there: "Corrupt JPEG data: 18472 extraneous bytes before marker 0xd9"); yields a function that
    returns it. Python's own warnings are silenced inside, so that only the decoder's words count."""
    import tempfile
    import warnings

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read().decode("utf-8", "replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _verify_jpeg(data: bytes) -> tuple[int, int]:
    """Decode a JPEG with libjpeg (torchvision): a decoding error or a decoder warning (garbage entropy-coded
    data, a premature end of data) is corruption; Pillow decodes such files without a word."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    with _native_stderr() as said:
        try:
            image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
        except RuntimeError as exc:
            raise Rejected("corrupt_image", f"decoding failed: {str(exc).strip().splitlines()[0]}") from exc
        warned = said().strip()
    if warned:
        raise Rejected("corrupt_image", f"the JPEG decoder warned: {warned.splitlines()[0]}")
    return int(image.shape[-1]), int(image.shape[-2])


def verify_image(path: str | os.PathLike[str] | BinaryIO) -> tuple[int, int]:
    """Decode the whole image; return (width, height) or raise Rejected. JPEGs are decoded by libjpeg
    and its warnings count as corruption (:func:`_verify_jpeg`); other formats by Pillow."""
    from PIL import Image

    if not hasattr(path, "read"):
        try:
            with open(path, "rb") as f:
                path = io.BytesIO(f.read())
        except OSError as exc:
            raise Rejected("unreadable", str(exc)) from exc
    if path.read(3) == b"\xff\xd8\xff":
        path.seek(0)
        return _verify_jpeg(path.read())
    path.seek(0)
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except Exception as exc:  # Pillow raises many types for bad data
        raise Rejected("corrupt_image", f"decoding failed: {exc}") from exc
