"""Putting image files where an export format expects them: symbolic links to loose files, or copies
(``--materialize``) of loose files and archive members alike.

Copies are resumable: each is written under a temporary name and renamed, so a file present at its
final name is complete; a rerun keeps every file whose size is the source's and writes the rest.
The free disk space is checked against the bytes still to write before the first one is.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eic_builder.atomic_files import write_atomically
from eic_builder.errors import InputNotFoundError, OptionError
from eic_builder.export.source import ExportImage
from eic_builder.image_source import ImageReader
from eic_builder.progress import progress

DISK_MARGIN = 64 << 20  # bytes left free beyond what the copies need: the annotation files, the file system's own


@dataclass
class Placement:
    """What placing the image files did: files written now, files kept from an earlier run, bytes written."""

    written: int = 0
    kept: int = 0
    bytes_written: int = 0

    def __iadd__(self, other: Placement) -> Placement:
        self.written += other.written
        self.kept += other.kept
        self.bytes_written += other.bytes_written
        return self


def _source_size(image: ExportImage, root: str) -> int:
    if image.ref.archive is not None:
        return int(image.ref.size or 0)
    return os.stat(os.path.join(root, image.ref.path)).st_size


def check_loose_files(images: Sequence[ExportImage], root: str) -> None:
    """Raise :class:`InputNotFoundError` naming the first of ``images`` whose loose file is gone since the scan."""
    missing = [image for image in images
               if image.ref.archive is None and not os.path.isfile(os.path.join(root, image.ref.path))]
    if missing:
        first = missing[0]
        raise InputNotFoundError(f"{len(missing):,} image file(s) of the manifest are gone since the scan, e.g. "
                                 f"{first.image_id!r} ({os.path.join(root, first.ref.path)}); scan the images again "
                                 "(or give `root` where they are now) before exporting")


def link_images(images: Sequence[ExportImage], dests: Sequence[Path], root: str) -> Placement:
    """Make each ``dests[i]`` a symbolic link to the loose file of ``images[i]`` (absolute, so the
    export can move); a link already pointing there is kept."""
    done = Placement()
    check_loose_files(images, root)  # a dangling link would pass for an exported image until a trainer opens it
    for image, dest in zip(images, dests):
        target = os.path.abspath(os.path.join(root, image.ref.path))
        if dest.is_symlink() and os.readlink(dest) == target:
            done.kept += 1
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        os.symlink(target, dest)
        done.written += 1
    return done


def _free_bytes(folder: Path) -> int:
    existing = folder
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def materialize_images(images: Sequence[ExportImage], dests: Sequence[Path], root: str) -> Placement:
    """Copy the bytes of each ``images[i]`` (a loose file or an archive member) to ``dests[i]``, once.

    Raises :class:`OptionError` before writing anything when the disk lacks the space the copies
    still to make need (plus :data:`DISK_MARGIN`).
    """
    done = Placement()
    check_loose_files(images, root)
    todo: list[tuple[ExportImage, Path, int]] = []
    for image, dest in zip(images, dests):
        size = _source_size(image, root)
        if dest.is_file() and not dest.is_symlink() and dest.stat().st_size == size:
            done.kept += 1
        else:
            todo.append((image, dest, size))
    if not todo:
        return done
    need = sum(size for _, _, size in todo)
    free = _free_bytes(todo[0][1].parent)
    if need + DISK_MARGIN > free:
        raise OptionError(f"`materialize` needs {need / 1e9:.2f} GB for {len(todo):,} images but "
                          f"{todo[0][1].parent} has {free / 1e9:.2f} GB free; free some space or choose another `out`")
    reader = ImageReader(root)
    try:
        for image, dest, size in progress(todo, desc="materialize", unit="img"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink():  # a link from an export without --materialize: replaced by the file
                dest.unlink()
            if image.ref.archive is None:
                source = os.path.join(root, image.ref.path)
                write_atomically(dest, lambda tmp, source=source: shutil.copyfile(source, tmp))
            else:
                data = reader.read(image.ref)
                write_atomically(dest, lambda tmp, data=data: tmp.write_bytes(data))
            done.written += 1
            done.bytes_written += size
    finally:
        reader.close()
    return done
