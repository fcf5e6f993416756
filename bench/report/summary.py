"""What a reader looks at first: a ranking against base, the cost of each run, score histograms.

All three are derived from the report rows (``rows.build``) and small SQL aggregates, so they cost
little even on a store with millions of scores.

* **Ranking.** Within one suite, every arm shown is ranked on its win rate against base, on what
  the rows say a reward measures (``reward_role``): on the gold reward where the suite has one (the
  tiny world's oracle: the truth the preference labels are drawn from); otherwise on the mean win rate
  over the preference rewards the run is held out from (a reward it was trained on, or that was learned
  from the preference data it trained on, is left out of its average). Base sits at 0.5 by definition.
  Runs whose 95% CI on the ranking reward lies entirely above 0.5 come first (with several rewards
  averaged: every one's CI), then those whose CI holds 0.5 (base among them), then those entirely below;
  within each group by win rate. So a run that beats base on the truth significantly can never rank
  below base, whatever a faithfulness reward says; faithfulness rewards are a constraint shown beside
  the rank: the change of their mean against base (paired per prompt and seed, ``gain``) with its CI,
  flagged where the CI lies entirely below 0.
* **Cost.** Seconds spent training, sampling and scoring, as recorded by the runner (work actually
  done: a reused checkpoint or an already-stored image costs nothing and shows no time), one entry per
  run: each training replicate of an arm is a run of its own.
* **Histograms.** Per (suite, reward version) shared bin edges over all runs shown, counts per arm
  (pooled over its replicates) computed in DuckDB.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.report import data
from bench.report.stats import ALPHA
from bench.store import Store

HIST_BINS = 30
GOLD, PREFERENCE, FAITHFULNESS = "gold", "preference", "faithfulness"


def reward_key(row: dict[str, Any]) -> str:
    """One reward version as a column label: ``reward (version)``."""
    return f"{row['reward']} ({row['reward_version']})"


def _entry(r: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": r["run_id"], "method": r["method"], "model": r["model"], "config_hash": r["config_hash"],
            "arm": r["arm"], "n_replicates": r["n_replicates"], "score": None, "score_ci_low": None,
            "score_ci_high": None, "group": 0, "held_out": [], "win_rates": {}, "ci": {}, "significant": {},
            "relations": {}, "constraints": {}}


def _group(cis: list[tuple[float, float]]) -> int:
    """+1 when every interval lies above 0.5, -1 when every one lies below, else 0."""
    if cis and all(lo > 0.5 for lo, _ in cis):
        return 1
    if cis and all(hi < 0.5 for _, hi in cis):
        return -1
    return 0


def _score(e: dict[str, Any], keys: list[str]) -> None:
    """Fill the entry's score (mean win rate over ``keys``), its CI (one key only) and its group."""
    if e["method"] == "base":
        e["score"] = 0.5  # base against itself: every pair a tie
        return
    e["held_out"] = [k for k in keys if e["win_rates"].get(k) is not None]
    if not e["held_out"]:
        return
    e["score"] = float(np.mean([e["win_rates"][k] for k in e["held_out"]]))
    if len(e["held_out"]) == 1:
        e["score_ci_low"], e["score_ci_high"] = e["ci"][e["held_out"][0]]
    e["group"] = _group([e["ci"][k] for k in e["held_out"]])


