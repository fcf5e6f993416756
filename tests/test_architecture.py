"""Which way the imports run (DESIGN.md): no circles among the project's modules, lazy imports inside
functions included; ``methods`` and ``metrics`` never import ``bench`` nor each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "methods", "metrics")


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The project modules a file imports anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in MODULES}


GRAPH = {m: _imports(p) - {m} for m, p in MODULES.items()}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), list(GRAPH[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(GRAPH[m])
    return seen


def test_no_import_circle_anywhere():
    circles = sorted(m for m in GRAPH if m in _reachable(m))
    assert not circles, f"import circles through {circles}"


@pytest.mark.parametrize("lower, forbidden", [("methods", ("bench", "metrics")), ("metrics", ("bench", "methods"))])
def test_the_lower_floors_import_neither_the_application_nor_each_other(lower, forbidden):
    wrong = sorted((m, i) for m, imports in GRAPH.items() if m.split(".")[0] == lower
                   for i in imports if i.split(".")[0] in forbidden)
    assert not wrong, f"{lower} imports {wrong}"


def test_the_check_sees_a_circle():
    GRAPH["methods.core.types"].add("methods.core.api")  # api imports types: together a circle
    try:
        assert "methods.core.api" in _reachable("methods.core.api")
    finally:
        GRAPH["methods.core.types"].discard("methods.core.api")
