"""Stored runs: every figure of RESULTS.md comes from a kept run, and a check says when a table drifts.

A benchmark given ``--store`` writes its run to ``benchmarks/results/<date>-<machine>-<name>.json``:
the command, the git commit, the machine line, the date, its raw figures and the table it prints
(header and rows, as text). In RESULTS.md a table that comes from a stored run sits between
``<!-- run: FILE -->`` and ``<!-- /run -->`` (FILE relative to ``benchmarks/results/``).

    python benchmarks/results.py render [--results FILE]   # rewrite the marked tables from their runs
    python benchmarks/results.py check [--results FILE]    # exit 1 naming each table and figure that differs
    python benchmarks/results.py import DIR --name N       # a stored run of an eval-baseline or experiment folder
    python benchmarks/results.py import DIR... --labels A,B... --name N   # several evaluations as one table

``check`` compares every cell of every marked table with its stored run, so a figure typed or edited by
hand, or a table left behind by a newer run, fails; a table of figures outside the markers (one no stored
run backs) fails too. ``render`` writes the tables back from the runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
# EIC_RESULTS_DIR: where --store writes (gpu_check.sh points it into $OUT, whose files come back)
RESULTS_DIR = Path(os.environ.get("EIC_RESULTS_DIR") or HERE / "results")
RESULTS_MD = HERE.parent / "RESULTS.md"
BLOCK = re.compile(r"(<!-- run: (?P<file>[^ ]+) -->\n)(?P<table>(?:(?!<!-- /run -->).)*?)(\n?<!-- /run -->)",
                   re.DOTALL)


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, check=False).stdout.strip()
        return done.stdout.strip() + ("+changes" if dirty else "") if done.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40]


def store(name: str, machine: str, figures: Mapping[str, object], header: Sequence[str],
          rows: Sequence[Sequence[object]], folder: Path = RESULTS_DIR) -> Path:
    """Write a stored run (see the module's doc); returns its path."""
    return _save({"name": name, "date": dt.date.today().isoformat(), "command": " ".join(sys.argv),
                  "commit": _commit(), "machine": machine, "figures": dict(figures),
                  "table": {"header": list(header), "rows": [[str(c) for c in r] for r in rows]}}, folder)


def _save(run: Mapping, folder: Path) -> Path:
    """Write a stored run as ``folder/<date>-<machine>-<name>.json``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run['date']}-{_slug(run['machine'])}-{run['name']}.json"
    path.write_text(json.dumps(run, indent=1) + "\n")
    return path


def import_evaluation(eval_dir: Path, name: str, folder: Path = RESULTS_DIR) -> Path:
    """A stored run from an ``eval-baseline`` folder (its ``metrics.json``) or an ``experiment`` folder (its
    ``table.json``): the command, machine and date they record, every figure, and the table their
    ``metrics.md`` / ``table.md`` show, built by the same function."""
    eval_dir = Path(eval_dir)
    if (eval_dir / "table.json").is_file():
        from baseline.experiment import RowResult, table_rows

        doc = json.loads((eval_dir / "table.json").read_text())
        table = table_rows(doc["experiment"], [RowResult(**row) for row in doc["rows"]])
        header = [key for key in table[0] if key != "commands"]
        rows = [[row[key] for key in header] for row in table]
    else:
        from baseline.report import metrics_rows

        doc = json.loads((eval_dir / "metrics.json").read_text())
        header, rows = metrics_rows(doc["results"], doc.get("recall_k", 300))
    run = {"name": name, "date": doc.get("date") or dt.date.today().isoformat(),
           "command": doc.get("command", f"(command not recorded) {eval_dir}"), "commit": _commit(),
           "machine": doc.get("machine", "unknown"), "figures": doc, "table": {"header": header, "rows": rows}}
    return _save(run, folder)


def _evaluations(eval_dirs: Sequence[Path]) -> tuple[list[dict], str]:
    """The ``metrics.json`` of each ``eval-baseline`` folder, and the one machine they all ran on."""
    docs = [json.loads((Path(d) / "metrics.json").read_text()) for d in eval_dirs]
    machines = {doc.get("machine", "unknown") for doc in docs}
    if len(machines) != 1:
        raise SystemExit(f"the evaluations ran on different machines: {sorted(machines)}")
    return docs, machines.pop()


def _combined_run(name: str, docs: Sequence[Mapping], machine: str, figures: Mapping, header: list[str],
                  rows: list[list[str]], **extra: object) -> dict:
    """A stored run made of several evaluations: the latest date, every command, the figures given."""
    return {"name": name, "date": max(doc.get("date") or dt.date.today().isoformat() for doc in docs),
            "command": " ; ".join(doc.get("command", "(command not recorded)") for doc in docs), "commit": _commit(),
            "machine": machine, **extra, "figures": dict(figures), "table": {"header": header, "rows": rows}}


def import_evaluations(eval_dirs: Sequence[Path], labels: Sequence[str], name: str,
                       folder: Path = RESULTS_DIR) -> Path:
    """One stored run from several ``eval-baseline`` folders (variants of a recipe, say): one table whose rows
    are each folder's methods, named ``LABEL: method``, with every folder's command and figures."""
    from baseline.report import metrics_rows

    if len(labels) != len(eval_dirs):
        raise SystemExit(f"give one label per folder: {len(eval_dirs)} folders, {len(labels)} labels")
    docs, machine = _evaluations(eval_dirs)
    header, rows = [], []
    for label, doc in zip(labels, docs):
        header, part = metrics_rows(doc["results"], doc.get("recall_k", 300))
        rows += [[f"{label}: {row[0]}", *row[1:]] for row in part]
    return _save(_combined_run(name, docs, machine, dict(zip(labels, docs)), header, rows), folder)


def seed_rows(docs: Sequence[Mapping], label: str | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the metrics table (:func:`baseline.report.metric_columns`) over the
    ``eval-baseline`` runs of several seeds (their ``metrics.json``): each method's figures as mean ±
    standard deviation over the seeds (in %, the sample deviation, n - 1; "n/a" where a seed lacks the
    figure), the method named ``LABEL: method`` with a label. Every run must score the same methods."""
    from baseline.report import metric_columns

    recall_k = docs[0].get("recall_k", 300)
    keys, head = metric_columns(recall_k)
    methods = list(docs[0]["results"])
    if any(list(doc["results"]) != methods for doc in docs):
        raise SystemExit(f"the seeds' evaluations score different methods: {[list(d['results']) for d in docs]}")
    rows = []
    for method in methods:
        row = [f"{label}: {method}" if label else method]
        for key in keys:
            values = [100 * doc["results"][method].get(key, float("nan")) for doc in docs]
            if any(v != v for v in values):
                row.append("n/a")
                continue
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
            row.append(f"{mean:.2f} ± {sd:.2f}")
        rows.append(row)
    return ["Method", *head], rows


def import_seeds(eval_dirs: Sequence[Path], labels: Sequence[str], seeds: int, name: str,
                 folder: Path = RESULTS_DIR) -> Path:
    """One stored run from ``eval-baseline`` folders of several seeds: ``eval_dirs`` are ``len(labels)``
    groups of ``seeds`` folders (label by label; one unlabelled group without labels), each group's methods
    one row of mean ± standard deviation over its seeds, with every folder's command and figures."""
    groups = list(labels) or [""]
    if seeds < 2 or len(eval_dirs) != seeds * len(groups):
        raise SystemExit(f"give {seeds} folders (seeds) per label: {len(eval_dirs)} folders, {len(groups)} "
                         "label(s), and at least 2 seeds")
    docs, machine = _evaluations(eval_dirs)
    header, rows = [], []
    for g, label in enumerate(groups):
        header, part = seed_rows(docs[g * seeds:(g + 1) * seeds], label or None)
        rows += part
    figures = {str(d): doc for d, doc in zip(eval_dirs, docs)}
    return _save(_combined_run(name, docs, machine, figures, header, rows, seeds=seeds), folder)


def table_markdown(run: Mapping) -> str:
    """The Markdown table of a stored run, with the line naming its machine, commit and command."""
    header, rows = run["table"]["header"], run["table"]["rows"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in
                                                                range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"Run of {run['date']} on {run['machine']} (commit {run['commit']}): `{run['command']}`"]
    return "\n".join(lines)


_DELIMITER_CELL = re.compile(r"^:?-+:?$")


def _split_row(line: str) -> list[str]:
    """The cells of one Markdown table row, outer pipes optional, ``\\|`` kept inside a cell."""
    text = line.strip()
    text = text[1:] if text.startswith("|") else text
    text = text[:-1] if text.endswith("|") and not text.endswith("\\|") else text
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", text)]


def _is_delimiter(line: str) -> bool:
    cells = _split_row(line)
    return "-" in line and all(_DELIMITER_CELL.match(c) for c in cells)


def markdown_tables(text: str) -> list[tuple[int, list[list[str]]]]:
    """Every Markdown table of ``text`` (GitHub's rules: a header row, a delimiter row of ``---`` cells,
    then the rows that follow, outer pipes optional) as (line number of its header, rows of cells with
    the header first and the delimiter row left out)."""
    lines = text.splitlines()
    tables, i = [], 0
    while i < len(lines) - 1:
        header = _split_row(lines[i]) if "|" in lines[i] else None
        if header and _is_delimiter(lines[i + 1]) and len(header) == len(_split_row(lines[i + 1])):
            rows, j = [header], i + 2
            while j < len(lines) and lines[j].strip() and "|" in lines[j]:
                rows.append(_split_row(lines[j]))
                j += 1
            tables.append((i + 1, rows))
            i = j
        else:
            i += 1
    return tables


def _load_run(path: Path) -> dict:
    """A stored run; ``ValueError`` naming ``path`` when it is not one (cut short, not JSON, no table)."""
    try:
        run = json.loads(path.read_text())
        for row in [run["table"]["header"], *run["table"]["rows"]]:
            if not isinstance(row, list) or not all(isinstance(cell, str) for cell in row):
                raise TypeError(f"a table row {str(row)[:60]} is not a list of text cells")
        missing = [key for key in ("date", "machine", "commit", "command") if key not in run]
        if missing:  # the line naming the run reads them
            raise KeyError(", ".join(missing))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a stored run ({type(exc).__name__}: {str(exc)[:120]}); write it again "
                         "with the benchmark's --store") from None
    return run