def _suite_ranking(in_suite: list[dict[str, Any]]) -> dict[str, Any]:
    rewards = sorted({reward_key(r) for r in in_suite})
    role = {reward_key(r): r["reward_role"] for r in in_suite}
    gold = [k for k in rewards if role[k] == GOLD]
    basis = GOLD if gold else PREFERENCE
    ranked_on = gold or [k for k in rewards if role[k] == PREFERENCE]
    constraints = [k for k in rewards if role[k] == FAITHFULNESS]
    entries: dict[str, dict[str, Any]] = {}
    for r in in_suite:
        e = entries.setdefault(r["run_id"], _entry(r))
        key = reward_key(r)
        e["relations"][key] = r["reward_relation"]
        if r["win_rate"] is None:
            continue
        e["win_rates"][key] = r["win_rate"]
        e["ci"][key] = (r["ci_low"], r["ci_high"])
        e["significant"][key] = r["p_holm"] is not None and r["p_holm"] < ALPHA
        if key in constraints and r["gain"] is not None:
            e["constraints"][key] = {"gain": r["gain"], "ci_low": r["gain_ci_low"], "ci_high": r["gain_ci_high"],
                                     "below_base": r["gain_ci_high"] < 0}
    for e in entries.values():
        # held out: a gold reward always counts (it is the truth); a preference reward only where the run
        # neither optimised it nor shares its preference data
        _score(e, ranked_on if basis == GOLD else [k for k in ranked_on if e["relations"].get(k) is None])
    ordered = sorted(entries.values(), key=lambda e: (e["score"] is None, -e["group"], -(e["score"] or 0.0),
                                                      e["method"] != "base", e["method"], e["run_id"]))
    return {"suite": in_suite[0]["suite"], "basis": basis if ranked_on else None, "ranked_on": ranked_on,
            "constraints": constraints, "rewards": rewards, "entries": ordered}


def ranking(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per suite: {"suite", "basis": "gold" | "preference" | None (no reward to rank on), "ranked_on": [reward
    keys ranked on], "constraints": [faithfulness reward keys], "rewards": [all reward keys], "entries": [{"run_id",
    "method", "model", "config_hash", "arm", "n_replicates", "score" (mean win rate over "held_out"; 0.5 for base;
    None: nothing to rank on), "score_ci_low", "score_ci_high" (ranked on one reward only), "group" (+1 CI above
    0.5, -1 below, else 0), "held_out": [reward keys averaged], "win_rates", "ci", "significant" (Holm p < ALPHA),
    "relations": {reward key: "trained-on" | "same-data" | None}, "constraints": {faithfulness key: {"gain",
    "ci_low", "ci_high", "below_base"}}}]}, entries best first (see the module docstring).
    """
    return [_suite_ranking([r for r in rows if r["suite"] == suite]) for suite in sorted({r["suite"] for r in rows})]


def costs(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per run of the rows (per-run rows: every replicate): method, model, run_id, config_hash, arm,
    train_seed, n_replicates (of its arm), train_s, sample_s, score_s, total_s, n_images (all suites of the
    run) and sample_s_per_image; times are None where nothing was timed."""
    runs: dict[str, dict[str, Any]] = {}
    for r in rows:
        runs.setdefault(r["run_id"], {k: r.get(k) for k in ("method", "model", "run_id", "config_hash", "arm",
                                                            "train_seed", "train_s", "sample_s", "score_s")})
    if not runs:
        return []
    n_images = data.image_counts(store, list(runs))
    per_arm: dict[str, int] = {}
    for run in runs.values():
        run["arm"] = run["arm"] or run["run_id"]
        per_arm[run["arm"]] = per_arm.get(run["arm"], 0) + 1
    out = []
    for run in runs.values():
        timed = [run[k] for k in ("train_s", "sample_s", "score_s") if run[k] is not None]
        n = int(n_images.get(run["run_id"], 0))
        out.append({**run, "n_replicates": per_arm[run["arm"]], "total_s": float(sum(timed)) if timed else None,
                    "n_images": n,
                    "sample_s_per_image": run["sample_s"] / n if run["sample_s"] is not None and n else None})
    return sorted(out, key=lambda c: (c["method"] != "base", c["method"], c["model"], c["arm"],
                                      c["train_seed"] is None, c["train_seed"] or 0, c["run_id"]))


def histograms(store: Store, rows: list[dict[str, Any]], bins: int = HIST_BINS) -> list[dict[str, Any]]:
    """Per (suite, reward version): {"suite", "reward", "reward_version", "edges": (bins+1,) list,
    "counts": {run_id: (bins,) list}} over the runs shown; an arm's counts (under its row's run_id) pool its
    replicates' images."""
    if not rows:
        return []
    arm_of = {rid: r["run_id"] for r in rows for rid in r.get("run_ids") or [r["run_id"]]}  # a replicate -> its row
    frame = data.histogram_counts(store, sorted(arm_of), sorted({r["suite"] for r in rows}), bins)
    frame["run_id"] = frame["run_id"].map(arm_of)
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
