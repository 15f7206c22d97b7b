"""``eic-build experiment``: the paper's result tables, each row trained and scored by our commands.

* ``components`` ("Component analysis"): the structures (Down-sample alone, Down-sample + split anchors,
  the deeper down-sample, the deeper hourglass) and the schemes (9 anchors, 30 anchors, and 30 anchors
  with dynamic training scale, negative-ratio control and the gray class, each alone, then all).
* ``data-strategy`` ("Investigation on training data"): each training manifest (ILSVRC-1k, EIC) x
  {base, random, balanced} ordering, with Selective Search and the sliding window as peer rows.

How the paper's rows map onto our switches (our reading; the slides name the rows only):

* The structure rows and "30 anchors" train with the three remarks off: one fixed training scale (the
  middle of the base configuration's ``train_scales``), no negative-ratio control (negatives fill the
  batch), no gray class. "Deeper hourglass" and "30 anchors" are then one configuration, as the
  paper's equal figures (94.51) suggest, and are trained once.
* "Down-sample" is the VGG-11 stack; "Deeper" the base configuration's encoder (VGG-16 by default).
* Each "+" row switches one remark on; "30 anchors + all" is the base configuration itself.

Every row is one training (``train-baseline``) and one scoring (``eval-baseline``) of the test
manifest. Rows with the same configuration and training manifest share one run folder, named by a
digest of both under ``OUT/runs/``; a row is finished when its ``result-<scoring>.json`` exists (the
digest of the test manifest and scales: scoring the same runs on another test set or at other scales
reuses the trainings and scores again), so a rerun after an interruption resumes at the first
unfinished row (and inside it, at its last checkpoint).
Writes ``OUT/table.md``, ``table.csv`` and ``table.json``: our figures beside the paper's, the
iterations each row reached, and the exact commands that reproduce it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from baseline.config import TrainConfig
from eic_builder.atomic_files import write_text
from eic_builder.choices import EXPERIMENTS, PEER_METHODS, SAMPLING_STRATEGIES
from eic_builder.errors import OptionError, check_choice

log = logging.getLogger(__name__)

METRICS = ("AR@10", "AR@100", "AR@300", "AR@500", "Rec@0.5@300")
# what the box regressor adds: an RPN row's AR@100 with the deltas at zero (eval-baseline's rpn-anchors)
ANCHORS_AR100, ANCHORS_HEADER = "anchors_only_AR@100", "AR@100 anchors alone"
SHALLOW_ENCODER = "vgg11"
PEER_LABELS = {"selective-search": "Selective search", "sliding-window": "Sliding window (centre prior)"}


@dataclass(frozen=True)
class Row:
    """One row of a table: a training configuration (``overrides`` of the base) on training manifest
    ``trains``, or a peer ``method``; ``paper`` holds the paper's figures, as printed, by metric."""

    label: str
    overrides: dict = field(default_factory=dict)
    train: int = 0
    method: str | None = None
    paper: dict[str, str] = field(default_factory=dict)
    reference: str | None = None  # the row a "+" row is compared with


