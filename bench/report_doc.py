"""The full report: rows, ranking, breakdowns, costs, charts and image grids, gathered once and
rendered as Markdown or HTML (``bench.report_md``, ``bench.report_html``) or as JSON.

Everything is read from the store; nothing is trained, sampled or scored. Markdown and HTML reports
are written with a folder beside them, ``<name>_files/``, holding the charts and the grid images,
referenced by relative paths: copy the report file and its folder anywhere and it reads offline.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import grids as grid_module
from bench import report, report_categories, report_summary
from bench.store import Store

FORMATS = ("md", "html", "json", "csv")
ALPHA = 0.05


@dataclass
class Figure:
    src: str  # file name inside the report's folder
    alt: str
    width: int
    height: int


@dataclass
class Document:
    rows: list[dict[str, Any]]
    provenance: dict[str, Any]
    ranking: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    costs: list[dict[str, Any]]
    labels: dict[str, str]  # run_id -> the name a reader sees
    generated_at: str
    options: dict[str, Any]
    assets: str | None = None  # the folder of charts and images, relative to the report file
    figures: dict[str, list[Figure]] = field(default_factory=dict)  # suite -> charts
    grids: list[grid_module.Grid] = field(default_factory=list)
    missing_images: int = 0

    def reward_name(self, key: str) -> str:
        """``reward (version)`` shortened to ``reward`` where the report holds one version of it."""
        reward = key.rsplit(" (", 1)[0]
        versions = {r["reward_version"] for r in self.rows if r["reward"] == reward}
        return reward if len(versions) == 1 else key

    def asset(self, name: str) -> str:
        """The URL of a file of the report's folder, relative to the report (percent-encoded)."""
        return quote(f"{self.assets}/{name}")

    @property
    def suites(self) -> list[str]:
        return sorted({r["suite"] for r in self.rows})

    @property
    def n_comparisons(self) -> int:
        return sum(r["p_value"] is not None for r in self.rows)


def _slug(name: str) -> str:
    """A file-name-safe, collision-free stem for a suite name (which may be any file's stem)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name)[:40].strip("-") + "-" + hashlib.sha1(name.encode()).hexdigest()[:6]


def _runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs shown, each once: base runs first, then by method, model and run_id."""
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(r["run_id"], r)
    return sorted(seen.values(), key=lambda r: (r["method"] != "base", r["method"], r["model"], r["run_id"]))


def _winrate_panels(rows: list[dict[str, Any]], doc: Document, colour: dict[str, int]) -> list[dict[str, Any]]:
    panels = []
    for (_, reward, version), table in report.tables(rows).items():
        compared = [r for r in table if r["win_rate"] is not None]
        if compared:
            panels.append({"title": f"{reward} ({version})", "labels": [doc.labels[r["run_id"]] for r in compared],
                           "win_rate": [r["win_rate"] for r in compared], "ci_low": [r["ci_low"] for r in compared],
                           "ci_high": [r["ci_high"] for r in compared],
                           "significant": [r["p_holm"] < ALPHA for r in compared],
                           "colours": [colour[r["run_id"]] for r in compared]})
    return panels


def _figures(store: Store, doc: Document, folder: Path) -> None:
    from bench import plots

    colour = {run["run_id"]: i for i, run in enumerate(_runs(doc.rows))}
    hists = report_summary.histograms(store, doc.rows)
    for suite in doc.suites:
        in_suite = [r for r in doc.rows if r["suite"] == suite]
        figs = []
        panels = _winrate_panels(in_suite, doc, colour)
        if panels:
            name = f"winrate-{_slug(suite)}.png"
            w, h = plots.winrate_chart(panels, folder / name)
            figs.append(Figure(name, f"Win rate against base with 95% CI, suite {suite}", w, h))
        dist = [{"title": f"{h_['reward']} ({h_['reward_version']})", "edges": h_["edges"],
                 "series": [(doc.labels[rid], counts, colour[rid]) for rid, counts in
                            sorted(h_["counts"].items(), key=lambda kv: colour[kv[0]])]}
                for h_ in hists if h_["suite"] == suite]
        if dist:
            name = f"scores-{_slug(suite)}.png"
            w, h = plots.distributions_chart(dist, folder / name)
            figs.append(Figure(name, f"Score distributions per method, suite {suite}", w, h))
        doc.figures[suite] = figs


def assemble(
    store: Store,
    suites: list[str] | None = None,
    methods: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    assets_dir: Path | None = None,
) -> Document:
    """Gather the report; with ``assets_dir``, also draw the charts and copy the grid images into it."""
    report.check_filters(store, suites, methods)
    prompts = report.per_prompt(store, suites)  # one scan of the scores, shared by rows, categories and grids
    rows = report.build(store, suites=suites, methods=methods, n_boot=n_boot, seed=seed, prompts=prompts)
    runs = _runs(rows)
    doc = Document(
        rows=rows,
        provenance=report.provenance(store, rows, n_boot=n_boot, seed=seed),
        ranking=report_summary.ranking(rows),
        categories=report_categories.breakdown(store, rows, n_boot=n_boot, seed=seed, prompts=prompts),
        costs=report_summary.costs(store, rows),
        labels=dict(zip((r["run_id"] for r in runs), report.labels(runs))),
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        options={"suites": suites, "methods": methods, "n_boot": n_boot, "seed": seed},
    )
    if assets_dir is not None and rows:
        assets_dir.mkdir(parents=True, exist_ok=True)
        doc.assets = assets_dir.name
        _figures(store, doc, assets_dir)
        doc.grids = grid_module.select(store, rows, doc.labels, prompts=prompts)
        doc.missing_images = grid_module.materialise(doc.grids, assets_dir)
    return doc


def json_extra(doc: Document) -> dict[str, Any]:
    """What the JSON report holds beside rows and provenance."""
    return {"ranking": doc.ranking, "categories": doc.categories, "costs": doc.costs,
            "labels": doc.labels, "generated_at": doc.generated_at}


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
    """Render the report in ``fmt`` to ``out`` (default ``reports_dir/report.<fmt>``); returns (path, text).

    Markdown and HTML get their charts and images in ``<out stem>_files/`` beside the file.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; available: {', '.join(FORMATS)}")
    path = Path(out) if out is not None else Path(reports_dir) / f"report.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        rows = report.build(store, suites=suites, methods=methods, n_boot=n_boot, seed=seed)
        text = report.render(rows, {}, "csv")
    else:
        assets = path.parent / f"{path.stem}_files" if fmt in ("md", "html") else None
        doc = assemble(store, suites, methods, n_boot, seed, assets_dir=assets)
        if fmt == "json":
            text = report.render(doc.rows, doc.provenance, "json", extra=json_extra(doc))
        elif fmt == "md":
            from bench import report_md

            text = report_md.render(doc)
        else:
            from bench import report_html

            text = report_html.render(doc)
    path.write_text(text, encoding="utf-8")
    return path, text
