"""The one family of user-facing errors.

Every error a user can cause (bad path, bad option, bad data) is an
:class:`EICError`. The CLI prints its message on one line and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_OPTION_REF = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


class EICError(Exception):
    """Base class of every error the toolkit raises on purpose.

    A message names the options it is about as backquoted keyword names (``"`hash_workers`=0 must be >= 1"``),
    so that each caller reads its own language: ``str(exc)`` gives the Python API's keywords
    (``hash_workers=0 must be >= 1``), :meth:`render` with the command line's names gives
    ``--hash-workers=0 must be >= 1``.
    """

    def __str__(self) -> str:
        return _OPTION_REF.sub(r"\1", super().__str__())

    def render(self, names: Mapping[str, str]) -> str:
        """The message with each backquoted keyword as ``names`` calls it (e.g. ``{"hash_workers":
        "--hash-workers"}``); keywords ``names`` lacks keep their own name."""
        return _OPTION_REF.sub(lambda m: names.get(m.group(1), m.group(1)), super().__str__())


class InputNotFoundError(EICError):
    """A path the user named does not exist or holds nothing usable."""


class FormatError(EICError):
    """An input file or tree is not in a format the toolkit reads."""


class OptionError(EICError):
    """An option value is outside what the command allows."""


class IndexFolderError(InputNotFoundError):
    """The folder of the gzip seek indexes cannot be written (an OS error, not a damaged archive)."""


class DecoderProcessError(EICError):
    """The process that decodes a ``.tar.gz`` for the scan ended without a word (killed, out of memory):
    the machine's failure, not the archive's."""


class ManifestError(EICError):
    """A manifest file is missing, or its schema is not the one expected."""


class WordNetError(EICError):
    """WordNet data is missing, or a synset id is not a WordNet 3.0 noun."""


class ImageDataError(EICError):
    """An image's bytes cannot be decoded (damaged or replaced since the scan)."""


class ModelError(EICError):
    """Model weights or checkpoints cannot be loaded."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def choices_text(allowed: Iterable[object]) -> str:
    """Format the allowed values of an option for an error message."""
    return ", ".join(repr(a) for a in allowed)


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """Raise :class:`OptionError` naming ``value`` and ``allowed`` unless ``value`` is one of them.

    ``name`` is the keyword the value was given as (``fmt``); a leading ``--`` (``--format``) is
    taken as the option's keyword (``format``)."""
    allowed = list(allowed)
    if value not in allowed:
        keyword = name[2:].replace("-", "_") if name.startswith("--") else name
        raise OptionError(f"`{keyword}`={value!r} is not allowed; choose one of {choices_text(allowed)}")


def check_at_least_one(options: object, *names: str) -> None:
    """Raise :class:`OptionError` naming the first of the fields ``names`` of ``options`` (counts and sizes)
    that is under 1."""
    for name in names:
        value = getattr(options, name)
        if value < 1:
            raise OptionError(f"`{name}`={value} must be >= 1")
