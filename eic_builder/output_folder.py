"""One run per output folder: a command's ``--out`` never mixes its files with another run's.

Commands whose files depend on their inputs (``plant-copies``, ``export``) stamp their output folder
with :data:`RUN_FILE`: the command and what identifies the run (its inputs' fingerprints and the options
that change what is written). A rerun of the same run resumes in place; any other run is refused before
it writes, since files it would not overwrite (copies of other images, annotations of other ids) would
stay beside its own and be read later as its own. A folder holding the command's files without a stamp
(written by an older version, or by hand) is refused the same way; a stamp beside none of the command's
files (its run stopped before writing) is replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eic_builder.errors import OptionError

RUN_FILE = ".eic-run.json"


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


def claim_output_folder(out: str | os.PathLike[str], command: str, identity: Mapping[str, Any],
                        owned: Sequence[str], inputs: Mapping[str, str | os.PathLike[str]] | None = None) -> Path:
    """Make ``out`` the folder of this run of ``command``, or raise :class:`OptionError` when it holds
    another run's files.

    ``identity`` (JSON-able) tells runs apart; ``owned`` names the entries of ``out`` the command
    writes (``images``, ``planted.csv``): other files in ``out`` are left alone and do not count. ``inputs``
    (what the run reads) must lie apart from ``out`` (:func:`check_out`).
    """
    out = check_out(out, inputs)
    stamp = json.loads(json.dumps({"command": command, "identity": dict(identity)}, sort_keys=True))
    run_file = out / RUN_FILE
    remedy = "choose a new `out`, or remove that folder first"
    found = [name for name in owned if (out / name).exists()]
    if run_file.is_file() and found:
        try:
            old = json.loads(run_file.read_text())
        except (OSError, ValueError):
            old = None
        if old == stamp:
            return out
        what = old.get("command", "?") if isinstance(old, dict) else "?"
        differs = sorted(k for k in stamp["identity"] if not isinstance(old, dict)
                         or old.get("identity", {}).get(k) != stamp["identity"][k])
        raise OptionError(f"`out` {out} holds the files of another {what} run (it differs in "
                          f"{', '.join(differs) or 'its command'}); {remedy}")
    if found and not run_file.is_file():
        raise OptionError(f"`out` {out} already holds {', '.join(found)} of an earlier run it cannot tell apart "
                          f"from this one; {remedy}")
    from eic_builder.atomic_files import write_text

    out.mkdir(parents=True, exist_ok=True)
    write_text(run_file, json.dumps(stamp, sort_keys=True, indent=1))
    return out
