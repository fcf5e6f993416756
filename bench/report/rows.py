"""The report rows: per (suite, reward version, arm), the mean score and the win rate against base.

A method run is paired with the ``base`` run of the same model and sampler_key (the store's
``pairs`` view: same sampler, steps and guidance scale) on the same (suite, prompt_id, seed), so
both images share the prompt and the initial noise; a win counts in the reward's direction. p is the
two-sided sign test over prompts (a prompt wins when the mean of its paired wins is above 0.5),
Holm-adjusted over the rows of one table, i.e. within one (suite, reward, reward_version).

**Arms and replicates.** Runs that differ only in their training seed share an ``arm`` (the store's
``replicates`` table); any other run is an arm of its own. A report row is one arm. With K > 1
replicates its win rate and mean pool all of the arm's pairs and images, and their intervals are the
two-level bootstrap of ``stats.two_level_cis`` (training replicates and prompts), seeded per row;
``prompt_ci_low/high`` is the prompt-only interval of the same pooled win rate, which does not cover
another training run; n, n_images and the times (train_s, sample_s, score_s) are the replicates' sums,
and run_id is the run of the smallest training seed. With K = 1 the row is the run's row, as it always
was: intervals are 95% percentile cluster bootstraps over prompts. Every row is seeded alike, so its
numbers do not depend on which other rows are shown. The per-run rows (``build_all``'s
``replicate_rows``) keep the numbers of every replicate.

All rows are computed from ``data.per_prompt`` (one row per prompt, never per image), and the
intervals of all rows with as many prompts (and replicates) share one set of resamples.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from bench.report import data, stats
from bench.store import Store

BASE_KEYS = (
    "suite", "reward", "reward_version", "model", "method", "run_id", "config_hash", "status", "base_run_id",
    "n", "n_images", "mean", "mean_ci_low", "mean_ci_high", "base_mean", "win_rate", "ci_low", "ci_high",
    "p_value", "p_holm", "train_s", "sample_s", "score_s",
)  # n: paired comparisons with base (for a base row: its scored images); n_images: scored images
# gain: the mean paired difference with base in the reward's direction (+ is better), with its interval;
# reward_relation: "trained-on" or "same-data" where the run is not held out from the reward, else None;
# base_settings: the sampler settings of the base run it is paired with ("guidance 8.5, ddim, 20 steps").
_COMMON_KEYS = ("gain", "gain_ci_low", "gain_ci_high", "reward_role", "reward_relation", "base_settings")
ROW_KEYS = BASE_KEYS + ("arm", "n_replicates", "run_ids", "replicate_win_rates", "prompt_ci_low", "prompt_ci_high",
                        "replicate_sd") + _COMMON_KEYS  # the rows users script against: extend, never break
REPLICATE_ROW_KEYS = BASE_KEYS + ("arm", "train_seed") + _COMMON_KEYS  # one per run, as rows were before arms


# How every table marks a row whose run is not held out from the table's reward.
MARKS = {"trained-on": "†", "same-data": "‡"}
MARK_LEGEND = {"trained-on": "trained on this reward (optimised it directly): not held out",
               "same-data": "this reward was learned from the preference data the run trained on: not held out"}


def mark(relation: str | None) -> str:
    """' †' or ' ‡' after a run's name where it is not held out from the reward, else ''."""
    return f" {MARKS[relation]}" if relation in MARKS else ""


class Built(NamedTuple):
    rows: list[dict[str, Any]]  # one per (suite, reward version, arm): ROW_KEYS
    replicate_rows: list[dict[str, Any]]  # one per (suite, reward version, run): REPLICATE_ROW_KEYS


def _opt(x: Any) -> float | None:
    """A float for JSON and CSV, or None where the store holds NULL (or a non-finite number, which
    ``data.anomalies`` names)."""
    return None if x is None or not np.isfinite(x) else float(x)


def _relation(run_ids: list[str], reward: str, relations: dict[str, dict[str, tuple]]) -> str | None:
    """How the runs relate to a reward: trained-on before same-data before held out (None)."""
    found = {relations.get(rid, {}).get(reward, (None,))[0] for rid in run_ids}
    return next((rel for rel in ("trained-on", "same-data") if rel in found), None)


