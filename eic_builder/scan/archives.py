"""Tar archives as scan sources, read in place: nothing is extracted to disk.

What users download, and how each is read:

* ``fall11_whole.tar`` (ImageNet-21K, 1.31 TB): an uncompressed tar of per-synset
  uncompressed tars of JPEGs. Large tars are *listed* (their top-level headers
  only, seeking over the data), and each nested archive, or each run of at most
  :data:`RUN_MEMBERS` plain members, becomes one unit of work that a worker reads
  sequentially, each byte once. A folder of the per-synset tars works the same way.
* ``winter21_whole.tar.gz`` and ``Annotation.tar.gz``: a whole compressed file is
  one unit, decompressed once in parallel (rapidgzip) while a seek index of its
  gzip stream is built and kept (:mod:`eic_builder.gzip_index`), so that its members
  are read in place later like those of a plain tar. Archives nested inside it
  (``Annotation.tar.gz``'s per-synset ``<wnid>.tar.gz``) are streamed: their
  members have no offset (XMLs need none).

Every image member is hashed (SHA-1 of its bytes) and its header checked from
memory; its location is recorded so that later stages read it by seeking:
``archive`` (the physical file, relative to the scan root), ``offset`` (of the
member's data in that file, or in the decompressed stream of a ``.tar.gz``) and
``size`` in bytes. An image under a compressed layer *inside* an archive has no
offset (it can only be read by unpacking that layer). XML members are kept as
bytes and parsed later with the loose XMLs, once the format is known.

Bad input is reported like any bad file (see ``data_manifests/SCHEMA.md``):
a truncated tar or a gzip CRC error (``corrupt_archive``; members read before
the damage keep their own checks), member names with ``..`` or an absolute path
(``unsafe_member_name``; never extracted, so never a risk, but not scanned
either), a second member of the same name (``duplicate_member``) and archives
nested deeper than :data:`MAX_DEPTH` (``archive_too_deep``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import NamedTuple

from eic_builder.dataset.rows import RejectRow
from eic_builder.gzip_index import ViewStream
from eic_builder.imagesize import image_header_of_bytes
from eic_builder.rejects import Rejected
from eic_builder.scan.annotations import WNID_RE
from eic_builder.scan.hub import image_id_of
from eic_builder.scan.parquet_images import PARQUET_SUFFIX
from eic_builder.scan.samples import SAMPLE_SUFFIXES, SampleFacts, merge_facts, read_sample_member, sample_key

# Archive name endings and their kinds, longest first (".tar.gz" before ".tar" could be tested).
ARCHIVE_SUFFIXES = {".tar.gz": "tar.gz", ".tgz": "tar.gz", ".tar": "tar"}
_ARCHIVE_ENDINGS = tuple(ARCHIVE_SUFFIXES)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp")
# An uncompressed tar up to this size is one unit, read sequentially; a larger one is listed first
# and cut into units (per nested archive, or per run of plain members).
WHOLE_ARCHIVE_BYTES = 1 << 30
RUN_MEMBERS = 2000
MAX_DEPTH = 16
_READ_BUFFER = 1 << 20

# Exceptions that a damaged tar or gzip stream raises while it is read.
ARCHIVE_ERRORS = (tarfile.TarError, zlib.error, EOFError, OSError, ValueError)


SKIPPED_SYNSET = "per-synset archive of a class not in --classes (not read)"
SAMPLE_METADATA = "webdataset sample metadata (.json, .cls): read into its image's row"


def synset_of(name: str) -> str | None:
    """The wnid an image id or file name starts with (``n01440764_18``, ``dir/n01440764.tar``), else None."""
    base = strip_archive_suffix(name.rsplit("/", 1)[-1])[:9]
    return base if WNID_RE.match(base) else None


def wanted_synset(name: str, classes: frozenset[str] | None) -> bool:
    """Whether the archive or image ``name`` (``n01440764.tar``, ``dir/n01440764.tar.gz``, ``n01440764_18``)
    is to be read under ``--classes``: always without a class list, or when it names no synset."""
    synset = None if classes is None else synset_of(name)
    return synset is None or synset in classes


def archive_kind(name: str) -> str | None:
    """``"tar"``, ``"tar.gz"`` or None, from a file or member name."""
    low = name.lower()
    if not low.endswith(_ARCHIVE_ENDINGS):  # most names: one C-level test, for every member of an archive
        return None
    return next((kind for suffix, kind in ARCHIVE_SUFFIXES.items() if low.endswith(suffix)), None)


def strip_archive_suffix(name: str) -> str:
    """``n01440764.tar.gz`` -> ``n01440764`` (other names unchanged)."""
    low = name.lower()
    if not low.endswith(_ARCHIVE_ENDINGS):
        return name
    suffix = next((suffix for suffix in ARCHIVE_SUFFIXES if low.endswith(suffix)), "")
    return name[: len(name) - len(suffix)]


@dataclass(frozen=True)
class ImageProbe:
    """An image already read from an archive: where its bytes are, their hash, and what its header said
    (``reason``/``detail`` set when the header check failed)."""

    archive: str
    offset: int | None
    size: int
    sha1: str
    width: int
    height: int
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class ArchiveUnit:
    """One unit of archive work: a byte window of a physical archive, read sequentially.

    ``members`` is set for a run of plain members of a listed tar: their
    (name, data offset, size); otherwise the window holds a whole tar
    (``compression`` "tar" or "tar.gz") whose members carry the path ``prefix``.
    """

    archive: str  # physical file, relative to the scan root
    start: int
    length: int
    prefix: str  # display path of the window's content, e.g. "fall11_whole.tar/n01440764.tar"
    compression: str
    depth: int = 1
    members: tuple[tuple[str, int, int], ...] | None = None

    @property
    def n_bytes(self) -> int:
        """Bytes of archive the unit reads."""
        return self.length if self.members is None else sum(size for _, _, size in self.members)

    def key(self, stat: os.stat_result) -> str:
        """A name that changes when the unit or its archive file changes (for resuming)."""
        record = [self.archive, self.start, self.length, self.prefix, self.compression, self.members,
                  stat.st_size, stat.st_mtime_ns]
        return hashlib.sha1(json.dumps(record).encode()).hexdigest()[:20]


class MemberImage(NamedTuple):
    """An image member an archive unit read: its path (``archive/member``) and its :class:`ImageProbe`."""

    path: str
    probe: ImageProbe


@dataclass
class ArchiveEntries:
    """What the units of archives yielded.

    ``images``: :class:`MemberImage` rows;
    ``xmls``: path -> the XML's bytes; ``samples``: webdataset key -> what its ``.json``/``.cls`` members
    say (:mod:`eic_builder.scan.samples`); ``rejects``: rows of the rejects table; ``ignored``: counts by rule.
    """

    images: list[MemberImage] = field(default_factory=list)
    xmls: dict[str, bytes] = field(default_factory=dict)
    rejects: list[RejectRow] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    samples: dict[str, SampleFacts] = field(default_factory=dict)

    def add_sample(self, key: str, facts: SampleFacts) -> None:
        self.samples[key] = merge_facts(self.samples.get(key), facts)

    def extend(self, other: ArchiveEntries) -> None:
        self.images += other.images
        self.xmls.update(other.xmls)
        self.rejects += other.rejects
        self.ignored.update(other.ignored)
        for key, facts in other.samples.items():  # a sample's members may fall in two units of a listed tar
            self.add_sample(key, facts)

    def to_json(self) -> str:
        return json.dumps({"images": [[m.path, *astuple(m.probe)] for m in self.images],
                           "xmls": {k: v.decode("latin-1") for k, v in self.xmls.items()},
                           "rejects": self.rejects, "ignored": dict(self.ignored),
                           "samples": {k: f.as_list() for k, f in self.samples.items()}})

    @classmethod
    def from_json(cls, text: str) -> ArchiveEntries:
        doc = json.loads(text)
        return cls([MemberImage(r[0], ImageProbe(*r[1:])) for r in doc["images"]],
                   {k: v.encode("latin-1") for k, v in doc["xmls"].items()},
                   [RejectRow(*r) for r in doc["rejects"]], Counter(doc["ignored"]),
                   {k: SampleFacts(*v) for k, v in doc.get("samples", {}).items()})


class _Window(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes at ``start`` of an open file (no copy on open)."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self.fd, self.start, self.length, self.pos = fd, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.length - self.pos))
        data = os.pread(self.fd, n, self.start + self.pos) if n else b""
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def pread(self, n: int, offset: int) -> bytes:
        """``n`` bytes at ``offset`` of the window."""
        n = max(0, min(n, self.length - offset))
        return os.pread(self.fd, n, self.start + offset) if n else b""

    view = pread  # bytes of a file are read, never viewed

    def sub(self, offset: int, length: int) -> _Window:
        """The window of ``length`` bytes at ``offset`` of this one."""
        return _Window(self.fd, self.start + offset, length)


class _BytesWindow:
    """A window over bytes in memory (a member of a decompressed stream, read once), with the methods of
    :class:`_Window`: a tar in it is parsed as fast as one in a file, without copying it."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = memoryview(data)

    def read(self) -> bytes:
        return bytes(self.data)

    def pread(self, n: int, offset: int) -> bytes:
        return bytes(self.data[offset: offset + max(0, n)])

    def view(self, n: int, offset: int) -> memoryview:
        """:meth:`pread` without a copy: valid while the bytes under the window are."""
        return self.data[offset: offset + max(0, n)]

    def sub(self, offset: int, length: int) -> _BytesWindow:
        return _BytesWindow(self.data[offset: offset + length])

    def as_file(self) -> io.BytesIO:
        """A file object over a copy of the bytes (for tarfile, which reads the headers we leave to it)."""
        return io.BytesIO(self.data)


