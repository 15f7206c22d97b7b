"""benchmarks/results.py: RESULTS.md's marked tables match their stored runs, and a changed figure fails."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results():
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "benchmarks" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_md_matches_its_stored_runs(results) -> None:
    text = (ROOT / "RESULTS.md").read_text()
    assert results.check(text) == []
    assert len(results.BLOCK.findall(text)) >= 3
    assert results.render(text) == text  # rendering changes nothing: the tables are the runs'


def test_one_changed_figure_fails_naming_table_and_figure(results, tmp_path: Path) -> None:
    text = (ROOT / "RESULTS.md").read_text()
    match = results.BLOCK.search(text)
    table = match["table"]
    number = re.search(r"\| (\d[\d,.]*) \|", table)
    changed = table[: number.start(1)] + "9" + table[number.start(1):]
    copy = tmp_path / "RESULTS.md"
    copy.write_text(text[: match.start("table")] + changed + text[match.end("table"):])
    assert results.main(["check", "--results", str(copy)]) == 1
    problems = results.check(copy.read_text())
    assert len(problems) == 1 and f"table of {match['file']}" in problems[0]
    assert f"'9{number.group(1)}' where the stored run has '{number.group(1)}'" in problems[0]
    assert results.main(["render", "--results", str(copy)]) == 0 and results.check(copy.read_text()) == []


def test_a_stored_run_records_its_provenance(results, tmp_path: Path) -> None:
    path = results.store("demo", "CPU: test machine, 2 cores", {"seconds": 1.5}, ["step", "seconds"],
                         [["one", "1.5"]], folder=tmp_path)
    doc = json.loads(path.read_text())
    assert path.name.endswith("-cpu-test-machine-2-cores-demo.json")
    assert doc["figures"] == {"seconds": 1.5} and doc["table"]["rows"] == [["one", "1.5"]]
    assert doc["commit"] and doc["machine"] == "CPU: test machine, 2 cores" and doc["date"]
    text = f"<!-- run: {path.name} -->\n| x |\n<!-- /run -->"
    assert results.render(text, tmp_path).count("| one | 1.5 |") == 1
    assert "no such stored run" in results.check("<!-- run: nope.json -->\n| a |\n<!-- /run -->", tmp_path)[0]


def test_an_evaluation_becomes_a_stored_run_with_the_table_it_printed(results, ilsvrc_val_1300: Path,
                                                                      tmp_path: Path) -> None:
    from click.testing import CliRunner

    from eic_builder.cli import main
    from eic_builder.scan.scanner import scan

    scan(ilsvrc_val_1300, tmp_path / "m")
    r = CliRunner().invoke(main, ["--no-progress", "eval-baseline", str(tmp_path / "m"), "--out", str(tmp_path / "e"),
                                  "--method", "sliding-window", "--max-images", "6"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert doc["command"] and doc["machine"] and doc["date"]  # the command is this process's own argv
    assert results.main(["import", str(tmp_path / "e"), "--name", "demo", "--runs", str(tmp_path / "runs")]) == 0
    (path,) = (tmp_path / "runs").iterdir()
    run = json.loads(path.read_text())
    printed = (tmp_path / "e" / "metrics.md").read_text()
    for row in run["table"]["rows"]:
        assert "| " + " | ".join(row) + " |" in printed  # the very table metrics.md shows
    assert run["figures"]["results"]["sliding-window"]["AR@100"] == doc["results"]["sliding-window"]["AR@100"]
    # several evaluations (variants of a recipe) as one table, each row named by its folder's label
    assert results.main(["import", str(tmp_path / "e"), str(tmp_path / "e"), "--labels", "base,again", "--name",
                         "variants", "--runs", str(tmp_path / "many")]) == 0
    (many,) = (tmp_path / "many").iterdir()
    both = json.loads(many.read_text())
    assert [row[0] for row in both["table"]["rows"]] == ["base: sliding-window", "again: sliding-window"]
    assert both["table"]["rows"][0][1:] == run["table"]["rows"][0][1:] and set(both["figures"]) == {"base", "again"}
    with pytest.raises(SystemExit, match="one label per folder"):
        results.import_evaluations([tmp_path / "e"], ["a", "b"], "x", tmp_path / "many")


def test_an_experiment_table_becomes_a_stored_run(results, tmp_path: Path) -> None:
    from dataclasses import asdict

    from baseline.experiment import RowResult, table_rows

    rows = [RowResult("30 anchors", {"Rec@0.5@300": 0.8, "AR@300": 0.4}, {"Rec@0.5": "94.51"}, ["a", "b"], 10, 5.0),
            RowResult("9 anchors", {"Rec@0.5@300": 0.7, "AR@300": 0.3}, {}, ["c"], 10, 4.0, reference="30 anchors")]
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "table.json").write_text(json.dumps({
        "experiment": "components", "rows": [asdict(r) for r in rows], "command": "eic-build experiment components",
        "machine": "CPU: test", "date": "2026-11-30"}))
    path = results.import_evaluation(tmp_path / "exp", "components-demo", tmp_path / "runs")
    run = json.loads(path.read_text())
    table = table_rows("components", rows)
    assert run["table"]["header"] == [k for k in table[0] if k != "commands"]
    assert [r[0] for r in run["table"]["rows"]] == ["30 anchors", "9 anchors"]
    assert run["table"]["rows"][1] == [table[1][k] for k in run["table"]["header"]]
    assert run["command"] == "eic-build experiment components" and run["machine"] == "CPU: test"


def test_a_table_of_figures_outside_the_markers_fails(results, tmp_path: Path) -> None:
    text = (ROOT / "RESULTS.md").read_text()
    typed = "\n## Typed by hand\n\n| Method | AR@100 |\n|---|---:|\n| rpn | 41.20 |\n\n"
    problems = results.check(text + typed)
    assert len(problems) == 1 and "figures without a stored run" in problems[0] and "| Method | AR@100 |" in problems[0]
    assert results.check(text + "\n| step | note |\n|---|---|\n| read | streamed |\n") == []  # words, no figures


def test_every_benchmark_can_store_its_run() -> None:
    scripts = [*sorted((ROOT / "benchmarks").glob("bench_*.py")), ROOT / "benchmarks" / "quality_sweep.py"]
    lacking = [s.name for s in scripts if '"--store"' not in s.read_text() or "store(" not in s.read_text()]
    assert len(scripts) >= 13 and lacking == []


def test_a_table_without_outer_pipes_outside_the_markers_fails(results) -> None:
    text = (ROOT / "RESULTS.md").read_text()
    bare = "\n## Typed by hand\n\nMethod | AR@100\n---|---:\nrpn | 41.20\n\n"
    problems = results.check(text + bare)
    assert len(problems) == 1 and "figures without a stored run" in problems[0] and "Method | AR@100" in problems[0]


def test_an_extra_column_of_figures_in_a_marked_table_fails(results, tmp_path: Path) -> None:
    text = (ROOT / "RESULTS.md").read_text()
    match = results.BLOCK.search(text)
    lines = match["table"].splitlines()
    widened = "\n".join(line + " 1.00 |" if line.startswith("|") and not set(line) <= set("|-: ") else
                        (line + "---:|" if line.startswith("|") else line) for line in lines)
    copy = text[: match.start("table")] + widened + text[match.end("table"):]
    problems = results.check(copy)
    assert problems and all("cells, the stored run has" in p for p in problems)
    assert len(problems) == len(lines) - 3  # header and every row; not the delimiter, blank and footer lines


def test_a_stored_run_cut_short_is_named(results, tmp_path: Path) -> None:
    path = results.store("demo", "CPU: test", {"s": 1}, ["step", "seconds"], [["one", "1.5"]], folder=tmp_path)
    text = results.render(f"<!-- run: {path.name} -->\n| x |\n<!-- /run -->", tmp_path)
    whole = path.read_text()
    path.write_text(whole[: len(whole) // 2])
    (problem,) = results.check(text, tmp_path)
    assert path.name in problem and "is not a stored run (JSONDecodeError" in problem
    copy = tmp_path / "R.md"
    copy.write_text(text)
    assert results.main(["render", "--results", str(copy), "--runs", str(tmp_path)]) == 1
    assert results.main(["check", "--results", str(copy), "--runs", str(tmp_path)]) == 1


def test_a_stored_run_of_another_shape_is_named(results, tmp_path: Path) -> None:
    path = results.store("demo", "CPU: test", {"s": 1}, ["step", "seconds"], [["one", "1.5"]], folder=tmp_path)
    text = results.render(f"<!-- run: {path.name} -->\n| x |\n<!-- /run -->", tmp_path)
    doc = json.loads(path.read_text())
    doc["table"]["rows"] = [["one", 1.5]]  # a figure that is not text
    path.write_text(json.dumps(doc))
    (problem,) = results.check(text, tmp_path)
    assert path.name in problem and "not a list of text cells" in problem
    del doc["table"]
    path.write_text(json.dumps(doc))
    assert "is not a stored run (KeyError" in results.check(text, tmp_path)[0]


def _metrics(ar100: float, rec: float) -> dict:
    figures = {"AR@10": 0.1, "AR@100": ar100, "AR@300": 0.5, "AR@500": 0.5, "AR@1000": 0.5, "Rec@0.5@300": rec,
               "recall@0.70@300": 0.3, "AR_small@100": 0.0, "AR_medium@100": 0.2, "AR_large@100": 0.4}
    return {"results": {"rpn": figures, "selective-search": figures}, "recall_k": 300, "machine": "CPU: test",
            "command": "eic-build eval-baseline ...", "date": "2026-12-06"}


def test_seed_runs_become_mean_and_deviation(results, tmp_path: Path) -> None:
    """AR@100 of 0.40, 0.44, 0.48 over three seeds: mean 44.00, sample deviation 4.00 (in %)."""
    dirs = []
    for seed, (ar, rec) in enumerate(((0.40, 0.80), (0.44, 0.80), (0.48, 0.83))):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "metrics.json").write_text(json.dumps(_metrics(ar, rec)))
        dirs.append(tmp_path / f"s{seed}")
    header, rows = results.seed_rows([json.loads((d / "metrics.json").read_text()) for d in dirs], "recipe")
    assert header[2] == "AR@100" and rows[0][0] == "recipe: rpn"
    assert rows[0][2] == "44.00 ± 4.00" and rows[0][6] == "81.00 ± 1.73" and rows[0][1] == "10.00 ± 0.00"
    stored = json.loads(results.import_seeds(dirs, [], 3, "t", tmp_path / "runs").read_text())
    assert stored["seeds"] == 3 and stored["table"]["rows"][1][0] == "selective-search"
    with pytest.raises(SystemExit, match="give 3 folders \\(seeds\\) per label: 3 folders, 2 label"):
        results.import_seeds(dirs, ["a", "b"], 3, "t", tmp_path / "runs")
    other = _metrics(0.4, 0.8)
    other["results"].pop("selective-search")
    with pytest.raises(SystemExit, match="score different methods"):
        results.seed_rows([_metrics(0.4, 0.8), other])
