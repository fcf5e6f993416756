"""What a reader looks at first: a ranking across rewards, the cost of each run, score histograms.

All three are derived from the report rows (``rows.build``) and small SQL aggregates, so they cost
little even on a store with millions of scores.

* **Ranking.** Within one suite, every run shown (base included) is ranked per reward version by
  its mean score, best first (highest, or lowest for a lower-is-better reward); tied means share
  the average rank. The runs are then ordered by their mean rank over the rewards they were scored
  with. Mean scores are comparable across runs because every run draws the same prompts with the
  same seeds; the paired win rates against base sit beside the ranks.
* **Cost.** Seconds spent training, sampling and scoring, as recorded by the runner (work actually
  done: a reused checkpoint or an already-stored image costs nothing and shows no time).
* **Histograms.** Per (suite, reward version) shared bin edges over all runs shown, counts per run
  computed in DuckDB.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.report import data
from bench.report.stats import ALPHA
from bench.store import Store

HIST_BINS = 30


def reward_key(row: dict[str, Any]) -> str:
    """One reward version as a column label: ``reward (version)``."""
    return f"{row['reward']} ({row['reward_version']})"


def _average_ranks(values: list[float]) -> list[float]:
    """1 for the highest value (negate a lower-is-better reward's means); tied values share the mean of the
    ranks they span."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _entry(r: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": r["run_id"], "method": r["method"], "model": r["model"], "config_hash": r["config_hash"],
            "ranks": {}, "win_rates": {}, "significant": {}}


def _suite_ranking(in_suite: list[dict[str, Any]], directions: data.Directions) -> dict[str, Any]:
    rewards = sorted({reward_key(r) for r in in_suite})
    entries: dict[str, dict[str, Any]] = {}
    for r in in_suite:
        entries.setdefault(r["run_id"], _entry(r))
    for key in rewards:
        table = [r for r in in_suite if reward_key(r) == key]
        up = directions[(table[0]["reward"], table[0]["reward_version"])]
        for r, rank in zip(table, _average_ranks([r["mean"] if up else -r["mean"] for r in table])):
            e = entries[r["run_id"]]
            e["ranks"][key] = rank
            e["win_rates"][key] = r["win_rate"]
            e["significant"][key] = r["p_holm"] is not None and r["p_holm"] < ALPHA
    for e in entries.values():
        e["mean_rank"] = float(np.mean(list(e["ranks"].values())))
    ordered = sorted(entries.values(), key=lambda e: (e["mean_rank"], e["method"] != "base", e["method"], e["run_id"]))
    return {"suite": in_suite[0]["suite"], "rewards": rewards, "entries": ordered}


def ranking(rows: list[dict[str, Any]], directions: data.Directions | None = None) -> list[dict[str, Any]]:
    """Per suite: {"suite", "rewards": [reward keys], "entries": [{"run_id", "method", "model", "config_hash",
    "mean_rank", "ranks": {reward key: rank}, "win_rates": {reward key: win rate or None},
    "significant": {reward key: bool (Holm p < ALPHA)}}]}, entries best first.

    ``directions``: which way each reward version is better (``data.directions``); all higher when None.
    """
    directions = data.Directions() if directions is None else directions
    return [_suite_ranking([r for r in rows if r["suite"] == suite], directions)
            for suite in sorted({r["suite"] for r in rows})]


def costs(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per run shown: method, model, run_id, train_s, sample_s, score_s, total_s, n_images (all
    suites of the run) and sample_s_per_image; times are None where nothing was timed."""
    runs: dict[str, dict[str, Any]] = {}
    for r in rows:
        runs.setdefault(r["run_id"], {k: r[k] for k in ("method", "model", "run_id", "config_hash", "train_s",
                                                        "sample_s", "score_s")})
    if not runs:
        return []
    n_images = data.image_counts(store, list(runs))
    out = []
    for run in runs.values():
        timed = [run[k] for k in ("train_s", "sample_s", "score_s") if run[k] is not None]
        n = int(n_images.get(run["run_id"], 0))
        out.append({**run, "total_s": float(sum(timed)) if timed else None, "n_images": n,
                    "sample_s_per_image": run["sample_s"] / n if run["sample_s"] is not None and n else None})
    return sorted(out, key=lambda c: (c["method"] != "base", c["method"], c["model"], c["run_id"]))


def histograms(store: Store, rows: list[dict[str, Any]], bins: int = HIST_BINS) -> list[dict[str, Any]]:
    """Per (suite, reward version): {"suite", "reward", "reward_version", "edges": (bins+1,) list,
    "counts": {run_id: (bins,) list}} over the runs shown."""
    if not rows:
        return []
    frame = data.histogram_counts(store, sorted({r["run_id"] for r in rows}), sorted({r["suite"] for r in rows}),
                                  bins)
    out = []
    for (suite, reward, version), g in frame.groupby(["suite", "reward", "reward_version"], sort=True):
        lo, hi = float(g["lo"].iloc[0]), float(g["hi"].iloc[0])
        point = hi == lo  # one value: a unit-wide range around it, all counts in the bin starting at it
        if point:
            lo, hi = lo - 0.5, hi + 0.5
        counts = {}
        for run_id, gr in g.groupby("run_id", sort=True):
            c = np.zeros(bins, dtype=np.int64)
            # A point range puts every image in its middle bin. (A scalar index with an array of counts, as
            # np.add.at(c, bins // 2, n) had it, is refused by numpy 2: every constant reward crashed md and html.)
            where = np.full(len(gr), bins // 2) if point else gr["bin"].to_numpy(dtype=np.int64)
            np.add.at(c, where, gr["n"].to_numpy(dtype=np.int64))
            counts[run_id] = c.tolist()
        out.append({"suite": suite, "reward": reward, "reward_version": version,
                    "edges": np.linspace(lo, hi, bins + 1).tolist(), "counts": counts})
    return out