def _unsafe_name(name: str) -> bool:
    if ".." not in name and name[1:2] != ":" and not name.startswith(("/", "\\")):
        return False  # nearly every name: three C-level tests
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


class _Reader:
    """Reads the members of one unit into :class:`ArchiveEntries`."""

    def __init__(self, unit: ArchiveUnit, classes: frozenset[str] | None = None) -> None:
        self.unit = unit
        self.classes = classes  # --classes: per-synset archives of other synsets are passed over
        self.out = ArchiveEntries()
        self.checked: _CheckedStream | None = None  # the stream of a whole .tar.gz being read, if one is

    def member(self, path: str, name: str, data: bytes | memoryview, offset: int | None) -> None:
        low = name.lower()
        if low.endswith(IMAGE_SUFFIXES):
            sha1 = hashlib.sha1(data).hexdigest()
            try:
                header = image_header_of_bytes(data, name)
                probe = ImageProbe(self.unit.archive, offset, len(data), sha1, header.width, header.height)
            except Rejected as exc:
                probe = ImageProbe(self.unit.archive, offset, len(data), sha1, 0, 0, exc.reason, exc.detail)
            row = MemberImage(path, probe)
            self.out.images.append(row)
        elif low.endswith(".xml"):
            self.out.xmls[path] = bytes(data)  # kept: never a view of a buffer read again
        elif low.endswith(SAMPLE_SUFFIXES):
            self.out.add_sample(sample_key(path), read_sample_member(name, bytes(data)))
            self.out.ignored[SAMPLE_METADATA] += 1
        else:
            ext = os.path.splitext(name)[1].lower()
            self.out.ignored[f"not an image or annotation in an archive ({ext or 'no extension'})"] += 1

    def reject(self, path: str, reason: str, detail: str, image_id: str | None = None) -> None:
        self.out.rejects.append(RejectRow(path, image_id, "file", reason, detail))

    def members(self, found: Iterator[_Member], prefix: str, depth: int, base: int | None,
                window: _Window | None) -> None:
        """Read the members of one tar; ``base`` is the absolute offset of its byte 0 (None: unknown). With a
        ``window`` data is read by offset, else from each member's stream. A damaged tar raises one of
        :data:`ARCHIVE_ERRORS`; a damaged nested one is reported and skipped."""
        seen: set[str] = set()
        for member in found:
            path = f"{prefix}/{member.name}"
            if member.kind != "file":
                if member.kind != "dir":
                    self.out.ignored["not a regular file in an archive (link, device)"] += 1
                continue
            if _unsafe_name(member.name):
                self.reject(path, "unsafe_member_name", f"member name {member.name!r} escapes the archive; "
                            "it is reported, never extracted or scanned")
                continue
            if member.name in seen:
                self.reject(path, "duplicate_member", f"a second member named {member.name!r} in {prefix}",
                            image_id_of(path)[0])
                continue
            seen.add(member.name)
            offset = None if base is None else base + member.offset
            kind = archive_kind(member.name)
            if kind is not None and not wanted_synset(member.name, self.classes):
                self.out.ignored[SKIPPED_SYNSET] += 1  # in a stream its bytes still pass, unparsed, unhashed
            elif kind is not None:
                self.nested(member, path, kind, depth + 1, offset, window)
            elif member.name.lower().endswith((*IMAGE_SUFFIXES, ".xml", *SAMPLE_SUFFIXES)):
                data = member.stream().read() if window is None else window.view(member.size, member.offset)
                if len(data) != member.size:
                    raise tarfile.ReadError(f"unexpected end of data in member {member.name}")
                self.member(path, member.name, data, offset)
            else:
                self.member(path, member.name, b"", None)

    def nested(self, m: _Member, path: str, kind: str, depth: int, offset: int | None,
               window: _Window | None) -> None:
        if depth > MAX_DEPTH:
            self.reject(path, "archive_too_deep", f"archives nested {depth} deep (at most {MAX_DEPTH} are read)")
            return
        base = offset if kind == "tar" else None
        if window is None:  # inside a compressed layer: stream the member's bytes
            fileobj = m.stream()
            if isinstance(fileobj, _BytesWindow) and kind == "tar":  # read whole: parsed directly
                self.open_and_read(fileobj, kind, path, depth, base, fileobj)
            else:
                fileobj = fileobj.as_file() if isinstance(fileobj, _BytesWindow) else fileobj
                self.open_and_read(fileobj, kind, path, depth, base, None)
        else:
            sub = window.sub(m.offset, m.size)
            self.open_and_read(sub, kind, path, depth, base, sub if kind == "tar" else None)

    def _mark(self) -> tuple:
        return (len(self.out.images), set(self.out.xmls), len(self.out.rejects), Counter(self.out.ignored),
                dict(self.out.samples))

    def _restore(self, mark: tuple) -> int:
        """Forget what was read since ``mark``; returns how many images and annotations that was."""
        n_images, xmls, n_rejects, ignored, self.out.samples = mark
        added = [x for x in self.out.xmls if x not in xmls]
        dropped = len(self.out.images) - n_images + len(added)
        del self.out.images[n_images:]
        del self.out.rejects[n_rejects:]
        for x in added:
            del self.out.xmls[x]
        self.out.ignored = ignored
        return dropped

    def open_and_read(self, fileobj, kind: str, path: str, depth: int, base: int | None,
                      window: _Window | None, drain: bool = False, fast_stream: bool = False) -> None:
        """Read a tar (``kind`` "tar" or "tar.gz") over ``fileobj``. With a ``window`` (uncompressed) the
        headers are parsed directly and data read by offset; otherwise, and always when compressed, tarfile
        reads it as a stream, then the stream is read to its end when compressed or ``drain`` (so that a
        gzip's checks run). Damage is reported here, once, at ``path``."""
        mark = self._mark()
        try:
            if window is not None:
                try:
                    self.members(_ustar_members(window), path, depth, base, window)
                    return
                except _TarfileNeededError:  # pax or GNU long-name headers: tarfile reads them
                    self._restore(mark)
                fileobj = window.as_file() if isinstance(window, _BytesWindow) else window
                with tarfile.open(fileobj=fileobj, mode="r:", tarinfo=_RecordedTarInfo) as tf:
                    self.members(_tarfile_members(tf), path, depth, base, window)
                return
            if fast_stream:  # an uncompressed tar stream whose headers are parsed here (raises what it cannot)
                try:
                    self.members(_stream_members(fileobj), path, depth, base, None)
                except _TarfileNeededError:
                    self._restore(mark)
                    raise
                while fileobj.read(_READ_BUFFER):  # the rest of the stream, to its CRC
                    pass
                return
            if isinstance(fileobj, _Window):
                fileobj = io.BufferedReader(fileobj, _READ_BUFFER)
            # gzip.GzipFile, unlike tarfile's own "r|gz", checks the CRC and length at the end of the stream
            source = gzip.GzipFile(fileobj=fileobj, mode="rb") if kind == "tar.gz" else fileobj
            with tarfile.open(fileobj=source, mode="r|", bufsize=_READ_BUFFER, tarinfo=_RecordedTarInfo) as tf:
                self.members(_tarfile_members(tf), path, depth, base, None)
            if kind == "tar.gz" or drain:
                while source.read(_READ_BUFFER):  # the rest of the stream, to its CRC
                    pass
        except ARCHIVE_ERRORS as exc:
            # tarfile words a stream's own error its way ("ReadError: zlib error: ..."): the stream's first
            # error, where it kept one, says what happened
            outer = self.checked.pending if self.checked is not None else None
            if outer is not None and fileobj is not self.checked:
                raise  # the whole file's stream failed under this nested tar: reported once, for the file
            exc = outer or exc
            detail = f"reading stopped: {type(exc).__name__}: {exc}"
            if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
                # corrupted compressed bytes: no member of this layer can be trusted, wherever the damage is
                detail += f"; its {self._restore(mark)} images and annotations are left out"
            else:
                detail += "; members read before the damage were kept after their own checks"
            self.reject(path, "corrupt_archive", detail)