def _row(key: tuple, g: pd.DataFrame, run: dict[str, Any], jobs: list, relations: dict,
         roles: data.Roles) -> dict[str, Any]:
    """The row of one (run, suite, reward version) group; its intervals are queued on ``jobs``."""
    run_id, suite, reward, version = key
    n_images, n_pairs = int(g["n_images"].sum()), int(g["n_pairs"].sum())
    row = {
        "suite": suite, "reward": reward, "reward_version": version,
        "model": run["model"], "method": run["method"], "run_id": run_id, "config_hash": run["config_hash"],
        "status": run["status"], "base_run_id": run["base_run_id"],
        "n": n_pairs if run["method"] != "base" else n_images, "n_images": n_images,
        "mean": float(g["value_sum"].sum() / n_images), "mean_ci_low": None, "mean_ci_high": None,
        "base_mean": None, "win_rate": None, "ci_low": None, "ci_high": None, "p_value": None, "p_holm": None,
        "train_s": _opt(run["train_s"]), "sample_s": _opt(run["sample_s"]), "score_s": _opt(run["score_s"]),
        "arm": run["arm"], "train_seed": run["train_seed"], "gain": None, "gain_ci_low": None, "gain_ci_high": None,
        "reward_role": roles[reward], "reward_relation": _relation([run_id], reward, relations),
        "base_settings": run["base_settings"],
    }
    jobs.append((row, ("mean_ci_low", "mean_ci_high"), g["value_sum"].to_numpy(np.float64),
                 g["n_images"].to_numpy(np.float64), (float(g["value_min"].min()), float(g["value_max"].max()))))
    if n_pairs:
        paired = g[g["n_pairs"] > 0]
        sums, sizes = paired["win_sum"].to_numpy(np.float64), paired["n_pairs"].to_numpy(np.float64)
        row["win_rate"] = float(sums.sum() / sizes.sum())
        row["p_value"] = stats.sign_test_p(sums / sizes)
        jobs.append((row, ("ci_low", "ci_high"), sums, sizes,
                     (float(paired["win_min"].min()), float(paired["win_max"].max()))))
        gains = paired["gain_sum"].to_numpy(np.float64)
        row["gain"] = float(gains.sum() / sizes.sum())
        jobs.append((row, ("gain_ci_low", "gain_ci_high"), gains, sizes,
                     (float(paired["worst_gain"].min()), float(paired["best_gain"].max()))))
    return row


def run_bootstraps(jobs: list, n_boot: int, seed: int) -> None:
    """Fill each job's (row, (low key, high key), sums, sizes, bounds) interval; jobs with as many
    clusters share their resamples, which is what each would draw alone (they depend on K only)."""
    by_k: dict[int, list] = {}
    for job in jobs:
        by_k.setdefault(job[2].size, []).append(job)
    for batch in by_k.values():
        sums = np.stack([j[2] for j in batch], axis=1)  # (K, m)
        sizes = np.stack([j[3] for j in batch], axis=1)
        for (row, (lo_key, hi_key), *_), (lo, hi) in zip(
                batch, stats.cluster_sums_cis(sums, sizes, [j[4] for j in batch], n_boot=n_boot, seed=seed)):
            row[lo_key], row[hi_key] = lo, hi


def run_two_level(jobs: list, n_boot: int, seed: int) -> None:
    """``run_bootstraps`` with (R, P) sums and counts per job: two-level intervals (``stats.two_level_cis``);
    jobs of one shape share their resamples, which is what each would draw alone."""
    by_shape: dict[tuple[int, int], list] = {}
    for job in jobs:
        by_shape.setdefault(job[2].shape, []).append(job)
    for batch in by_shape.values():
        sums = np.stack([j[2] for j in batch], axis=2)  # (R, P, m)
        counts = np.stack([j[3] for j in batch], axis=2)
        for (row, (lo_key, hi_key), *_), (lo, hi) in zip(
                batch, stats.two_level_cis(sums, counts, [j[4] for j in batch], n_boot=n_boot, seed=seed)):
            row[lo_key], row[hi_key] = lo, hi