def _fixed_scale(base: TrainConfig) -> tuple[int]:
    scales = sorted(base.train_scales)
    return (scales[len(scales) // 2],)


def component_rows(base: TrainConfig) -> list[Row]:
    """The rows of the component-analysis table (see the module doc)."""
    plain = {"train_scales": _fixed_scale(base), "neg_ratio_control": False, "gray": False}
    shallow = {**plain, "encoder": SHALLOW_ENCODER}
    ref = "30 anchors"
    return [
        Row("Down-sample alone", {**shallow, "arch": "downsample-single"}, paper={"Rec@0.5@300": "89.25"}),
        Row("Down-sample + split anchors", {**shallow, "arch": "downsample"}, paper={"Rec@0.5@300": "87.94"}),
        Row("Deeper down-sample + split anchors", {**plain, "arch": "downsample"}, paper={"Rec@0.5@300": "92.33"}),
        Row("Deeper hourglass", {**plain, "arch": "hourglass"}, paper={"Rec@0.5@300": "94.51"}),
        Row("9 anchors", {**plain, "anchors": 9}, paper={"Rec@0.5@300": "87.33"}),
        Row(ref, dict(plain), paper={"Rec@0.5@300": "94.51", "AR@300": "59.34"}),
        Row("30 anchors + dynamic training scale", {**plain, "train_scales": base.train_scales},
            paper={"Rec@0.5@300": "95.33"}, reference=ref),
        Row("30 anchors + negative-ratio control", {**plain, "neg_ratio_control": True},
            paper={"Rec@0.5@300": "+1.78"}, reference=ref),
        Row("30 anchors + gray class", {**plain, "gray": True}, paper={"Rec@0.5@300": "+1.13"}, reference=ref),
        Row("30 anchors + all", {"train_scales": base.train_scales, "neg_ratio_control": True, "gray": True},
            paper={"Rec@0.5@300": "97.81", "AR@300": "68.45"}, reference=ref),
    ]


PAPER_DATA_STRATEGY = {
    ("ilsvrc-1k", "base"): ("38.45", "50.02", "54.72"), ("ilsvrc-1k", "random"): ("53.76", "65.21", "76.67"),
    ("ilsvrc-1k", "balanced"): ("52.17", "66.58", "75.32"), ("eic", "base"): ("42.19", "46.73", "49.01"),
    ("eic", "random"): ("59.31", "71.82", "78.56"), ("eic", "balanced"): ("58.72", "72.39", "81.27"),
    ("selective-search", None): ("45.82", "57.63", "69.45"),
}
DEFAULT_TRAIN_LABELS = ("ILSVRC-1k", "EIC")


def _paper_key(label: str) -> str:
    key = label.lower().replace("_", "-")
    return {"ilsvrc": "ilsvrc-1k", "ilsvrc1k": "ilsvrc-1k"}.get(key, key)


def data_strategy_rows(train_labels: Sequence[str]) -> list[Row]:
    """{each training manifest} x {base, random, balanced}, then the peer methods."""
    rows = []
    for i, label in enumerate(train_labels):
        for strategy in SAMPLING_STRATEGIES:
            paper = PAPER_DATA_STRATEGY.get((_paper_key(label), strategy))
            rows.append(Row(f"{label}, {strategy}", {"sampling": strategy}, train=i,
                            paper=dict(zip(("AR@10", "AR@100", "AR@500"), paper)) if paper else {}))
    for method in PEER_METHODS:
        paper = PAPER_DATA_STRATEGY.get((method, None))
        rows.append(Row(PEER_LABELS[method], method=method,
                        paper=dict(zip(("AR@10", "AR@100", "AR@500"), paper)) if paper else {}))
    return rows


@dataclass
class RowResult:
    """What one row measured (fractions in [0, 1]) and how."""

    label: str
    metrics: dict[str, float]
    paper: dict[str, str]
    commands: list[str]
    iterations: int | None = None
    train_seconds: float | None = None
    run: str | None = None
    reference: str | None = None
    scored: str | None = None  # the eval-baseline folder of this row


@dataclass(frozen=True)
class ExperimentPlan:
    """Everything a table's rows share: the training manifests (label, path), the test manifest, the
    base configuration (and whether it is ``--tiny``'s), the training budget and the proposal scales."""

    name: str
    trains: tuple[tuple[str, str], ...]
    test: str
    base: TrainConfig
    tiny: bool = False
    minutes: float | None = None
    scales: tuple[int, ...] = (600,)
    root: str | None = None


def _row_config(plan: ExperimentPlan, row: Row) -> TrainConfig:
    cfg = replace(plan.base, **row.overrides)
    cfg.validate()
    return cfg


def _run_key(cfg: TrainConfig, train: str, minutes: float | None) -> str:
    text = json.dumps({"config": json.loads(cfg.to_json()), "train": str(Path(train).resolve()),
                       "minutes": minutes}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _scoring_key(plan: ExperimentPlan, peer: bool) -> str:
    """A digest of what scoring depends on: the test manifest, and for the RPN its test scales (the peers
    propose on the image itself)."""
    scales = None if peer else list(plan.scales)
    text = json.dumps({"test": str(Path(plan.test).resolve()), "scales": scales}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _commands(plan: ExperimentPlan, cfg: TrainConfig | None, row: Row, folder: Path, scored: Path) -> list[str]:
    scales = ",".join(map(str, plan.scales))
    root = ["--root", plan.root] if plan.root else []
    if cfg is None:
        return [shlex.join(["eic-build", "eval-baseline", plan.test, "--out", str(scored), "--method", row.method,
                            "--scales", scales, *root])]
    minutes = ["--minutes", f"{plan.minutes:g}"] if plan.minutes else []
    train = shlex.join(["eic-build", "train-baseline", plan.trains[row.train][1], "--out", str(folder / "run"),
                        *cfg.command_options(plan.tiny), *minutes, *root])
    score = shlex.join(["eic-build", "eval-baseline", plan.test, "--out", str(scored), "--checkpoint",
                        str(folder / "run" / "last.pt"), "--scales", scales, "--device", cfg.device, *root])
    return [train, score]


def run_row(plan: ExperimentPlan, row: Row, out: Path) -> RowResult:
    """Train and score one row, or read its result file when an earlier call finished it."""
    from baseline.engine import train
    from baseline.eval_run import EvalOptions, evaluate_methods
    from baseline.proposals import ProposalConfig

    proposals = ProposalConfig(scales=plan.scales)
    if row.method is not None:
        cfg, folder = None, out / "peers" / row.method
    else:
        cfg = _row_config(plan, row)
        folder = out / "runs" / _run_key(cfg, plan.trains[row.train][1], plan.minutes)
    scoring = _scoring_key(plan, peer=row.method is not None)
    done, scored = folder / f"result-{scoring}.json", folder / f"eval-{scoring}"
    if done.is_file():
        saved = json.loads(done.read_text())
        return RowResult(row.label, saved["metrics"], row.paper, saved["commands"], saved.get("iterations"),
                         saved.get("train_seconds"), saved.get("run"), row.reference, saved.get("scored"))
    folder.mkdir(parents=True, exist_ok=True)
    commands = _commands(plan, cfg, row, folder, scored)
    if cfg is None:
        metrics = evaluate_methods(plan.test, scored, EvalOptions(checkpoint=None, methods=[row.method],
                                                                  proposals=proposals, root=plan.root))[row.method]
        iterations = seconds = None
    else:
        run = folder / "run"
        trained = folder / "trained.json"
        if not trained.is_file():
            t0 = time.perf_counter()
            result = train(plan.trains[row.train][1], run, cfg, resume=(run / "last.pt").is_file(), root=plan.root,
                           max_seconds=plan.minutes * 60 if plan.minutes else None)
            write_text(trained, json.dumps({"iterations": result.iteration,
                                            "seconds": time.perf_counter() - t0}))
        trained_doc = json.loads(trained.read_text())
        iterations, seconds = trained_doc["iterations"], trained_doc["seconds"]
        options = EvalOptions(checkpoint=str(run / "last.pt"), proposals=proposals, device=cfg.device, root=plan.root)
        results = evaluate_methods(plan.test, scored, options)
        metrics = {**results["rpn"], ANCHORS_AR100: results["rpn-anchors"]["AR@100"]}
    kept = {k: float(metrics[k]) for k in (*METRICS, ANCHORS_AR100) if k in metrics}
    write_text(done, json.dumps({"label": row.label, "metrics": kept, "commands": commands,
                                 "iterations": iterations, "train_seconds": seconds,
                                 "run": str(folder), "scored": str(scored)}, indent=2))
    return RowResult(row.label, kept, row.paper, commands, iterations, seconds, str(folder), row.reference,
                     str(scored))


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _paper_cell(result: RowResult, metric: str, by_label: dict[str, RowResult]) -> str:
    printed = result.paper.get(metric, "")
    if printed.startswith("+") and result.reference:  # the paper prints a gain over its reference row
        base = by_label[result.reference].paper.get(metric)
        return f"{printed} ({float(base) + float(printed):.2f})" if base else printed
    return printed or "-"


def table_columns(name: str) -> list[tuple[str, str, bool]]:
    """(header, metric, with the paper's figure beside) of each metric column of table ``name``."""
    if name == "components":
        return [("Rec@0.5 (top 300)", "Rec@0.5@300", True), ("AR@300", "AR@300", True), ("AR@10", "AR@10", False),
                ("AR@100", "AR@100", False), ("AR@500", "AR@500", False), (ANCHORS_HEADER, ANCHORS_AR100, False)]
    return [("AR@10", "AR@10", True), ("AR@100", "AR@100", True), ("AR@500", "AR@500", True),
            ("Rec@0.5 (top 300)", "Rec@0.5@300", False), (ANCHORS_HEADER, ANCHORS_AR100, False)]


def table_rows(name: str, results: Sequence[RowResult]) -> list[dict[str, str]]:
    """One dict per row: the label, our figure and the paper's of each column, the gain over the
    reference row, iterations, training seconds and the commands (joined by `` && ``)."""
    by_label = {r.label: r for r in results}
    rows = []
    for result in results:
        row = {"row": result.label}
        for header, metric, with_paper in table_columns(name):
            row[f"{header} ours"] = _pct(result.metrics.get(metric))
            if with_paper:
                row[f"{header} paper"] = _paper_cell(result, metric, by_label)
        main = table_columns(name)[0][1]
        if result.reference:
            gain = result.metrics[main] - by_label[result.reference].metrics[main]
            row["gain over reference"] = f"{100 * gain:+.2f}"
        else:
            row["gain over reference"] = ""
        row["iterations"] = "" if result.iterations is None else str(result.iterations)
        row["train seconds"] = "" if result.train_seconds is None else f"{result.train_seconds:.0f}"
        row["commands"] = " && ".join(result.commands)
        rows.append(row)
    return rows


TITLES = {"components": "Component analysis", "data-strategy": "Investigation on training data"}


def table_markdown(plan: ExperimentPlan, rows: list[dict[str, str]]) -> str:
    """The table in the paper's layout (ours | paper per metric, in %), then each row's commands."""
    headers = [h for h in rows[0] if h != "commands"]
    lines = [f"# {TITLES[plan.name]}", "",
             f"Trained on {', '.join(f'{label} = `{path}`' for label, path in plan.trains)}; scored on "
             f"`{plan.test}` at scales {','.join(map(str, plan.scales))}. Figures in % (AR over IoU "
             "0.50:0.95, Rec@0.5 with the top 300 proposals); the paper's beside ours (its setting: EIC "
             "validation set, GPU, 200k iterations, pretrained Inception-BN). A \"+\" paper figure is the "
             "paper's gain over its 30-anchor row; in brackets, that row's figure plus the gain.", "",
             "| " + " | ".join(["#", *headers]) + " |",
             "|" + "---|" * (len(headers) + 1)]
    for i, row in enumerate(rows, start=1):
        lines.append("| " + " | ".join([str(i), *(row[h] for h in headers)]) + " |")
    lines += ["", "Commands of each row:", ""]
    for i, row in enumerate(rows, start=1):
        lines.append(f"{i}. `{row['commands']}`")
    return "\n".join(lines) + "\n"


def check_plan_inputs(plan: ExperimentPlan) -> None:
    """Check every input a row reads before the first one trains (a row costs its whole budget): each
    manifest reads as one and has its images where it says, the test scales are valid, and the test
    manifest is none of the training ones (by folder or by content: scoring on training images
    measures memory, not proposals)."""
    import pyarrow.compute as pc

    from baseline.proposals import ProposalConfig
    from eic_builder.dataset.manifest import Manifest

    ProposalConfig(scales=plan.scales).validate()
    fingerprints = {}
    for option, path in [("trains", p) for _, p in plan.trains] + [("test", plan.test)]:
        if not Path(path).is_dir():
            raise OptionError(f"`{option}` {path}: no such manifest folder")
        manifest = Manifest.open(path, root=plan.root, box_columns=["image_id"])
        if not pc.any(manifest.images["has_image"]).as_py():
            raise OptionError(f"`{option}` {path}: the manifest has no image with a file to train or score on")
        manifest.image_root()
        fingerprints[path] = manifest.fingerprint()
    for _, path in plan.trains:
        if Path(path).resolve() == Path(plan.test).resolve() or fingerprints[path] == fingerprints[plan.test]:
            raise OptionError(f"`test` {plan.test} holds the same images as `trains` {path}: scores on training "
                              "images say nothing of held-out ones; split off a test set with `eic-build hold-out`")


def run_experiment(plan: ExperimentPlan, out: str | os.PathLike[str],
                   on_row: Callable[[RowResult], None] | None = None) -> list[RowResult]:
    """Run (or resume) every row of ``plan.name``'s table and write ``OUT/table.{md,csv,json}``."""
    check_choice("experiment", plan.name, EXPERIMENTS)
    if not plan.trains:
        raise OptionError("give at least one `trains` manifest")
    if plan.name == "components" and len(plan.trains) != 1:
        raise OptionError(f"experiment components trains on one manifest; got {len(plan.trains)} `trains`")
    if plan.name == "data-strategy" and len(plan.trains) > 2:
        raise OptionError(f"experiment data-strategy compares at most two training manifests (ILSVRC-1k, EIC); "
                          f"got {len(plan.trains)} `trains`")
    labels = [label for label, _ in plan.trains]
    if len(set(labels)) != len(labels):
        raise OptionError(f"`trains` labels must differ; got {', '.join(labels)}")
    check_plan_inputs(plan)
    plan.base.validate()
    rows = component_rows(plan.base) if plan.name == "components" else data_strategy_rows(labels)
    for row in rows:  # refuse a bad combination before the first training starts
        if row.method is None:
            _row_config(plan, row)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "plan.json", json.dumps({**asdict(plan), "base": json.loads(plan.base.to_json())}, indent=2))
    results = []
    for row in rows:
        log.info("experiment %s: row %r", plan.name, row.label)
        result = run_row(plan, row, out)
        results.append(result)
        if on_row is not None:
            on_row(result)
    table = table_rows(plan.name, results)
    write_text(out / "table.md", table_markdown(plan, table))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    write_text(out / "table.csv", buffer.getvalue())
    from eic_builder.dataset.tables import command_line
    from eic_builder.hardware import machine_line

    # the command, machine and date make it a stored run (benchmarks/results.py import)
    write_text(out / "table.json", json.dumps({"experiment": plan.name, "rows": [asdict(r) for r in results],
                                               "command": command_line(), "machine": machine_line(),
                                               "date": time.strftime("%Y-%m-%d")}, indent=2))
    return results
