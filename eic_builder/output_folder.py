"""The one run module: every stage writes a folder of its own, as one run, resumed unit by unit.

* :func:`check_out`: ``--out`` lies apart from everything the stage reads.
* :class:`Run`: what identifies a run (its command and a JSON-able ``identity``: the inputs' fingerprints
  and the options that change what is written). A folder holding the files of another run is refused
  before anything is written (:meth:`Run.refuse_other`), since files the new run would not overwrite
  (copies of other images, shards of other settings) would stay beside its own and be read later as its
  own; a rerun of the same run resumes in place.
* Units: a stage cuts its work into units (the scan's folders of images, the features' shards, an
  archive's byte windows) and records with each the digest of its inputs (:func:`digest_of`); a rerun
  keeps the units whose recorded digest is still theirs and does the rest (:meth:`Run.finished`).

Where a run is recorded: stages whose folder collects files (``plant-copies``, ``export``) stamp it with
:data:`RUN_FILE` (:meth:`Run.claim`); ``features`` records its identity in every shard's metadata;
``scan`` keeps its units under a folder named by its identity's digest (:meth:`Run.key`); training
keeps its configuration in each checkpoint. A folder holding a command's files without a stamp (written
by an older version, or by hand) is refused the same way; a stamp beside none of the command's files
(its run stopped before writing) is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from eic_builder.errors import OptionError

RUN_FILE = ".eic-run.json"
REMEDY = "choose a new `out`, or remove that folder first"
Unit = TypeVar("Unit")


def check_out(out: str | os.PathLike[str], inputs: Mapping[str, str | os.PathLike[str]] | None = None,
              name: str = "`out`") -> Path:
    """``out`` as the folder a stage writes: refused (:class:`OptionError`) when it is a file, or when it
    overlaps an input (``inputs``: what the stage reads, by how the user named it): the same folder, or one
    inside the other. A stage never writes where it reads, nor reads what it is writing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OptionError(f"{name} {out} is a file; give a folder")
    here = out.resolve()
    for what, path in (inputs or {}).items():
        there = Path(path).resolve()
        if here == there or there in here.parents or here in there.parents:
            relation = "is" if here == there else "lies inside" if there in here.parents else "holds"
            raise OptionError(f"{name} {out} {relation} {what} {path}: they overlap; a stage never writes where "
                              "it reads, nor two outputs in one place: give each a folder of its own")
    return out


def digest_of(identity: Mapping[str, Any]) -> str:
    """A short digest (16 hex digits) of a JSON-able mapping: a run's identity, a unit's inputs."""
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Run:
    """One run of ``command``, known by its ``identity`` (JSON-able: what tells its output apart from
    another run's)."""

    command: str
    identity: Mapping[str, Any]

    @property
    def stamp(self) -> dict[str, Any]:
        """The command and identity as JSON reads them back (tuples as lists, paths as text): what a run
        records, and what a record is compared with."""
        return json.loads(json.dumps({"command": self.command, "identity": dict(self.identity)}, sort_keys=True,
                                     default=str))

    @property
    def key(self) -> str:
        """:func:`digest_of` the command and identity: a folder name for this run's units."""
        return digest_of(self.stamp)

    def differences(self, recorded: Mapping[str, Any] | None) -> list[str]:
        """The keys of the identity whose value ``recorded`` (what a folder or file says of its run) does
        not hold, in sorted order; every key when ``recorded`` is not a mapping."""
        canonical = self.stamp["identity"]
        if not isinstance(recorded, Mapping):
            return sorted(canonical)
        return sorted(k for k in canonical if recorded.get(k) != canonical[k])

    def refuse_other(self, recorded: Mapping[str, Any] | None, where: str | os.PathLike[str],
                     what: str = "the files") -> None:
        """Raise :class:`OptionError` when ``recorded`` is another run's identity: ``where`` (a folder or
        file) holds ``what`` of another run of this command, named by the first keys it differs in."""
        differs = self.differences(recorded)
        if differs:
            raise OptionError(f"`out` {where} holds {what} of another {self.command} run (it differs in "
                              f"{', '.join(differs)}); {REMEDY}")

    @staticmethod
    def finished(units: Iterable[Unit], recorded: Callable[[Unit], str | None], digest: Callable[[Unit], str]
                 ) -> tuple[list[Unit], list[Unit]]:
        """(done, stale) of ``units``: done where an earlier run of this identity recorded the digest of
        the unit's inputs as it is now (``recorded(unit)``, None where nothing is recorded; ``digest(unit)``,
        computed only for a unit with a record), stale where it recorded another (its inputs changed
        since: done again)."""
        done, stale = [], []
        for unit in units:
            found = recorded(unit)
            if found is None:
                continue
            (done if found == digest(unit) else stale).append(unit)
        return done, stale

    def claim(self, out: str | os.PathLike[str], owned: Sequence[str],
              inputs: Mapping[str, str | os.PathLike[str]] | None = None) -> Path:
        """Make ``out`` the folder of this run (stamped with :data:`RUN_FILE`), or raise :class:`OptionError`
        when it holds another run's files. ``owned`` names the entries of ``out`` the command writes
        (``images``, ``planted.csv``): other files in ``out`` are left alone and do not count. ``inputs``
        (what the run reads) must lie apart from ``out`` (:func:`check_out`)."""
        out = check_out(out, inputs)
        stamp = self.stamp
        run_file = out / RUN_FILE
        found = [name for name in owned if (out / name).exists()]
        if run_file.is_file() and found:
            try:
                old = json.loads(run_file.read_text())
            except (OSError, ValueError):
                old = None
            if old == stamp:
                return out
            what = old.get("command", "?") if isinstance(old, dict) else "?"
            differs = self.differences(old.get("identity")) if what == self.command else []
            raise OptionError(f"`out` {out} holds the files of another {what} run (it differs in "
                              f"{', '.join(differs) or 'its command'}); {REMEDY}")
        if found and not run_file.is_file():
            raise OptionError(f"`out` {out} already holds {', '.join(found)} of an earlier run it cannot tell "
                              f"apart from this one; {REMEDY}")
        from eic_builder.atomic_files import write_text

        out.mkdir(parents=True, exist_ok=True)
        write_text(run_file, json.dumps(stamp, sort_keys=True, indent=1))
        return out
