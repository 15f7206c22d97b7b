"""The scan's decoded stream of a whole ``.tar.gz``, in its own process (:class:`DecodingProcess`, through a
small ring so that reads wrap round it and outgrow it) and in the scan's (:class:`DecodedInProcess`, small
archives): the exact stream, every byte before a fault, and the fault named."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pytest

from eic_builder.errors import DecoderProcessError
from eic_builder.gzip_index import DecodedInProcess, DecodingProcess, index_path
from eic_builder.scan.scanner import scan

# a decoder in its own process with a ring of 2 slots of 64 KiB, or one in this process
DECODERS = {"process": lambda path, workers: DecodingProcess(path, workers, slots=2, slot_bytes=64 << 10),
            "in-process": DecodedInProcess}


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


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_cut_stream_gives_every_byte_before_the_cut_then_eof(tmp_path: Path, decoder: str) -> None:
    whole = gzip.compress(_payload(600_000, seed=1), compresslevel=6)
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(whole[: len(whole) * 6 // 10])
    inflate = zlib.decompressobj(wbits=31)
    readable = inflate.decompress(path.read_bytes())  # what zlib gets out of the cut file
    assert len(readable) > 100_000
    got = []
    with DECODERS[decoder](path, 2) as stream, pytest.raises(EOFError, match="truncated"):
        while view := stream.read_view(4096):
            got.append(bytes(view))
    assert b"".join(got) == readable[: len(b"".join(got))] and len(b"".join(got)) >= len(readable) - 4096


@pytest.mark.parametrize("decoder", DECODERS)
def test_damaged_bytes_are_a_zlib_error(tmp_path: Path, decoder: str) -> None:
    whole = bytearray(gzip.compress(_payload(600_000, seed=2), compresslevel=6))
    whole[len(whole) // 2: len(whole) // 2 + 64] = bytes(64)
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(bytes(whole))
    with DECODERS[decoder](path, 2) as stream, pytest.raises(zlib.error, match="damaged compressed bytes"):
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


@pytest.mark.parametrize("cut", [None, 40])
def test_a_scan_through_the_decoding_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: int | None,
                                             ilsvrc_val_1300: Path) -> None:
    """The scan's path for large archives, taken here by a small one: every image kept reads back in place
    and equals its file; cut short, every image found is a named reject (no seek index), none kept."""
    import io
    import tarfile

    import eic_builder.gzip_index as gzip_index
    from eic_builder.dataset.manifest import open_manifest

    monkeypatch.setattr(gzip_index, "DECODER_PROCESS_BYTES", 0)
    photos = sorted((ilsvrc_val_1300 / "val").glob("*.JPEG"))[:40]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for photo in photos:
            tf.add(photo, arcname=f"winter21_whole/n01440764/{photo.name}")
    data = buffer.getvalue()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "winter21_whole.tar.gz").write_bytes(data if cut is None else data[: len(data) * cut // 100])
    summary = scan(tmp_path / "src", tmp_path / "m")
    with open_manifest(tmp_path / "m") as m:
        kept = {i: m.read_bytes(i) for i in m.image_ids}
        lost = [d for d in m.rejects["detail"].to_pylist() if "no seek index" in d]
    if cut is None:
        assert summary.rejects == 0 and kept == {p.stem: p.read_bytes() for p in photos}
    else:
        assert not kept and 0 < len(lost) < len(photos) and "corrupt_archive" in summary.reject_reasons


def test_a_file_rapidgzip_cannot_open_is_the_same_reject_in_either_decoder(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Not gzip at all: one corrupt_archive reject saying what rapidgzip said, whether the archive is decoded in
    a process of its own (large) or in the scan's (small)."""
    import eic_builder.gzip_index as gzip_index
    from eic_builder.dataset.manifest import read_manifest

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "winter21_whole.tar.gz").write_bytes(b"plain text, not gzip\n" * 100)
    details = []
    for threshold in (0, gzip_index.DECODER_PROCESS_BYTES):
        monkeypatch.setattr(gzip_index, "DECODER_PROCESS_BYTES", threshold)
        out = tmp_path / f"m{threshold}"
        summary = scan(tmp_path / "src", out)
        assert summary.reject_reasons == {"corrupt_archive": 1} and summary.images == 0
        details.append(read_manifest(out).rejects["detail"][0].as_py())
    process, in_process = details
    assert process.startswith("reading stopped: ") and in_process.startswith("reading stopped: ")
    assert process.split(": ")[1] == in_process.split(": ")[1]  # the same exception type
