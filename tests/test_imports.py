"""The package's shape: data flows one way. No module imports one that imports it back (directly or round a
circle, lazy imports in functions included), and no stage imports a later one."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "pipeline"
# what a module may import: its own stage and the ones before it (errors, options and timeline sit below all)
STAGES = {"errors": 0, "options": 0, "timeline": 0, "data": 1, "model": 2, "inference": 3, "live": 4, "teach": 5, "cli": 6}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules this file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known} or {node.module}
    return found & known


def stage(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.get(parts[1]) if len(parts) > 1 else None


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk meets, as the modules round it."""
    circles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                circles.append(path[path.index(t) :] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return circles


def test_no_import_circles_and_no_stage_imports_a_later_one():
    mods = modules()
    graph = {m: imports(p, set(mods)) - {m, "pipeline"} for m, p in mods.items()}
    backwards = [(m, t) for m, targets in graph.items() for t in targets
                 if stage(m) is not None and stage(t) is not None and stage(t) > stage(m)]  # fmt: skip
    assert not backwards, f"a stage imports a later one: {backwards}"
    assert not find_circles(graph), f"import circles: {find_circles(graph)}"


def test_the_check_finds_the_circle_this_package_had():
    graph = {"export": {"predictor"}, "predictor": {"runtime", "model"}, "runtime": {"export", "predictor"}, "model": set()}
    assert ["export", "predictor", "runtime", "export"] in find_circles(graph)
    assert not find_circles({"a": {"b"}, "b": {"c"}, "c": set()})
