"""bench/report/ imports run one way: each module imports only modules of lower layers.

Every import is checked, also those inside functions, so that a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bench.report

PACKAGE = Path(bench.report.__file__).parent
# Bottom to top: a module may import only those listed before it.
LAYERS = ["stats", "data", "rows", "runs", "summary", "categories", "diversity", "curves", "frontier", "papers",
          "trainlog", "plots", "charts", "grids", "document", "fmt", "content", "render_md", "render_html",
          "render_data", "writer"]
# Modules of the project outside the package each may import: the store, the registry (what a reward measures
# where an older store does not say), and for the published numbers the checkpoint catalogue.
OUTSIDE = {"bench.store", "bench.registry"}
EXTRA = {"papers": {"bench.checkpoints"}}


def _imported(path: Path) -> set[str]:
    """The bench.report modules (and other bench modules, as 'bench.X') a file imports anywhere."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench"):
            if node.module == "bench.report":
                names |= {a.name for a in node.names}
            elif node.module.startswith("bench.report."):
                names.add(node.module.split(".")[2])
            else:
                names.add(node.module if node.module != "bench" else "bench." + node.names[0].name)
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[2] if a.name.startswith("bench.report.") else a.name for a in node.names
                      if a.name.startswith("bench")}
    return names


def test_every_module_has_a_layer():
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(LAYERS)


def test_imports_point_down_only():
    for i, module in enumerate(LAYERS):
        imported = _imported(PACKAGE / f"{module}.py")
        inside = {m for m in imported if m in LAYERS}
        assert inside <= set(LAYERS[:i]), f"{module} imports {sorted(inside - set(LAYERS[:i]))} from above it"
        assert imported - inside <= OUTSIDE | EXTRA.get(module, set()), f"{module} imports {sorted(imported - inside)}"


def test_the_package_init_imports_nothing():
    assert _imported(PACKAGE / "__init__.py") == set()