class _Member(NamedTuple):
    """One member of a tar: name, data offset (from the tar's byte 0) and size in bytes, and ``kind``
    (file, dir or other); ``stream`` opens its data where the tar is read as a stream. (A tuple: one is
    made for every member of a 1 TB archive.)"""

    name: str
    offset: int
    size: int
    kind: str
    stream: Callable[[], io.RawIOBase] | None = None


class _TarfileNeededError(Exception):
    """A header the direct parser leaves to tarfile (pax, GNU long names, sparse files)."""


_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
_KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"5": "dir", b"1": "other", b"2": "other", b"3": "other",
          b"4": "other", b"6": "other"}


def _number(field: bytes) -> int:
    """A tar header number: octal text, or base-256 when the first byte has its high bit set."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big") - (0x100 ** (len(field) - 1) if field[0] & 0x40 else 0)
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError as exc:
        raise tarfile.ReadError(f"invalid number {field!r} in a tar header") from exc


def _ustar_members(window: _Window) -> Iterator[_Member]:
    """The members of an uncompressed tar, from its ustar / v7 headers parsed directly: several times
    faster than tarfile's, which serves the rest (raises :class:`_TarfileNeededError`). Raises
    ``tarfile.ReadError`` for a tar that ends inside a header."""
    pos = 0
    while True:
        buf = window.pread(tarfile.BLOCKSIZE, pos)
        if buf == _ZERO_BLOCK:
            return
        if len(buf) < tarfile.BLOCKSIZE:
            raise tarfile.ReadError(f"the tar ends inside a header at byte {pos}: truncated")
        kind = _KINDS.get(buf[156:157])
        if kind is None:
            raise _TarfileNeededError
        if _number(buf[148:156]) != 256 + sum(buf) - sum(buf[148:156]):  # its own field counts as spaces
            raise _TarfileNeededError  # a signed checksum (old tars), or damage: tarfile tells which
        name = buf[:100].split(b"\0", 1)[0]
        if buf[257:262] == b"ustar" and buf[345] != 0:
            name = buf[345:500].split(b"\0", 1)[0] + b"/" + name
        size = _number(buf[124:136])
        yield _Member(name.decode("utf-8", "surrogateescape").rstrip("/"), pos + tarfile.BLOCKSIZE, size, kind)
        pos += tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _pax_records(data: bytes) -> dict[str, str]:
    """The ``key=value`` records of a pax extended header (``"%d %s=%s\\n"`` each)."""
    records, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        length = int(data[pos:space])
        key, _, value = data[space + 1: pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _stream_members(source) -> Iterator[_Member]:
    """The members of an uncompressed tar read as a stream (``source.read_view``: bytes valid until the
    next read), headers parsed here: ustar/v7, GNU long names and pax paths and sizes (others raise
    :class:`_TarfileNeededError`). A member's data is read only if its ``stream()`` is called (as a
    :class:`_BytesWindow`, valid until the next member is read), else passed over unparsed; offsets
    count from the stream's byte 0. tarfile's own stream reader copies its buffer on every read: several
    times slower on a tar of per-synset tars."""
    pos = 0
    left = 0  # bytes of the previous member (data and padding) still to pass
    names: dict[str, str] = {}  # from a GNU long-name or pax header, for the next member
    read_exact = source.read_view  # the next n bytes (fewer at the end), valid until the next read

    def skip(n: int) -> None:
        while n > 0:
            chunk = read_exact(min(n, 1 << 22))
            if not chunk:
                raise tarfile.ReadError(f"unexpected end of data at byte {pos - n}: truncated")
            n -= len(chunk)

    while True:
        skip(left)
        buf = bytes(read_exact(tarfile.BLOCKSIZE))
        if buf == _ZERO_BLOCK:
            return
        if len(buf) < tarfile.BLOCKSIZE:
            raise tarfile.ReadError(f"the tar ends inside a header at byte {pos}: truncated")
        if _number(buf[148:156]) != 256 + sum(buf[:148]) + sum(buf[156:]):
            raise _TarfileNeededError
        flag, size = buf[156:157], _number(buf[124:136])
        padded = -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        pos += tarfile.BLOCKSIZE
        if flag in (b"L", b"x", b"g"):  # the next member's long name, or pax records (global ones ignored)
            data = bytes(read_exact(padded))
            if len(data) < padded:
                raise tarfile.ReadError(f"unexpected end of data at byte {pos}: truncated")
            pos, left = pos + padded, 0
            if flag == b"L":
                names["path"] = data[:size].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif flag == b"x":
                names.update(_pax_records(data[:size]))
            continue
        kind = _KINDS.get(flag)
        if kind is None:
            raise _TarfileNeededError
        name = buf[:100].split(b"\0", 1)[0]
        if buf[257:262] == b"ustar" and buf[345] != 0:
            name = buf[345:500].split(b"\0", 1)[0] + b"/" + name
        text = names.get("path") or name.decode("utf-8", "surrogateescape")
        size = int(names["size"]) if "size" in names else size
        padded = -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        names.clear()
        state = {"left": padded}

        def stream(size: int = size, state: dict = state) -> _BytesWindow:
            data = read_exact(size)
            if len(data) < size:
                raise tarfile.ReadError(f"unexpected end of data in a member of {size} bytes: truncated")
            state["left"] -= size
            return _BytesWindow(data)

        yield _Member(text.rstrip("/"), pos, size, kind, stream)
        left = state["left"]
        pos += padded


def _tarfile_members(tf: tarfile.TarFile) -> Iterator[_Member]:
    """The members of a tar read by tarfile (streams, pax and GNU headers)."""
    for info in _members(tf):
        kind = "file" if info.isfile() else "dir" if info.isdir() else "other"
        yield _Member(info.name, info.offset_data, info.size, kind, lambda info=info: tf.extractfile(info))
    _check_end(tf)


class _RecordedTarInfo(tarfile.TarInfo):
    """A TarInfo that remembers, on its tar, the last header block read: tarfile ends an archive silently at
    a truncated or invalid header, and only the block itself tells that from the end-of-archive marker."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        buf = tarfile_.fileobj.read(tarfile.BLOCKSIZE)
        tarfile_.eic_last_block = buf
        obj = cls.frombuf(buf, tarfile_.encoding, tarfile_.errors)
        obj.offset = tarfile_.fileobj.tell() - tarfile.BLOCKSIZE
        return obj._proc_member(tarfile_)


