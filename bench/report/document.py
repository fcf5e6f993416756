"""One Document gathering everything a report shows: rows, ranking, breakdowns, costs, diversity, the
over-optimisation curves, training curves, the compute-matched frontier, published numbers, charts, grids.

Everything is read from the store; nothing is trained, sampled or scored. The renderers only lay a
Document out; they read nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.report import categories, charts, curves, data, diversity, frontier, grids, papers, summary, trainlog
from bench.report import rows as report_rows
from bench.report import runs as report_runs
from bench.store import Store


@dataclass
class Document:
    rows: list[dict[str, Any]]  # one per (suite, reward version, arm): rows.ROW_KEYS
    replicate_rows: list[dict[str, Any]] = field(default_factory=list)  # one per run: rows.REPLICATE_ROW_KEYS
    provenance: dict[str, Any] = field(default_factory=dict)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    categories: list[dict[str, Any]] = field(default_factory=list)
    costs: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # run_id -> the name a reader sees
    replicate_labels: dict[str, str] = field(default_factory=dict)  # run of an arm of K > 1 -> "dpo · train seed 1"
    settings: dict[str, str | None] = field(default_factory=dict)  # run_id -> its sampler settings, as text
    relations: list[dict[str, Any]] = field(default_factory=list)  # rewards the runs shown are not held out from
    roles: data.Roles = field(default_factory=data.Roles)  # what each reward measures (stored ones)
    generated_at: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    directions: data.Directions = field(default_factory=data.Directions)  # which way each reward is better
    assets: str | None = None  # the folder of charts and images, relative to the report file
    figures: dict[str, list[charts.Figure]] = field(default_factory=dict)  # suite -> charts
    grids: list[grids.Grid] = field(default_factory=list)
    missing_images: int = 0
    warnings: list[str] = field(default_factory=list)  # rows left out or shown as missing (data.anomalies)
    curves: list[dict[str, Any]] = field(default_factory=list)  # over-optimisation points: curves.POINT_KEYS
    curve_flags: list[dict[str, Any]] = field(default_factory=list)  # curves.flags: one per (suite, final run)
    diversity: list[dict[str, Any]] = field(default_factory=list)  # diversity.ROW_KEYS, per run, space and subset
    training: list[dict[str, Any]] = field(default_factory=list)  # trainlog.build: one per (artifact, metric)
    frontier: list[dict[str, Any]] = field(default_factory=list)  # frontier.build: one per suite
    papers: list[dict[str, Any]] = field(default_factory=list)  # papers.compare: published numbers beside ours
    curve_figures: dict[str, charts.Figure] = field(default_factory=dict)  # suite -> its curves chart
    frontier_figures: dict[str, charts.Figure] = field(default_factory=dict)  # suite -> its frontier chart
    training_figures: list[tuple[str, charts.Figure]] = field(default_factory=list)  # (family, chart)

    def reward_name(self, key: str) -> str:
        """``reward (version)`` shortened to ``reward`` where the report holds one version of it."""
        reward = key.rsplit(" (", 1)[0]
        versions = {r["reward_version"] for r in self.rows if r["reward"] == reward}
        return reward if len(versions) == 1 else key

    def mark(self, run_id: str, reward: str) -> str:
        """' †' / ' ‡' where the run (or its arm) is not held out from the reward, else ''."""
        return report_rows.mark(self._marks.get((run_id, reward)))

    @property
    def _marks(self) -> dict[tuple[str, str], str]:
        return {(r["run_id"], r["reward"]): r["reward_relation"] for r in self.rows if r["reward_relation"]}

    @property
    def marked(self) -> list[str]:
        """The relations some row of the report is marked with, in MARKS order."""
        found = {r["reward_relation"] for r in self.rows}
        return [rel for rel in report_rows.MARKS if rel in found]

    def run_label(self, run_id: str) -> str:
        """The name of one run: a replicate of an arm of K > 1 with its training seed."""
        return self.replicate_labels.get(run_id) or self.labels[run_id]

    @property
    def names(self) -> dict[str, str]:
        """run_id -> ``run_label`` of every run shown (each training replicate too)."""
        return {**self.labels, **self.replicate_labels}


    @property
    def has_replicates(self) -> bool:
        """Whether some arm shown has several training replicates."""
        return any(r["n_replicates"] > 1 for r in self.rows)

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


def _replicate_labels(rows: list[dict[str, Any]], replicate_rows: list[dict[str, Any]],
                      labels: dict[str, str]) -> dict[str, str]:
    """run_id -> "<arm's label> · train seed <s>" for every replicate of an arm shown with K > 1."""
    seeds = {r["run_id"]: r["train_seed"] for r in replicate_rows}
    return {rid: f"{labels[r['run_id']]} · train seed {seeds[rid]}" for r in rows if r["n_replicates"] > 1
            for rid in r["run_ids"]}


def _relations(known: data.Known, replicate_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{run_id, reward, relation, reason}] of the runs shown: the rewards they are not held out from."""
    shown = {r["run_id"] for r in replicate_rows}
    return [{"run_id": rid, "reward": reward, "relation": rel, "reason": why}
            for rid, rewards in sorted(known.relations.items()) if rid in shown
            for reward, (rel, why) in sorted(rewards.items())]


