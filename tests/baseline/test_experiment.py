from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from baseline import experiment
from baseline.config import TrainConfig
from baseline.experiment import ExperimentPlan, component_rows, data_strategy_rows, run_experiment
from eic_builder.cli import main
from eic_builder.errors import OptionError
from eic_builder.scan.scanner import scan

TOY = ["--tiny", "--iters", "2", "--images-per-batch", "2", "--train-scales", "96,128", "--workers", "0"]


def run(*args: str):
    return CliRunner().invoke(main, ["--no-progress", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def manifests(synthetic_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("experiment_manifests")
    scan(synthetic_tree, root / "train", split="train")
    scan(synthetic_tree, root / "val", split="val")
    return {"train": root / "train", "val": root / "val"}


def test_component_rows_switch_one_thing_at_a_time() -> None:
    base = TrainConfig.tiny()
    rows = {r.label: r for r in component_rows(base)}
    assert len(rows) == 10
    plain = rows["30 anchors"].overrides
    assert plain == {"train_scales": (256,), "neg_ratio_control": False, "gray": False}  # middle of 224,256,288
    assert rows["Deeper hourglass"].overrides == {**plain, "arch": "hourglass"}
    assert rows["Down-sample alone"].overrides == {**plain, "encoder": "vgg11", "arch": "downsample-single"}
    assert rows["9 anchors"].overrides == {**plain, "anchors": 9}
    assert rows["30 anchors + gray class"].overrides == {**plain, "gray": True}
    assert rows["30 anchors + dynamic training scale"].overrides["train_scales"] == (224, 256, 288)
    assert rows["30 anchors + negative-ratio control"].reference == "30 anchors"
    from dataclasses import replace

    assert replace(base, **rows["30 anchors + all"].overrides) == base  # "all" is the base recipe itself


def test_data_strategy_rows_take_the_papers_figures_by_label() -> None:
    rows = data_strategy_rows(["ILSVRC-1k", "mine"])
    assert [r.label for r in rows] == ["ILSVRC-1k, base", "ILSVRC-1k, random", "ILSVRC-1k, balanced", "mine, base",
                                       "mine, random", "mine, balanced", "Selective search",
                                       "Sliding window (centre prior)"]
    assert rows[1].paper == {"AR@10": "53.76", "AR@100": "65.21", "AR@500": "76.67"}
    assert rows[3].paper == {} and rows[3].train == 1 and rows[3].overrides == {"sampling": "base"}
    assert rows[6].method == "selective-search" and rows[6].paper["AR@500"] == "69.45"
    assert data_strategy_rows(["EIC"])[2].paper["AR@500"] == "81.27"


def test_components_table_at_toy_scale(manifests: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "components"
    result = run("experiment", "components", "--train", str(manifests["train"]), "--test", str(manifests["val"]),
                 "--out", str(out), "--scales", "128", *TOY)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "table.json").read_text())
    assert [r["label"] for r in doc["rows"]] == [r.label for r in component_rows(TrainConfig.tiny())]
    assert doc["command"] and doc["machine"] and doc["date"]  # what a stored run needs
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 9  # "Deeper hourglass" and "30 anchors" are one configuration, trained once
    by_label = {r["label"]: r for r in doc["rows"]}
    assert by_label["Deeper hourglass"]["run"] == by_label["30 anchors"]["run"]
    for row in doc["rows"]:  # each row's figures are those of its own run's evaluation
        results = json.loads((Path(row["scored"]) / "metrics.json").read_text())["results"]
        want = {k: pytest.approx(results["rpn"][k]) for k in experiment.METRICS}
        want[experiment.ANCHORS_AR100] = pytest.approx(results["rpn-anchors"]["AR@100"])  # the regressor's share
        assert row["metrics"] == want
        assert row["iterations"] == 2
    config = json.loads((Path(by_label["Down-sample alone"]["run"]) / "run" / "config.json").read_text())
    assert (config["arch"], config["encoder"], config["gray"], config["neg_ratio_control"],
            config["train_scales"]) == ("downsample-single", "vgg11", False, False, [128])
    nine = json.loads((Path(by_label["9 anchors"]["run"]) / "run" / "config.json").read_text())
    assert nine["anchors"] == 9 and nine["arch"] == "hourglass"
    table = (out / "table.md").read_text()
    assert table.startswith("# Component analysis")
    assert "| 1 | Down-sample alone | " in table and "| 89.25 |" in table
    assert "+1.78 (96.29)" in table  # the paper's gain over its 30-anchor row, and the figure it implies
    lines = [line for line in table.splitlines() if line.startswith("| 8 |")]
    gain = 100 * (by_label["30 anchors + negative-ratio control"]["metrics"]["Rec@0.5@300"]
                  - by_label["30 anchors"]["metrics"]["Rec@0.5@300"])
    assert f"| {gain:+.2f} |" in lines[0]
    csv_lines = (out / "table.csv").read_text().splitlines()
    assert len(csv_lines) == 11 and csv_lines[0].startswith("row,Rec@0.5 (top 300) ours,Rec@0.5 (top 300) paper")
    assert "AR@100 anchors alone ours" in csv_lines[0]  # what the regressor adds, a column of the table

    # the printed command reproduces the row's configuration exactly
    train_command = shlex.split(by_label["Down-sample alone"]["commands"][0])
    assert train_command[:2] == ["eic-build", "train-baseline"]
    out_at = train_command.index("--out")
    train_command[out_at + 1] = str(tmp_path / "again")
    assert run(*train_command[1:]).exit_code == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == config


def test_rerun_resumes_at_the_first_unfinished_row(manifests: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    plan = ExperimentPlan("data-strategy", (("ILSVRC-1k", str(manifests["train"])), ("EIC", str(manifests["train"]))),
                          str(manifests["val"]), TrainConfig.tiny(iters=2, images_per_batch=2, train_scales=(96,)),
                          tiny=True, scales=(96,))
    first = run_experiment(plan, tmp_path / "ds")
    assert len(first) == 8 and first[6].label == "Selective search" and first[6].iterations is None
    assert first[0].paper["AR@10"] == "38.45"
    assert first[0].metrics != first[1].metrics or first[0].run != first[1].run
    table = (tmp_path / "ds" / "table.md").read_text()
    assert "| 7 | Selective search |" in table and "45.82" in table

    import baseline.engine

    trained = []
    real_train = baseline.engine.train
    monkeypatch.setattr(baseline.engine, "train", lambda *a, **k: trained.append(a[1]) or real_train(*a, **k))
    redo = Path(first[4].run)
    for done in (*redo.glob("result-*.json"), redo / "trained.json"):
        done.unlink()
    again = run_experiment(plan, tmp_path / "ds")
    assert trained == [redo / "run"]  # only the unfinished row trained again, resuming its checkpoint
    assert [r.metrics for r in again] == [r.metrics for r in first]
    from dataclasses import replace

    rescored = run_experiment(replace(plan, scales=(128,)), tmp_path / "ds")  # other scales: score, never retrain
    assert trained == [redo / "run"]
    assert [r.scored != f.scored for r, f in zip(rescored, first)] == [True] * 6 + [False] * 2  # peers: no scales
    assert [r.run for r in rescored] == [r.run for r in first]


def test_experiment_bad_input(manifests: dict[str, Path], tmp_path: Path) -> None:
    base = TrainConfig.tiny(iters=1)
    train, val = str(manifests["train"]), str(manifests["val"])
    cases = [
        (ExperimentPlan("components", (("a", train), ("b", train)), val, base), "components trains on one manifest"),
        (ExperimentPlan("data-strategy", (("a", train), ("b", train), ("c", train)), val, base),
         "at most two training manifests"),
        (ExperimentPlan("data-strategy", (("a", train), ("a", train)), val, base), "labels must differ; got a, a"),
        (ExperimentPlan("components", (("a", str(tmp_path / "nope")),), val, base), "trains .*nope: no such"),
        (ExperimentPlan("components", (("a", train),), str(tmp_path / "nope"), base), "test .*nope: no such"),
        (ExperimentPlan("tables", (("a", train),), val, base), "experiment='tables' is not allowed; choose one of"),
        (ExperimentPlan("components", (("a", train),), val, TrainConfig.tiny(encoder="googlenet")),
         "encoder googlenet is width 1 with batch norm; got width 0.125"),
    ]
    for plan, message in cases:
        with pytest.raises(OptionError, match=message):
            run_experiment(plan, tmp_path / "out")
    result = run("experiment", "tables", "--train", train, "--test", val, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "'tables' is not one of 'components', 'data-strategy'" in result.output


def test_command_options_name_what_differs() -> None:
    assert TrainConfig().command_options() == []
    assert TrainConfig.tiny(gray=False, train_scales=(128,), anchors=9).command_options(tiny=True) == [
        "--tiny", "--train-scales", "128", "--anchors", "9", "--no-gray"]
    with pytest.raises(ValueError, match="max_size=999 differs from the default configuration and is no"):
        TrainConfig(max_size=999).command_options()


def test_cli_fields_are_exactly_the_training_options() -> None:
    from baseline.config import CLI_FIELDS

    for command in ("train-baseline", "experiment"):
        params = {p.name for p in main.commands[command].params}
        assert set(CLI_FIELDS) <= params, command
    extra = {p.name for p in main.commands["train-baseline"].params} - set(CLI_FIELDS)
    assert extra == {"manifest", "out", "val", "root", "minutes", "tiny", "resume", "distributed"}


def test_every_input_is_checked_before_the_first_row_trains(manifests: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import baseline.engine

    def no_training(*args, **kwargs):
        raise AssertionError("a row trained before the inputs were checked")

    monkeypatch.setattr(baseline.engine, "train", no_training)
    (tmp_path / "not_a_manifest").mkdir()
    base = ["experiment", "components", "--train", str(manifests["train"]), "--out", str(tmp_path / "x"), *TOY]
    r = run(*base, "--test", str(tmp_path / "not_a_manifest"), "--scales", "128")
    assert r.exit_code == 2 and "is not a manifest directory: missing" in r.output
    r = run(*base, "--test", str(manifests["val"]), "--scales", "8")
    assert r.exit_code == 2 and "--scales 8: each test scale must be >= 16 pixels" in r.output
    r = run(*base, "--test", str(manifests["train"]), "--scales", "128")
    assert r.exit_code == 2 and f"--test {manifests['train']} holds the same images as --train" in r.output
    import shutil

    shutil.copytree(manifests["train"], tmp_path / "copy")  # the same images under another name
    r = run(*base, "--test", str(tmp_path / "copy"), "--scales", "128")
    assert r.exit_code == 2 and "holds the same images as --train" in r.output
    plan = ExperimentPlan("components", (("x", str(manifests["train"])),), str(tmp_path / "copy"),
                          TrainConfig.tiny(), tiny=True, scales=(128,))
    with pytest.raises(OptionError, match=r"^test .*copy holds the same images as trains .*train: scores on"):
        run_experiment(plan, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
