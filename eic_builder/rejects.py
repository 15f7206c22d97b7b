"""The reasons a file or a box is refused: the codes of ``rejects.parquet``, defined once.

Their meanings are the table of ``data_manifests/SCHEMA.md`` (a test keeps the two equal);
:func:`eic_builder.dataset.manifest.write_manifest` refuses to write a code that is not here.
"""

from __future__ import annotations

REJECT_REASONS = frozenset({
    # image files
    "empty_file", "not_an_image", "wrong_format", "truncated", "corrupt_image", "unreadable", "image_too_large",
    "bad_file_name", "duplicate_image_id",
    # annotations
    "image_rejected", "image_missing", "no_image_size", "malformed_xml", "unsafe_xml", "malformed_csv",
    "malformed_json", "malformed_box", "malformed_row", "malformed_size", "unknown_category", "orphan_annotation",
    "bad_wnid", "not_a_wordnet_noun", "degenerate_box", "box_outside_image", "size_mismatch",
    "unknown_class",
    # archives
    "corrupt_archive", "unsafe_member_name", "duplicate_member", "archive_too_deep",
    # duplicates (assemble, filter --exclude-audit)
    "copy_of_val_image", "duplicate_in_split",
})


class Rejected(Exception):  # noqa: N818 - it names what happened to the file, as the rejects table does
    """A file (an image, an annotation) cannot be used: ``reason`` is one of :data:`REJECT_REASONS`,
    ``detail`` what exactly was wrong, with the values."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown reject reason {reason!r}; add it to REJECT_REASONS and SCHEMA.md")
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
