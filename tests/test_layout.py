"""The shape of the code: no import circle, no function too complex to read, evaluation apart from training,
one place that resolves a manifest's image root."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("eic_builder", "baseline")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its text (function-local and ``TYPE_CHECKING``
    imports included: a circle hidden in a function is still a circle)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_no_import_circle() -> None:
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_one() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_evaluation_imports_nothing_of_the_training_loop() -> None:
    graph = import_graph()
    training = {"baseline.engine", "baseline.pretrain", "baseline.sampling", "baseline.experiment"}
    for module in ("baseline.eval_run", "baseline.evaluation", "baseline.checkpoint", "baseline.proposals",
                   "baseline.report", "baseline.peers"):
        assert reachable(graph, module) & training == set(), module


def test_the_image_root_is_resolved_in_one_place() -> None:
    callers = [name for name, path in _modules().items()
               if "resolve_image_root(" in path.read_text() and name != "eic_builder.dataset.manifest"]
    assert callers == []


def test_no_function_is_graded_d_or_worse() -> None:
    """radon's grade of every function of the packages and the benchmarks is C or better (complexity <= 20)."""
    radon = pytest.importorskip("radon.complexity", reason="radon is in the dev extra")
    worst = []
    paths = [*_modules().values(), *sorted((ROOT / "benchmarks").glob("*.py"))]
    for path in paths:
        for block in radon.cc_visit(path.read_text()):
            if radon.cc_rank(block.complexity) in "DEF":
                worst.append(f"{path.relative_to(ROOT)}:{block.lineno} {block.fullname} {block.complexity}")
    assert worst == []
