"""The options of ``scan`` (torch-free and light: the CLI reads its defaults from here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eic_builder.errors import OptionError


@dataclass(frozen=True)
class ScanOptions:
    """The knobs of ``scan``.

    ``fmt`` is one of :data:`~eic_builder.scan.layout.FORMATS` (``auto`` detects it); ``split`` picks the
    split to scan (see :func:`~eic_builder.scan.layout.select_split`); ``verify_images`` decodes every image
    instead of reading its header; ``workers`` processes (None: one per core). ``known_wnids``, when given,
    is the set of WordNet noun ids a box's wnid must belong to, or a function returning it, called only
    when the format labels boxes with wnids (ILSVRC XML, LOC CSV). ``hash_files`` records the SHA-1 of
    loose image files too (archive members always get one). ``shard`` (K, N) scans only the images whose
    synset falls in shard K of N (:func:`~eic_builder.scan.scanner.shard_of`), for scans split over
    machines. ``classes`` (wnids) keeps the per-synset archives (``<wnid>.tar``) and images
    (``<wnid>_<n>``) of those synsets only: the others are not read, and counted as ignored. ``synsets``
    (wnids in class-index order) names the class of a webdataset sample that only has a ``.cls`` index
    (None: :func:`~eic_builder.scan.scanner.default_synsets`).
    """

    fmt: str = "auto"
    split: str | None = None
    verify_images: bool = False
    workers: int | None = None
    known_wnids: frozenset[str] | Callable[[], frozenset[str]] | None = None
    hash_files: bool = False
    shard: tuple[int, int] | None = None
    classes: frozenset[str] | None = None
    synsets: Sequence[str] | None = None

    def validate(self) -> None:
        """Refuse options that cannot be run, before any file is read."""
        from eic_builder.scan.layout import check_format

        check_format(self.fmt)
        if self.workers is not None and self.workers < 1:
            raise OptionError(f"`workers`={self.workers} must be >= 1")
