"""The one family of user-facing errors.

Every error a user can cause (bad path, bad option, bad data) is an
:class:`EICError`. The CLI prints its message on one line and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class EICError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class InputNotFoundError(EICError):
    """A path the user named does not exist or holds nothing usable."""


class FormatError(EICError):
    """An input file or tree is not in a format the toolkit reads."""


class OptionError(EICError):
    """An option value is outside what the command allows."""


class ManifestError(EICError):
    """A manifest file is missing, or its schema is not the one expected."""


class WordNetError(EICError):
    """WordNet data is missing, or a synset id is not a WordNet 3.0 noun."""


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
    """Raise :class:`OptionError` naming ``value`` and ``allowed`` unless ``value`` is one of them."""
    allowed = list(allowed)
    if value not in allowed:
        raise OptionError(f"{name}={value!r} is not allowed; choose one of {choices_text(allowed)}")
