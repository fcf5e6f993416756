"""One Document gathering everything a report shows: rows, ranking, breakdowns, costs, charts, grids.

Everything is read from the store; nothing is trained, sampled or scored. The renderers only lay a
Document out; they read nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.report import categories, charts, data, grids, summary
from bench.report import rows as report_rows
from bench.report import runs as report_runs
from bench.store import Store


@dataclass
class Document:
    rows: list[dict[str, Any]]
    provenance: dict[str, Any] = field(default_factory=dict)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    categories: list[dict[str, Any]] = field(default_factory=list)
    costs: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # run_id -> the name a reader sees
    generated_at: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    directions: data.Directions = field(default_factory=data.Directions)  # which way each reward is better
    assets: str | None = None  # the folder of charts and images, relative to the report file
    figures: dict[str, list[charts.Figure]] = field(default_factory=dict)  # suite -> charts
    grids: list[grids.Grid] = field(default_factory=list)
    missing_images: int = 0
    warnings: list[str] = field(default_factory=list)  # rows left out or shown as missing (data.anomalies)

    def reward_name(self, key: str) -> str:
        """``reward (version)`` shortened to ``reward`` where the report holds one version of it."""
        reward = key.rsplit(" (", 1)[0]
        versions = {r["reward_version"] for r in self.rows if r["reward"] == reward}
        return reward if len(versions) == 1 else key

    def asset(self, name: str) -> str:
        """The URL of a file of the report's folder, relative to the report (percent-encoded)."""
        return quote(f"{self.assets}/{name}")

    def lower_is_better(self, reward: str, version: str) -> bool:
        return not self.directions[(reward, version)]

    @property
    def lower_rewards(self) -> list[str]:
        """The rewards shown that are lower-is-better, by name (usually none)."""
        return sorted({r["reward"] for r in self.rows if self.lower_is_better(r["reward"], r["reward_version"])})

    @property
    def suites(self) -> list[str]:
        return sorted({r["suite"] for r in self.rows})

    @property
    def n_comparisons(self) -> int:
        return sum(r["p_value"] is not None for r in self.rows)


def _draw(store: Store, doc: Document, prompts, folder: Path) -> None:
    """Draw the charts and copy the grid images into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    doc.assets = folder.name
    hists = summary.histograms(store, doc.rows)
    doc.figures = charts.draw(doc.rows, doc.labels, hists, doc.directions, folder)
    doc.grids = grids.select(store, doc.rows, doc.labels, prompts=prompts, directions=doc.directions)
    doc.missing_images = grids.materialise(doc.grids, folder)


def assemble(
    store: Store,
    suites: list[str] | None = None,
    methods: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    assets_dir: Path | None = None,
    rows_only: bool = False,
) -> Document:
    """Gather the report; with ``assets_dir``, also draw the charts and copy the grid images into it.

    ``rows_only``: the rows alone (what a CSV holds), skipping every summary.
    """
    data.check_filters(store, suites, methods)
    warnings = data.anomalies(store, suites)
    prompts = data.per_prompt(store, suites)  # one scan of the scores, shared by rows, categories and grids
    rows = report_rows.build(store, suites=suites, methods=methods, n_boot=n_boot, seed=seed, prompts=prompts)
    if rows_only:
        return Document(rows, warnings=warnings)
    shown = report_runs.shown(rows)
    directions = data.directions(store)
    doc = Document(
        rows=rows,
        provenance=report_runs.provenance(store, rows, n_boot=n_boot, seed=seed),
        ranking=summary.ranking(rows, directions),
        categories=categories.breakdown(store, rows, n_boot=n_boot, seed=seed, prompts=prompts),
        costs=summary.costs(store, rows),
        labels=dict(zip((r["run_id"] for r in shown), report_runs.labels(shown))),
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        options={"suites": suites, "methods": methods, "n_boot": n_boot, "seed": seed},
        directions=directions,
        warnings=warnings,
    )
    if assets_dir is not None and rows:
        _draw(store, doc, prompts, assets_dir)
    return doc
