from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from eic_builder.imagesize import read_image_header, verify_image
from eic_builder.rejects import Rejected


def _jpeg(path: Path, size=(37, 21), mode="RGB", **kw) -> Path:
    Image.new(mode, size, 128 if mode == "L" else None).save(path, "JPEG", **kw)
    return path


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1), ("CMYK", 4)])
def test_jpeg_header_size_and_channels(tmp_path: Path, mode: str, channels: int) -> None:
    h = read_image_header(_jpeg(tmp_path / "a.JPEG", (37, 21), mode))
    assert (h.format, h.width, h.height, h.channels) == ("JPEG", 37, 21, channels)


def test_progressive_jpeg_and_exif(tmp_path: Path) -> None:
    im = Image.new("RGB", (64, 48))
    exif = Image.Exif()
    exif[0x010F] = "camera" * 200  # a long APP1 segment before the frame header
    im.save(tmp_path / "p.jpg", "JPEG", progressive=True, exif=exif)
    h = read_image_header(tmp_path / "p.jpg")
    assert (h.width, h.height) == (64, 48)


def test_png_header(tmp_path: Path) -> None:
    Image.new("RGBA", (5, 9)).save(tmp_path / "a.png")
    h = read_image_header(tmp_path / "a.png")
    assert (h.format, h.width, h.height, h.channels) == ("PNG", 5, 9, 4)


def test_bad_files(tmp_path: Path) -> None:
    (tmp_path / "empty.JPEG").write_bytes(b"")
    (tmp_path / "text.JPEG").write_text("hello, not an image")
    Image.new("RGB", (4, 4)).save(tmp_path / "png.JPEG", "PNG")
    full = _jpeg(tmp_path / "full.JPEG", (200, 100)).read_bytes()
    (tmp_path / "cut.JPEG").write_bytes(full[: len(full) // 2])
    (tmp_path / "header_only.JPEG").write_bytes(full[:20])
    cases = {"empty.JPEG": "empty_file", "text.JPEG": "not_an_image", "png.JPEG": "wrong_format",
             "cut.JPEG": "truncated", "header_only.JPEG": "truncated"}
    for name, reason in cases.items():
        with pytest.raises(Rejected) as info:
            read_image_header(tmp_path / name)
        assert info.value.reason == reason, name


def test_verify_decodes(tmp_path: Path) -> None:
    assert verify_image(_jpeg(tmp_path / "ok.jpg", (10, 20))) == (10, 20)
    full = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "bad.jpg").write_bytes(full[:200] + b"\x00" * 10)
    with pytest.raises(Rejected, match="decoding failed"):
        verify_image(tmp_path / "bad.jpg")


def test_real_imagenet_headers(ilsvrc_val_1300: Path) -> None:
    from PIL import Image as PILImage

    files = sorted((ilsvrc_val_1300 / "val").glob("*.JPEG"))[:50]
    for f in files:
        h = read_image_header(f)
        with PILImage.open(f) as im:
            assert (h.width, h.height) == im.size == (227, 227)


def _noisy_jpeg(size=(80, 60), seed=0) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, "JPEG", quality=90)
    return buf.getvalue()


def test_trailing_bytes_after_the_end_are_not_truncation(tmp_path: Path) -> None:
    """Cameras append data after FF D9; a truncated file has no FF D9 after its scan, even when an EXIF
    thumbnail (a whole JPEG inside APP1) holds one."""
    from eic_builder.imagesize import image_header_of_bytes

    data = _noisy_jpeg()
    trailed = data + b"\x00TRAILER" * 1000  # 8 kB after the end marker, beyond the tail that is read first
    (tmp_path / "t.jpg").write_bytes(trailed)
    assert (read_image_header(tmp_path / "t.jpg").width, image_header_of_bytes(trailed, "t.jpg").height) == (80, 60)
    thumb = _noisy_jpeg((16, 12), seed=1)
    app1 = b"Exif\x00\x00" + thumb
    with_thumb = data[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + data[2:]
    (tmp_path / "ok.jpg").write_bytes(with_thumb)
    assert read_image_header(tmp_path / "ok.jpg").width == 80
    cut = with_thumb[: len(with_thumb) - 500] + b"\x00" * 2000  # truncated, then padded past the tail window
    (tmp_path / "cut.jpg").write_bytes(cut)
    for check in (lambda: read_image_header(tmp_path / "cut.jpg"), lambda: image_header_of_bytes(cut, "c.jpg")):
        with pytest.raises(Rejected, match="no end-of-image marker") as info:
            check()
        assert info.value.reason == "truncated"


def test_zero_size_png_is_corrupt(tmp_path: Path) -> None:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 40
    (tmp_path / "z.png").write_bytes(png)
    with pytest.raises(Rejected, match=r"PNG header says 0x0") as info:
        read_image_header(tmp_path / "z.png")
    assert info.value.reason == "corrupt_image"


def test_decompression_bombs_are_refused_from_the_header(tmp_path: Path) -> None:
    """A 60000x60000 JPEG header is rejected at scan and never decoded (a decode would take ~10 GiB)."""
    import io

    import torch

    from eic_builder.errors import FormatError
    from eic_builder.image_batches import decode_cpu

    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5: sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    with pytest.raises(Rejected, match=r"60000x60000 pixels is more than") as info:
        read_image_header(tmp_path / "bomb.jpg")
    assert info.value.reason == "image_too_large"
    with pytest.raises(FormatError, match="refused to decode an image: 60000x60000"):
        decode_cpu(torch.frombuffer(bytearray(data), dtype=torch.uint8))
