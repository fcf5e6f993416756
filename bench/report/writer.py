"""The one entry point: render a report in one format and write it, with its folder of figures.

Markdown and HTML reports get a folder beside them, ``<name>_files/``, holding the charts and the
grid images, referenced by relative paths: copy the report file and its folder anywhere and it
reads offline. JSON and CSV are data only; CSV, being the rows alone, skips every summary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple

from bench.report import render_data, render_html, render_md
from bench.report.document import Document, assemble
from bench.report.frontier import AMORTISE
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


def check_out(fmt: str, out: Path | None = None, reports_dir: Path = Path("reports")) -> Path:
    """Where the report of ``fmt`` goes; ValueError, before any work, when it cannot be written there (the
    path or its ``<name>_files/`` folder is a directory or a file in the way, or the folder is not writable).
    Creates nothing."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; available: {', '.join(FORMATS)}")
    path = Path(out) if out is not None else Path(reports_dir) / f"report.{fmt}"
    if path.is_dir():
        raise ValueError(f"--out {path} is a directory; name the report file, e.g. {path / f'report.{fmt}'}")
    if FORMATS[fmt].files and (path.parent / f"{path.stem}_files").exists() \
            and not (path.parent / f"{path.stem}_files").is_dir():
        raise ValueError(f"cannot write the report's figures to {path.parent / f'{path.stem}_files'}: a file is "
                         "in the way")
    existing = path.parent.absolute()
    while not existing.exists() and existing != existing.parent:  # where a mkdir -p would start
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write the report to {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"cannot write the report to {path}: permission denied")
    return path


def write(
    store: Store,
    fmt: str,
    out: Path | None = None,
    reports_dir: Path = Path("reports"),
    suites: list[str] | None = None,
    methods: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    warn: Callable[[str], None] | None = None,
    amortise: int = AMORTISE,
) -> tuple[Path, str]:
    """Render the report in ``fmt`` to ``out`` (default ``reports_dir/report.<fmt>``); returns (path, text).

    ``warn`` is called with each row the report left out or shows as missing (``Document.warnings``).
    ``amortise``: the images a training run's cost is amortised over in the compute-matched frontier.
    """
    if isinstance(amortise, bool) or not (isinstance(amortise, int) and amortise > 0):
        raise ValueError(f"amortise must be a positive whole number of images, got {amortise!r}")
    path = check_out(fmt, out, reports_dir)
    spec = FORMATS[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    assets = path.parent / f"{path.stem}_files" if spec.files else None
    doc = assemble(store, suites, methods, n_boot, seed, assets_dir=assets, rows_only=spec.rows_only,
                   amortise=amortise)
    for w in doc.warnings if warn is not None else ():
        warn(w)
    text = spec.render(doc)
    path.write_text(text, encoding="utf-8")
    return path, text