def render(text: str, folder: Path = RESULTS_DIR) -> str:
    """``text`` with every marked table rewritten from its stored run; ``ValueError`` naming a run that is
    not one."""
    def one(match: re.Match) -> str:
        run = _load_run(folder / match["file"])
        return match.group(1) + table_markdown(run) + "\n<!-- /run -->"

    return BLOCK.sub(one, text)


def unbacked_tables(text: str) -> list[str]:
    """One line for each Markdown table of ``text`` outside the run markers whose body holds a digit: a
    table of figures that no stored run backs."""
    outside = BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    lines = outside.splitlines()
    return [f"table at line {start} ({lines[start - 1][:60]!r}): figures without a stored run"
            for start, rows in markdown_tables(outside)
            if any(re.search(r"\d", cell) for row in rows[1:] for cell in row)]


def _compare(name: str, want: list[list[str]], got: list[list[str]]) -> list[str]:
    """Every difference between the rows ``got`` of a table and the rows ``want`` of its stored run ``name``:
    rows and cells counted, then compared one by one."""
    problems = []
    if len(want) != len(got):
        problems.append(f"table of {name}: {len(got)} rows, the stored run has {len(want)}")
    for want_row, got_row in zip(want, got):
        row = want_row[0] if want_row is not want[0] else "header"
        if len(want_row) != len(got_row):
            problems.append(f"table of {name}, row {row!r}: {len(got_row)} cells, the stored run has "
                            f"{len(want_row)}")
        for column, (w, g) in enumerate(zip(want_row, got_row)):
            if w != g:
                problems.append(f"table of {name}, row {row!r}, column {want[0][column]!r}: "
                                f"{g!r} where the stored run has {w!r}")
    return problems


