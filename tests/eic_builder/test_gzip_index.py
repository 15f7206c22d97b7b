"""The scan's decoding process (:class:`eic_builder.gzip_index.DecodingProcess`): the exact stream, read
through a small ring so that reads wrap round it and outgrow it, and every byte before a fault."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pytest

from eic_builder.errors import DecoderProcessError
from eic_builder.gzip_index import DecodingProcess, index_path


@pytest.fixture(autouse=True)
def _index_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIC_GZIP_INDEX_DIR", str(tmp_path / "index"))


def _payload(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)  # half noise, half runs: neither all stored nor all tiny
    noise = rng.integers(0, 256, n // 2, dtype=np.uint8).tobytes()
    return noise + bytes(rng.integers(0, 4, n - n // 2, dtype=np.uint8))


def _read_all(stream: DecodingProcess, sizes: list[int]) -> bytes:
    out, k = [], 0
    while view := stream.read_view(sizes[k % len(sizes)]):
        out.append(bytes(view))
        k += 1
    return b"".join(out)


@pytest.mark.parametrize("sizes", [[512], [100_000, 7], [300_000]])
def test_the_stream_comes_whole_through_a_ring_it_wraps_and_outgrows(tmp_path: Path, sizes: list[int]) -> None:
    data = _payload(1_000_000)
    path = tmp_path / "a.tar.gz"
    path.write_bytes(gzip.compress(data, compresslevel=6))
    # 3 slots of 64 KiB: reads of 512 B wrap the ring; 300,000 B outgrow it (copied, never a view)
    with DecodingProcess(path, 2, slots=3, slot_bytes=64 << 10) as stream:
        assert _read_all(stream, sizes) == data
    assert index_path(path).is_file()  # the decoder kept the seek index


def test_a_cut_stream_gives_every_byte_before_the_cut_then_eof(tmp_path: Path) -> None:
    whole = gzip.compress(_payload(600_000, seed=1), compresslevel=6)
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(whole[: len(whole) * 6 // 10])
    inflate = zlib.decompressobj(wbits=31)
    readable = inflate.decompress(path.read_bytes())  # what zlib gets out of the cut file
    assert len(readable) > 100_000
    got = []
    with DecodingProcess(path, 2, slots=2, slot_bytes=64 << 10) as stream, \
            pytest.raises(EOFError, match="truncated"):
        while view := stream.read_view(4096):
            got.append(bytes(view))
    assert b"".join(got) == readable[: len(b"".join(got))] and len(b"".join(got)) >= len(readable) - 4096


def test_damaged_bytes_are_a_zlib_error(tmp_path: Path) -> None:
    whole = bytearray(gzip.compress(_payload(600_000, seed=2), compresslevel=6))
    whole[len(whole) // 2: len(whole) // 2 + 64] = bytes(64)
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(bytes(whole))
    with DecodingProcess(path, 2) as stream, pytest.raises(zlib.error, match="damaged compressed bytes"):
        while stream.read_view(1 << 20):
            pass


def test_a_file_that_is_no_gzip_and_a_reader_that_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "not.tar.gz"
    path.write_bytes(b"plain text, not gzip\n" * 100)
    with DecodingProcess(path, 1) as stream, pytest.raises((ValueError, RuntimeError, zlib.error)):
        stream.read_view(100)
    big = tmp_path / "big.tar.gz"
    big.write_bytes(gzip.compress(_payload(2_000_000, seed=3), compresslevel=1))
    stream = DecodingProcess(big, 2, slots=2, slot_bytes=64 << 10)
    assert len(stream.read_view(1000)) == 1000
    stream.close()  # the decoder waits on a full ring: stopped, nothing left running
    assert stream._process.poll() is not None


def test_a_decoder_that_dies_is_an_error_never_a_damaged_archive(tmp_path: Path) -> None:
    path = tmp_path / "sound.tar.gz"
    path.write_bytes(gzip.compress(_payload(2_000_000, seed=4), compresslevel=1))
    with DecodingProcess(path, 1, slots=2, slot_bytes=64 << 10) as stream:
        stream.read_view(1000)
        stream._process.kill()  # as the kernel's OOM killer would
        with pytest.raises(DecoderProcessError, match=r"sound.tar.gz ended with code -9 and no word"):
            while stream.read_view(1 << 16):
                pass