def _check_end(tf: tarfile.TarFile) -> None:
    """Raise unless the tar ended at its end-of-archive marker (a zero block)."""
    last = getattr(tf, "eic_last_block", None)
    if last is not None and last != bytes(tarfile.BLOCKSIZE):
        what = "ends inside a header" if len(last) < tarfile.BLOCKSIZE else "holds an invalid header"
        raise tarfile.ReadError(f"the tar {what} at byte {tf.offset}: truncated or damaged")


def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of a tar in order, without keeping them all (a 1.3 TB tar has millions)."""
    while True:
        info = tf.next()
        if info is None:
            return
        tf.members = []  # tarfile remembers every member it read; we stream
        yield info


class _CheckedStream(ViewStream):
    """The decompressed stream of a whole ``.tar.gz`` as the scan reads it: a
    :func:`~eic_builder.gzip_index.open_decoded` stream (rapidgzip, in parallel, in its own process for a
    large archive), which remembers the first error of the stream so that it is reported once, for the
    file, whatever nested tar was being read.

    Where rapidgzip fails, the stream already told a truncated file from damaged bytes as the gzip module
    does (:class:`~eic_builder.gzip_index.SalvagingStream`: ``EOFError``, the members read before are kept;
    ``zlib.error``, none is trusted); a file rapidgzip cannot open at all raises its ``ValueError`` or
    ``RuntimeError``. The end of the stream checks that the whole file was read and keeps the seek index."""

    def __init__(self, stream, archive: str) -> None:
        self.stream, self.archive, self.pending = stream, archive, None

    def read_view(self, n: int) -> memoryview:
        """The next ``n`` bytes (fewer at the end), valid until the next read (see
        :meth:`~eic_builder.gzip_index.DecodingProcess.read_view`)."""
        if self.pending is not None:
            raise self.pending
        try:
            return self.stream.read_view(n)
        except (EOFError, zlib.error, ValueError, RuntimeError) as exc:  # what was read before stays read
            self.pending = exc
            raise


def _read_indexed_gzip(reader: _Reader, path: str, threads: int) -> None:
    """Read a whole ``.tar.gz`` file once, decoded by ``threads`` threads, keeping its seek index (see
    :mod:`eic_builder.gzip_index`): its members get offsets in the decompressed stream, readable in place.

    Kept means readable: rapidgzip writes an index only for a stream it decoded to its end, so when none
    was written (a download cut short) every member found becomes a ``corrupt_archive`` reject."""
    from eic_builder.gzip_index import index_path, open_decoded

    unit = reader.unit
    try:
        stream = open_decoded(path, threads)
    except (OSError, ValueError, RuntimeError) as exc:
        reader.reject(unit.archive, "corrupt_archive", f"reading stopped: {type(exc).__name__}: {exc}")
        return
    try:
        with stream:
            reader.checked = _CheckedStream(stream, path)
            reader.open_and_read(reader.checked, "tar", unit.prefix, unit.depth, 0, None, fast_stream=True)
    except _TarfileNeededError:  # headers only tarfile reads (sparse files, ...): once more, through it
        with open_decoded(path, threads) as stream:  # no BufferedReader: its reads would lose bytes at an error
            reader.checked = _CheckedStream(stream, path)
            reader.open_and_read(reader.checked, "tar", unit.prefix, unit.depth, 0, None, drain=True)
    if reader.out.images and not index_path(path).is_file():
        for row in reader.out.images:
            reader.reject(row.path, "corrupt_archive", f"{unit.archive} could not be decoded to its end, so no "
                          "seek index exists to read this member in place; download the archive again",
                          image_id=image_id_of(row.path)[0])
        reader.out.images.clear()


_SNIFFED_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


def _read_parquet(reader: _Reader, path: str) -> None:
    """Read a Parquet file with an Image column a row group at a time (:mod:`eic_builder.scan.parquet_images`):
    each row an image member at ``offset`` = its row, its class and id from its row."""
    from eic_builder.imagesize import sniff_format
    from eic_builder.scan.parquet_images import read_parquet_rows

    rel = reader.unit.archive
    for member, row, data, facts, problem in read_parquet_rows(path, rel):
        if problem is not None:
            reader.reject(rel, "unreadable", problem)
            return
        if facts is None:
            reader.out.ignored["Parquet file without an Image column (not an image table)"] += 1
            return
        if not data:
            reader.reject(member, "empty_file", f"row {row} of {rel} holds no image bytes")
            continue
        stem = member[: member.rfind(".")]
        member = stem + _SNIFFED_SUFFIX.get(sniff_format(data[:16]) or "", member[len(stem):])
        reader.member(member, member.rsplit("/", 1)[-1], data, row)
        reader.out.add_sample(sample_key(member), facts)


def read_unit(root: str, unit: ArchiveUnit, threads: int = 1,
              classes: frozenset[str] | None = None) -> ArchiveEntries:
    """Read one unit (in a worker process) into entries; a whole ``.tar.gz`` file is decoded by ``threads``
    threads and indexed for reading in place; nested per-synset archives of synsets not in ``classes`` (when
    given) are passed over."""
    reader = _Reader(unit, classes)
    path = os.path.join(root, unit.archive)
    if unit.compression == "parquet":
        _read_parquet(reader, path)
        return reader.out
    if unit.compression == "tar.gz" and unit.start == 0 and unit.members is None:
        _read_indexed_gzip(reader, path, threads)
        return reader.out
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        reader.reject(unit.archive, "unreadable", str(exc))
        return reader.out
    try:
        window = _Window(fd, unit.start, unit.length)
        if unit.members is not None:
            for name, offset, size in unit.members:
                data = window.pread(size, offset)
                if len(data) != size:
                    reader.reject(f"{unit.prefix}/{name}", "corrupt_archive", "member data ends early: truncated tar")
                    continue
                reader.member(f"{unit.prefix}/{name}", name, data, unit.start + offset)
        elif unit.compression == "tar":
            reader.open_and_read(window, "tar", unit.prefix, unit.depth, unit.start, window)
        else:  # a .tar.gz member of another archive: streamed, its members have no offset
            reader.open_and_read(window, "tar.gz", unit.prefix, unit.depth, None, None)
    finally:
        os.close(fd)
    return reader.out


@dataclass
class ArchivePlan:
    """The units of every archive of a scan, and what planning found on the way."""

    units: list[ArchiveUnit] = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)


def plan_archive(root: str | os.PathLike[str], rel: str, plan: ArchivePlan, whole_bytes: int | None = None) -> None:
    """Add the units of the archive ``rel`` (relative to ``root``) to ``plan``; an uncompressed tar larger
    than ``whole_bytes`` (default :data:`WHOLE_ARCHIVE_BYTES`) is listed and cut into units."""
    whole_bytes = WHOLE_ARCHIVE_BYTES if whole_bytes is None else whole_bytes
    path = Path(root) / rel
    try:
        size = path.stat().st_size
    except OSError as exc:
        plan.rejects.append(RejectRow(rel, None, "file", "unreadable", str(exc)))
        return
    kind = "parquet" if rel.lower().endswith(PARQUET_SUFFIX) else archive_kind(rel) or "tar"
    if kind in ("tar.gz", "parquet") or size <= whole_bytes:
        plan.units.append(ArchiveUnit(rel, 0, size, rel, kind))
        return
    run: list[tuple[str, int, int]] = []
    seen: set[str] = set()

    def flush() -> None:
        if run:
            plan.units.append(ArchiveUnit(rel, 0, size, rel, "tar", members=tuple(run)))
            run.clear()

    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tf:
            for info in _members(tf):
                member_path = f"{rel}/{info.name}"
                if not info.isfile():
                    if not info.isdir():
                        plan.ignored["not a regular file in an archive (link, device)"] += 1
                    continue
                if _unsafe_name(info.name):
                    plan.rejects.append(RejectRow(member_path, None, "file", "unsafe_member_name",
                                         f"member name {info.name!r} escapes the archive; reported, never extracted"))
                    continue
                if info.name in seen:
                    plan.rejects.append(RejectRow(member_path, image_id_of(member_path)[0], "file", "duplicate_member",
                                         f"a second member named {info.name!r} in {rel}"))
                    continue
                seen.add(info.name)
                inner = archive_kind(info.name)
                if inner is not None:
                    plan.units.append(ArchiveUnit(rel, info.offset_data, info.size, member_path, inner, depth=2))
                else:
                    run.append((info.name, info.offset_data, info.size))
                    if len(run) >= RUN_MEMBERS:
                        flush()
    except ARCHIVE_ERRORS as exc:
        plan.rejects.append(RejectRow(rel, None, "file", "corrupt_archive",
                             f"listing stopped: {type(exc).__name__}: {exc}; members listed before were kept"))
    flush()
