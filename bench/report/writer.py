"""The one entry point: render a report in one format and write it, with its folder of figures.

Markdown and HTML reports get a folder beside them, ``<name>_files/``, holding the charts and the
grid images, referenced by relative paths: copy the report file and its folder anywhere and it
reads offline. JSON and CSV are data only; CSV, being the rows alone, skips every summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

from bench.report import render_data, render_html, render_md
from bench.report.document import Document, assemble
from bench.store import Store


class Format(NamedTuple):
    render: Callable[[Document], str]
    files: bool  # charts and grid images in <name>_files/
    rows_only: bool  # the rows are all it shows


FORMATS = {
    "md": Format(render_md.render, files=True, rows_only=False),
    "html": Format(render_html.render, files=True, rows_only=False),
    "json": Format(render_data.render_json, files=False, rows_only=False),
    "csv": Format(render_data.render_csv, files=False, rows_only=True),
}


def write(
    store: Store,
    fmt: str,
    out: Path | None = None,
    reports_dir: Path = Path("reports"),
    suites: list[str] | None = None,
    methods: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[Path, str]:
    """Render the report in ``fmt`` to ``out`` (default ``reports_dir/report.<fmt>``); returns (path, text)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; available: {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    path = Path(out) if out is not None else Path(reports_dir) / f"report.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    assets = path.parent / f"{path.stem}_files" if spec.files else None
    doc = assemble(store, suites, methods, n_boot, seed, assets_dir=assets, rows_only=spec.rows_only)
    text = spec.render(doc)
    path.write_text(text, encoding="utf-8")
    return path, text
