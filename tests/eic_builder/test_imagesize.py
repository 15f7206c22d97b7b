from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from eic_builder.imagesize import ImageHeaderError, read_image_header, verify_image


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
        with pytest.raises(ImageHeaderError) as info:
            read_image_header(tmp_path / name)
        assert info.value.reason == reason, name


def test_verify_decodes(tmp_path: Path) -> None:
    assert verify_image(_jpeg(tmp_path / "ok.jpg", (10, 20))) == (10, 20)
    full = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "bad.jpg").write_bytes(full[:200] + b"\x00" * 10)
    with pytest.raises(ImageHeaderError, match="decoding failed"):
        verify_image(tmp_path / "bad.jpg")


def test_real_imagenet_headers(ilsvrc_val_1300: Path) -> None:
    from PIL import Image as PILImage

    files = sorted((ilsvrc_val_1300 / "val").glob("*.JPEG"))[:50]
    for f in files:
        h = read_image_header(f)
        with PILImage.open(f) as im:
            assert (h.width, h.height) == im.size == (227, 227)
