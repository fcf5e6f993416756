"""Which charts a report has: per suite, win rates against base, score distributions, the over-optimisation
curves and the compute-matched frontier; per method family, the training curves.

Charts are drawn by ``plots`` into the report's folder; a run has the same colour in every chart of
a report (its place among the runs shown).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import data, plots, trainlog
from bench.report import rows as report_rows
from bench.report import runs as report_runs
from bench.report.stats import ALPHA


@dataclass
class Figure:
    src: str  # file name inside the report's folder
    alt: str
    width: int
    height: int


def slug(name: str) -> str:
    """A file-name-safe, collision-free stem for a suite name (which may be any file's stem)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name)[:40].strip("-") + "-" + hashlib.sha1(name.encode()).hexdigest()[:6]


def _winrate_panels(rows: list[dict[str, Any]], labels: dict[str, str], colour: dict[str, int]) -> list[dict]:
    panels = []
    for (_, reward, version), table in report_rows.tables(rows).items():
        compared = [r for r in table if r["win_rate"] is not None]
        if compared:
            panels.append({"title": f"{reward} ({version})",
                           "labels": [labels[r["run_id"]] + report_rows.mark(r["reward_relation"]) for r in compared],
                           "win_rate": [r["win_rate"] for r in compared], "ci_low": [r["ci_low"] for r in compared],
                           "ci_high": [r["ci_high"] for r in compared],
                           "significant": [r["p_holm"] < ALPHA for r in compared],
                           "colours": [colour[r["run_id"]] for r in compared]})
    return panels


def _distribution_panels(hists: list[dict[str, Any]], labels: dict[str, str], colour: dict[str, int],
                         directions: data.Directions) -> list[dict]:
    return [{"title": f"{h['reward']} ({h['reward_version']})",
             "xlabel": "score" if directions[(h["reward"], h["reward_version"])] else "score (lower is better)",
             "edges": h["edges"],
             "series": [(labels[rid], counts, colour[rid])
                        for rid, counts in sorted(h["counts"].items(), key=lambda kv: colour[kv[0]])]}
            for h in hists]


def run_colours(rows: list[dict[str, Any]]) -> dict[str, int]:
    """run_id -> its colour index: its place among the runs shown; a training replicate takes its arm's."""
    colour = {run["run_id"]: i for i, run in enumerate(report_runs.shown(rows))}
    return {**{rid: colour[r["run_id"]] for r in rows for rid in r.get("run_ids") or []}, **colour}


def draw(rows: list[dict[str, Any]], labels: dict[str, str], hists: list[dict[str, Any]],
         directions: data.Directions, folder: Path) -> dict[str, list[Figure]]:
    """Draw every suite's charts into ``folder``; returns suite -> its figures, in reading order.

    ``hists``: ``summary.histograms`` of the rows; ``labels``: run_id -> the name a reader sees.
    """
    colour = run_colours(rows)
    out = {}
    for suite in sorted({r["suite"] for r in rows}):
        figs = []
        panels = _winrate_panels([r for r in rows if r["suite"] == suite], labels, colour)
        if panels:
            name = f"winrate-{slug(suite)}.png"
            w, h = plots.winrate_chart(panels, folder / name)
            figs.append(Figure(name, f"Win rate against base with 95% CI, suite {suite}", w, h))
        dist = _distribution_panels([h for h in hists if h["suite"] == suite], labels, colour, directions)
        if dist:
            name = f"scores-{slug(suite)}.png"
            w, h = plots.distributions_chart(dist, folder / name)
            figs.append(Figure(name, f"Score distributions per method, suite {suite}", w, h))
        out[suite] = figs
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def curve_label(reward: str, version: str, role: str | None, relation: str | None, versions: int) -> str:
    """A curve's legend entry: the reward, its mark and what it is to the run (proxy or held out)."""
    name = reward if versions == 1 else f"{reward} ({version})"
    kind = f"proxy: {relation}" if relation else f"held out{', ' + role if role else ''}"
    return f"{name}{report_rows.mark(relation)} ({kind})"


def draw_curves(points: list[dict[str, Any]], names: dict[str, str], folder: Path) -> dict[str, Figure]:
    """Per suite, one chart of the over-optimisation curves (``curves.build``'s points): a panel per final run,
    a line per reward version; ``names``: run_id -> the name a reader sees."""
    out = {}
    for suite in sorted({p["suite"] for p in points}):
        mine = [p for p in points if p["suite"] == suite]
        rewards = sorted({(p["reward"], p["reward_version"]) for p in mine})
        versions = {r: sum(1 for rr, _ in rewards if rr == r) for r, _ in rewards}
        panels: dict[str, dict[str, Any]] = {}
        for key, curve in _group(mine, lambda p: (p["final_run_id"], p["reward"], p["reward_version"])).items():
            final, reward, version = key
            first = curve[0]
            panel = panels.setdefault(final, {"title": names.get(final, final), "lines": []})
            panel["lines"].append({"label": curve_label(reward, version, first["reward_role"],
                                                        first["reward_relation"], versions[reward]),
                                   "steps": [p["step"] for p in curve], "win_rate": [p["win_rate"] for p in curve],
                                   "ci_low": [p["ci_low"] for p in curve], "ci_high": [p["ci_high"] for p in curve],
                                   "proxy": first["reward_relation"] is not None,
                                   "colour": rewards.index((reward, version))})
        name = f"curves-{slug(suite)}.png"
        w, h = plots.curves_chart(list(panels.values()), folder / name)
        out[suite] = Figure(name, f"Win rate against base over training steps (95% CI), suite {suite}", w, h)
    return out


def _group(items: list[dict[str, Any]], key) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


def frontier_label(point: dict[str, Any], names: dict[str, str]) -> str:
    """``best_of_n N=4`` for a best_of_n point, the run's name otherwise."""
    if point["best_of_n"] and point["n"] is not None:
        return f"best_of_n N={point['n']}"
    return names.get(point["run_id"], point["run_id"])


def draw_frontier(blocks: list[dict[str, Any]], names: dict[str, str], colour: dict[str, int],
                  folder: Path) -> dict[str, Figure]:
    """Per suite, the compute-matched frontier chart (``frontier.build``'s blocks); points without a cost are
    left out of it (the table lists them)."""
    out = {}
    for b in blocks:
        placed = [p for p in b["points"] if p["cost_s"] is not None and p["cost_s"] > 0]
        if not placed:
            continue
        costs = [p["cost_s"] for p in placed]
        by_run = {p["run_id"]: p for p in placed}
        panel = {"title": f"{b['reward']} ({b['reward_version']}) win rate vs base, by cost",
                 "xlabel": f"cost per image, s = train s / {b['amortise']:,} (training amortised over "
                           f"{b['amortise']:,} images) + sample s / images",
                 "points": [{"label": frontier_label(p, names), "cost": p["cost_s"], "win_rate": p["win_rate"],
                             "ci_low": p["ci_low"], "ci_high": p["ci_high"], "best_of_n": p["best_of_n"],
                             "colour": colour.get(p["run_id"], 0)} for p in placed],
                 "line": [(by_run[r]["cost_s"], by_run[r]["win_rate"]) for r in b["best_of_n"] if r in by_run],
                 "log": max(costs) > 20 * min(costs)}
        name = f"frontier-{slug(b['suite'])}.png"
        w, h = plots.frontier_chart(panel, folder / name)
        out[b["suite"]] = Figure(name, f"Compute-matched frontier: {b['reward']} win rate against base by cost per "
                                       f"image, suite {b['suite']}", w, h)
    return out


_STYLES = ("-", "--", "-.", ":")


def draw_training(curves: list[dict[str, Any]], names: dict[str, str], colour: dict[str, int],
                  folder: Path) -> list[tuple[str, Figure]]:
    """One chart per method family of the training curves (``trainlog.build``): a panel per metric, a line per
    run (replicates of an arm share its colour, told apart by the line style)."""
    out = []
    for fam, metrics, cs in trainlog.families(curves):
        styles: dict[str, str] = {}
        per_colour: dict[int, int] = {}
        for c in cs:
            if c["run_id"] not in styles:
                k = colour.get(c["run_id"], 0)
                styles[c["run_id"]] = _STYLES[per_colour.get(k, 0) % len(_STYLES)]
                per_colour[k] = per_colour.get(k, 0) + 1
        panels = [{"title": trainlog.METRICS[m], "zero": m.startswith("rel_"),
                   "lines": [{"label": names.get(c["run_id"], c["run_id"]), "steps": c["steps"], "values": c["values"],
                              "colour": colour.get(c["run_id"], 0), "style": styles[c["run_id"]]}
                             for c in cs if c["name"] == m]} for m in metrics]
        methods = ", ".join(dict.fromkeys(c["method"] for c in cs))
        name = f"training-{slug(fam)}.png"
        w, h = plots.training_chart(panels, f"{fam} ({methods})" if methods != fam else fam, folder / name)
        out.append((fam, Figure(name, f"Training curves of {fam} ({methods}): "
                                      f"{', '.join(trainlog.METRICS[m] for m in metrics)}", w, h)))
    return out