def _sort_key(row: dict[str, Any]) -> tuple:
    return (row["suite"], row["reward"], row["reward_version"], row["method"] != "base", row["method"],
            row["model"], row["run_id"])


def _compare(rows: list[dict[str, Any]]) -> None:
    """Fill base_mean, and p_holm per table (suite, reward version) of the rows compared with base."""
    means = {(r["run_id"], r["suite"], r["reward"], r["reward_version"]): r["mean"] for r in rows}
    for r in rows:
        r["base_mean"] = means.get((r["base_run_id"], r["suite"], r["reward"], r["reward_version"]))
    for family in tables([r for r in rows if r["p_value"] is not None]).values():
        for r, adjusted in zip(family, stats.holm([r["p_value"] for r in family])):
            r["p_holm"] = float(adjusted)


def _grid(frames: list[pd.DataFrame], columns: list[str]) -> dict[str, np.ndarray]:
    """(R, P) arrays of ``columns`` over the union of the frames' prompts (0 where a replicate lacks one)."""
    codes, prompts = pd.factorize(pd.concat([f["prompt_id"] for f in frames], ignore_index=True), sort=True)
    out = {c: np.zeros((len(frames), len(prompts))) for c in columns}
    start = 0
    for r, f in enumerate(frames):
        idx = codes[start:start + len(f)]
        start += len(f)
        for c in columns:
            out[c][r, idx] = f[c].to_numpy(np.float64)
    return out


def _status(statuses: list[str]) -> str:
    return statuses[0] if len(set(statuses)) == 1 else "failed" if "failed" in statuses else "running"


def _total(values: list[float | None]) -> float | None:
    timed = [v for v in values if v is not None]
    return float(sum(timed)) if timed else None


def _arm_row(reps: list[dict[str, Any]], frames: list[pd.DataFrame], relations: dict, jobs: list,
             two_level: list) -> dict[str, Any]:
    """The row of an arm with K > 1 replicates (their per-run rows and per-prompt frames, by train seed):
    everything pooled over the replicates; intervals queued on ``jobs`` (prompt-only) and ``two_level``."""
    first = reps[0]
    run_ids = [r["run_id"] for r in reps]
    n_images, n_pairs = sum(r["n_images"] for r in reps), sum(r["n"] for r in reps)
    row = {k: first[k] for k in ("suite", "reward", "reward_version", "model", "method", "run_id", "config_hash",
                                 "base_run_id")}
    rates = [r["win_rate"] for r in reps]
    row.update({
        "status": _status([r["status"] for r in reps]), "n": n_pairs, "n_images": n_images, "mean": None,
        "mean_ci_low": None, "mean_ci_high": None, "base_mean": None, "win_rate": None, "ci_low": None,
        "ci_high": None, "p_value": None, "p_holm": None,
        **{k: _total([r[k] for r in reps]) for k in ("train_s", "sample_s", "score_s")},
        "arm": first["arm"], "n_replicates": len(reps), "run_ids": run_ids, "replicate_win_rates": rates,
        "prompt_ci_low": None, "prompt_ci_high": None,
        "replicate_sd": float(np.std([x for x in rates if x is not None], ddof=1))
        if sum(x is not None for x in rates) > 1 else None,
        "gain": None, "gain_ci_low": None, "gain_ci_high": None, "reward_role": first["reward_role"],
        "reward_relation": _relation(run_ids, first["reward"], relations), "base_settings": first["base_settings"],
    })
    grid = _grid(frames, ["value_sum", "n_images"])
    row["mean"] = float(grid["value_sum"].sum() / n_images)
    two_level.append((row, ("mean_ci_low", "mean_ci_high"), grid["value_sum"], grid["n_images"],
                      (min(float(f["value_min"].min()) for f in frames), max(float(f["value_max"].max())
                                                                            for f in frames))))
    paired = [f[f["n_pairs"] > 0] for f in frames if (f["n_pairs"] > 0).any()]  # replicates with a base
    if not paired:
        return row
    grid = _grid(paired, ["win_sum", "n_pairs", "gain_sum"])
    sums, sizes = grid["win_sum"].sum(axis=0), grid["n_pairs"].sum(axis=0)  # (P,) pooled over replicates
    row["win_rate"] = float(sums.sum() / sizes.sum())
    row["p_value"] = stats.sign_test_p(sums / sizes)
    row["gain"] = float(grid["gain_sum"].sum() / sizes.sum())
    win_bounds = (min(float(f["win_min"].min()) for f in paired), max(float(f["win_max"].max()) for f in paired))
    gain_bounds = (min(float(f["worst_gain"].min()) for f in paired),
                   max(float(f["best_gain"].max()) for f in paired))
    two_level.append((row, ("ci_low", "ci_high"), grid["win_sum"], grid["n_pairs"], win_bounds))
    two_level.append((row, ("gain_ci_low", "gain_ci_high"), grid["gain_sum"], grid["n_pairs"], gain_bounds))
    jobs.append((row, ("prompt_ci_low", "prompt_ci_high"), sums, sizes, win_bounds))
    return row


