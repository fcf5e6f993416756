"""Which charts a report has: per suite, win rates against base and score distributions.

Charts are drawn by ``plots`` into the report's folder; a run has the same colour in every chart of
a report (its place among the runs shown).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import data, plots
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


def draw(rows: list[dict[str, Any]], labels: dict[str, str], hists: list[dict[str, Any]],
         directions: data.Directions, folder: Path) -> dict[str, list[Figure]]:
    """Draw every suite's charts into ``folder``; returns suite -> its figures, in reading order.

    ``hists``: ``summary.histograms`` of the rows; ``labels``: run_id -> the name a reader sees.
    """
    colour = {run["run_id"]: i for i, run in enumerate(report_runs.shown(rows))}
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