def _draw(store: Store, doc: Document, prompts, folder: Path) -> None:
    """Draw the charts and copy the grid images into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    doc.assets = folder.name
    hists = summary.histograms(store, doc.rows)
    doc.figures = charts.draw(doc.rows, doc.labels, hists, doc.directions, folder)
    colour = charts.run_colours(doc.rows)
    doc.curve_figures = charts.draw_curves(doc.curves, doc.names, folder)
    doc.frontier_figures = charts.draw_frontier(doc.frontier, doc.names, colour, folder)
    doc.training_figures = charts.draw_training(doc.training, doc.names, colour, folder)
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
    amortise: int = frontier.AMORTISE,
) -> Document:
    """Gather the report; with ``assets_dir``, also draw the charts and copy the grid images into it.

    ``rows_only``: the rows alone (what a CSV holds), skipping every summary. ``amortise``: the images a
    training run is amortised over in the compute-matched frontier.
    """
    data.check_filters(store, suites, methods)
    warnings = data.anomalies(store, suites)
    prompts = data.per_prompt(store, suites)  # one scan of the scores, shared by rows, categories and grids
    known = data.known(store)  # the runs, relations and roles: read once, used by every part
    rows, replicate_rows = report_rows.build_all(store, suites=suites, methods=methods, n_boot=n_boot, seed=seed,
                                                 prompts=prompts, known=known)
    if rows_only:
        return Document(rows, replicate_rows=replicate_rows, warnings=warnings)
    runs = known.runs
    shown = report_runs.shown(rows)
    labels = dict(zip((r["run_id"] for r in shown),
                      report_runs.labels([{**r, "settings": runs[r["run_id"]]["settings"],
                                          "n": runs[r["run_id"]]["n"]} for r in shown])))
    directions = data.directions(store)
    costs = summary.costs(store, replicate_rows)
    shown_runs = list(dict.fromkeys(r["run_id"] for r in replicate_rows))
    points = curves.build(store, prompts, shown_runs, suites, n_boot=n_boot, seed=seed, known=known)
    doc = Document(
        rows=rows,
        replicate_rows=replicate_rows,
        provenance=report_runs.provenance(store, rows, n_boot=n_boot, seed=seed,
                                          also={p["run_id"] for p in points}),
        ranking=summary.ranking(rows),
        categories=categories.breakdown(store, rows, n_boot=n_boot, seed=seed, prompts=prompts),
        costs=costs,
        labels=labels,
        replicate_labels=_replicate_labels(rows, replicate_rows, labels),
        settings={rid: run["settings"] for rid, run in runs.items()},
        relations=_relations(known, replicate_rows),
        roles=known.roles,
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        options={"suites": suites, "methods": methods, "n_boot": n_boot, "seed": seed, "amortise": amortise},
        directions=directions,
        warnings=warnings,
        curves=points,
        curve_flags=curves.flags(points),
        diversity=diversity.build(store, shown_runs, suites, n_boot=n_boot, seed=seed,
                                  fidelity=data.FAITHFUL_REWARD in set(prompts["reward"]), runs=runs,
                                  warnings=warnings),
        training=trainlog.build(store, shown_runs, runs=runs),
        frontier=frontier.build(replicate_rows, costs, {rid: run["n"] for rid, run in runs.items()}, amortise),
        papers=papers.compare(rows, {rid: run["published"] for rid, run in runs.items()}),
    )
    if assets_dir is not None and rows:
        _draw(store, doc, prompts, assets_dir)
    return doc