def check(text: str, folder: Path = RESULTS_DIR) -> list[str]:
    """Every difference between the marked tables of ``text`` and their stored runs, and every table of
    figures outside the markers, one line each."""
    problems = unbacked_tables(text)
    blocks = list(BLOCK.finditer(text))
    if not blocks:
        problems.append("no table marked <!-- run: FILE --> ... <!-- /run -->")
    for match in blocks:
        path = folder / match["file"]
        if not path.is_file():
            problems.append(f"table of {match['file']}: no such stored run in {folder}")
            continue
        try:
            run = _load_run(path)
        except ValueError as exc:
            problems.append(f"table of {match['file']}: {exc}")
            continue
        wanted = markdown_tables(table_markdown(run))[0][1]
        found = markdown_tables(match["table"])
        if len(found) != 1:
            problems.append(f"table of {match['file']}: {len(found)} tables between its markers, not one")
            continue
        problems += _compare(match["file"], wanted, found[0][1])
        footer = table_markdown(run).splitlines()[-1]
        if footer not in match["table"]:
            problems.append(f"table of {match['file']}: the line naming its run is not {footer!r}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("render", "check", "import"))
    parser.add_argument("eval_dir", nargs="*", type=Path,
                        help="import: an eval-baseline or experiment --out folder (several with --labels).")
    parser.add_argument("--labels", default=None, help="import of several eval-baseline folders: a label each.")
    parser.add_argument("--name", default="evaluation", help="import: the stored run's name.")
    parser.add_argument("--seeds", type=int, default=None,
                        help="import: the folders are runs of this many seeds (per label, label by label); "
                        "each row is mean ± standard deviation over them.")
    parser.add_argument("--results", type=Path, default=RESULTS_MD, help="The Markdown file (default RESULTS.md).")
    parser.add_argument("--runs", type=Path, default=RESULTS_DIR, help="The folder of stored runs.")
    args = parser.parse_args(argv)
    if args.action == "import":
        if not args.eval_dir:
            parser.error("import needs an eval-baseline or experiment folder")
        if args.seeds is not None:
            labels = args.labels.split(",") if args.labels else []
            path = import_seeds(args.eval_dir, labels, args.seeds, args.name, args.runs)
        elif args.labels or len(args.eval_dir) > 1:
            path = import_evaluations(args.eval_dir, (args.labels or "").split(","), args.name, args.runs)
        else:
            path = import_evaluation(args.eval_dir[0], args.name, args.runs)
        print(f"stored {path}")
        return 0
    text = args.results.read_text()
    if args.action == "render":
        try:
            rendered = render(text, args.runs)
        except ValueError as exc:
            print(f"{args.results}: {exc}", file=sys.stderr)
            return 1
        args.results.write_text(rendered)
        print(f"rendered {len(BLOCK.findall(text))} tables of {args.results}")
        return 0
    problems = check(text, args.runs)
    for line in problems:
        print(f"{args.results}: {line}")
    if not problems:
        print(f"{args.results}: {len(BLOCK.findall(text))} tables match their stored runs")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