def _single(r: dict[str, Any]) -> dict[str, Any]:
    """The row of an arm of one run: that run's row."""
    extra = {"n_replicates": 1, "run_ids": [r["run_id"]], "replicate_win_rates": [r["win_rate"]],
             "prompt_ci_low": r["ci_low"], "prompt_ci_high": r["ci_high"], "replicate_sd": None}
    return {k: extra[k] if k in extra else r[k] for k in ROW_KEYS}


def _point_means(rows: list[dict[str, Any]]) -> None:
    for r in rows:  # a point interval (constant values) is the mean itself, not one ulp beside it
        if r["mean_ci_low"] == r["mean_ci_high"]:
            r["mean"] = r["mean_ci_low"]


def build_all(
    store: Store,
    suites: list[str] | None = None,
    methods: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    prompts: pd.DataFrame | None = None,
    known: data.Known | None = None,
) -> Built:
    """The report rows (one per arm, ``ROW_KEYS``) and the per-run rows (``REPLICATE_ROW_KEYS``) they pool.

    ``methods`` filters the method runs; base runs are always shown, being the reference.
    ``prompts``: the ``data.per_prompt`` table of these suites when the caller already has it (and so
    has checked the filters already); ``known``: the runs, relations and roles, when the caller has them.
    """
    if prompts is None:
        data.check_filters(store, suites, methods)
        prompts = data.per_prompt(store, suites)
    runs, relations, roles = known or data.known(store)
    jobs: list = []
    frames: dict[tuple, pd.DataFrame] = {}
    per_run = []
    for key, g in prompts.groupby(data.GROUP_KEYS, sort=False):
        if methods is None or runs[key[0]]["method"] in methods or runs[key[0]]["method"] == "base":
            frames[key] = g
            per_run.append(_row(key, g, runs[key[0]], jobs, relations, roles))
    run_bootstraps(jobs, n_boot, seed)
    _point_means(per_run)
    _compare(per_run)
    per_run.sort(key=_sort_key)

    arms: dict[tuple, list[dict[str, Any]]] = {}
    for r in per_run:
        arms.setdefault((r["suite"], r["reward"], r["reward_version"], r["arm"]), []).append(r)
    jobs, two_level, rows = [], [], []
    for reps in arms.values():
        if len(reps) == 1:
            rows.append(_single(reps[0]))
            continue
        reps = sorted(reps, key=lambda r: (r["train_seed"] is None, r["train_seed"], r["run_id"]))
        group = [frames[(r["run_id"], r["suite"], r["reward"], r["reward_version"])] for r in reps]
        rows.append(_arm_row(reps, group, relations, jobs, two_level))
    run_bootstraps(jobs, n_boot, seed)
    run_two_level(two_level, n_boot, seed)
    _point_means(rows)
    _compare(rows)
    return Built(sorted(rows, key=_sort_key), [{k: r[k] for k in REPLICATE_ROW_KEYS} for r in per_run])


def build(
    store: Store,
    suites: list[str] | None = None,
    methods: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    prompts: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """The report rows (keys ``ROW_KEYS``), one per (suite, reward, reward_version, arm): ``build_all``'s rows."""
    return build_all(store, suites, methods, n_boot, seed, prompts).rows


def tables(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Rows grouped per (suite, reward, reward_version), in row order: the tables of the report."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["suite"], r["reward"], r["reward_version"]), []).append(r)
    return out
