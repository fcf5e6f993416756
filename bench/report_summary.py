"""What a reader looks at first: a ranking across rewards, the cost of each run, score histograms.

All three are derived from the report rows (``bench.report.build``) and small SQL aggregates, so
they cost little even on a store with millions of scores.

* **Ranking.** Within one suite, every run shown (base included) is ranked per reward version by
  its mean score, highest first; tied means share the average rank. The runs are then ordered by
  their mean rank over the rewards they were scored with. Mean scores are comparable across runs
  because every run draws the same prompts with the same seeds; the paired win rates against base
  sit beside the ranks.
* **Cost.** Seconds spent training, sampling and scoring, as recorded by the runner (work actually
  done: a reused checkpoint or an already-stored image costs nothing and shows no time).
* **Histograms.** Per (suite, reward version) shared bin edges over all runs shown, counts per run
  computed in DuckDB.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.store import Store

HIST_BINS = 30


def reward_key(row: dict[str, Any]) -> str:
    """One reward version as a column label: ``reward (version)``."""
    return f"{row['reward']} ({row['reward_version']})"


def _average_ranks(values: list[float]) -> list[float]:
    """1 for the highest value; tied values share the mean of the ranks they span."""
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


def ranking(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per suite: {"suite", "rewards": [reward keys], "entries": [{"run_id", "method", "model", "config_hash",
    "mean_rank", "ranks": {reward key: rank}, "win_rates": {reward key: win rate or None},
    "significant": {reward key: bool (Holm p < 0.05)}}]}, entries best first."""
    out = []
    for suite in sorted({r["suite"] for r in rows}):
        in_suite = [r for r in rows if r["suite"] == suite]
        rewards = sorted({reward_key(r) for r in in_suite})
        entries: dict[str, dict[str, Any]] = {}
        for r in in_suite:
            entries.setdefault(r["run_id"], {"run_id": r["run_id"], "method": r["method"], "model": r["model"],
                                             "config_hash": r["config_hash"], "ranks": {}, "win_rates": {},
                                             "significant": {}})
        for key in rewards:
            table = [r for r in in_suite if reward_key(r) == key]
            for r, rank in zip(table, _average_ranks([r["mean"] for r in table])):
                e = entries[r["run_id"]]
                e["ranks"][key] = rank
                e["win_rates"][key] = r["win_rate"]
                e["significant"][key] = r["p_holm"] is not None and r["p_holm"] < 0.05
        for e in entries.values():
            e["mean_rank"] = float(np.mean(list(e["ranks"].values())))
        ordered = sorted(entries.values(), key=lambda e: (e["mean_rank"], e["method"] != "base", e["method"],
                                                           e["run_id"]))
        out.append({"suite": suite, "rewards": rewards, "entries": ordered})
    return out


def costs(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per run shown: method, model, run_id, train_s, sample_s, score_s, total_s, n_images (all
    suites of the run) and sample_s_per_image; times are None where nothing was timed."""
    runs: dict[str, dict[str, Any]] = {}
    for r in rows:
        runs.setdefault(r["run_id"], {k: r[k] for k in ("method", "model", "run_id", "config_hash", "train_s",
                                                        "sample_s", "score_s")})
    if not runs:
        return []
    counts = store.query_quietly("SELECT run_id, count(*) AS n FROM images WHERE list_contains($runs, run_id) "
                                 "GROUP BY run_id", {"runs": list(runs)})
    n_images = dict(zip(counts["run_id"], counts["n"].astype(int)))
    out = []
    for run in runs.values():
        timed = [run[k] for k in ("train_s", "sample_s", "score_s") if run[k] is not None]
        n = int(n_images.get(run["run_id"], 0))
        out.append({**run, "total_s": float(sum(timed)) if timed else None, "n_images": n,
                    "sample_s_per_image": run["sample_s"] / n if run["sample_s"] is not None and n else None})
    return sorted(out, key=lambda c: (c["method"] != "base", c["method"], c["model"], c["run_id"]))


_HIST_SQL = """
WITH v AS (
    SELECT i.suite, i.run_id, s.reward, s.reward_version, s.value
    FROM images i JOIN scores s ON s.image_id = i.image_id
    WHERE list_contains($runs, i.run_id) AND list_contains($suites, i.suite)
), edges AS (
    SELECT suite, reward, reward_version, min(value) AS lo, max(value) AS hi FROM v GROUP BY ALL
)
SELECT v.suite, v.reward, v.reward_version, v.run_id, e.lo, e.hi,
       least($bins - 1, CASE WHEN e.hi > e.lo THEN floor((v.value - e.lo) / (e.hi - e.lo) * $bins) ELSE 0 END)::INT
           AS bin,
       count(*) AS n
FROM v JOIN edges e USING (suite, reward, reward_version)
GROUP BY ALL
"""


def histograms(store: Store, rows: list[dict[str, Any]], bins: int = HIST_BINS) -> list[dict[str, Any]]:
    """Per (suite, reward version): {"suite", "reward", "reward_version", "edges": (bins+1,) list,
    "counts": {run_id: (bins,) list}} over the runs shown."""
    if not rows:
        return []
    frame = store.query_quietly(_HIST_SQL, {"runs": sorted({r["run_id"] for r in rows}),
                                    "suites": sorted({r["suite"] for r in rows}), "bins": bins})
    out = []
    for (suite, reward, version), g in frame.groupby(["suite", "reward", "reward_version"], sort=True):
        lo, hi = float(g["lo"].iloc[0]), float(g["hi"].iloc[0])
        point = hi == lo  # one value: a unit-wide range around it, all counts in the bin starting at it
        if point:
            lo, hi = lo - 0.5, hi + 0.5
        counts = {}
        for run_id, gr in g.groupby("run_id", sort=True):
            c = np.zeros(bins, dtype=np.int64)
            np.add.at(c, bins // 2 if point else gr["bin"].to_numpy(dtype=np.int64), gr["n"].to_numpy(dtype=np.int64))
            counts[run_id] = c.tolist()
        out.append({"suite": suite, "reward": reward, "reward_version": version,
                    "edges": np.linspace(lo, hi, bins + 1).tolist(), "counts": counts})
    return out
