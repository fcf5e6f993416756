"""The report rows: per (suite, reward version, run), the mean score and the win rate against base.

A method run is paired with the ``base`` run of the same model and sampler_key (the store's
``pairs`` view) on the same (suite, prompt_id, seed), so both images share the prompt and the
initial noise; a win counts in the reward's direction. Intervals are 95% percentile cluster
bootstraps over prompts, seeded per row, so a row's numbers do not depend on which other rows are
shown. p is the two-sided sign test over prompts (a prompt wins when the mean of its paired wins is
above 0.5), Holm-adjusted over the methods of one table, i.e. within one (suite, reward,
reward_version).

All rows are computed from ``data.per_prompt`` (one row per prompt, never per image), and the
intervals of all rows with as many prompts share one set of resamples (``stats.cluster_sums_cis``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.report import data, stats
from bench.store import Store

ROW_KEYS = (
    "suite", "reward", "reward_version", "model", "method", "run_id", "config_hash", "status", "base_run_id",
    "n", "n_images", "mean", "mean_ci_low", "mean_ci_high", "base_mean", "win_rate", "ci_low", "ci_high",
    "p_value", "p_holm", "train_s", "sample_s", "score_s",
)  # n: paired comparisons with base (for a base row: its scored images); n_images: scored images


def _opt(x: Any) -> float | None:
    """A float for JSON and CSV, or None where the store holds NULL (or a non-finite number, which
    ``data.anomalies`` names)."""
    return None if x is None or not np.isfinite(x) else float(x)


def _row(key: tuple, g: pd.DataFrame, run: dict[str, Any], jobs: list) -> dict[str, Any]:
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


def build(
    store: Store,
    suites: list[str] | None = None,
    methods: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    prompts: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Report rows (keys ``ROW_KEYS``), one per (suite, reward, reward_version, run).

    ``methods`` filters the method runs; base runs are always shown, being the reference.
    ``prompts``: the ``data.per_prompt`` table of these suites when the caller already has it (and so
    has checked the filters already).
    """
    if prompts is None:
        data.check_filters(store, suites, methods)
        prompts = data.per_prompt(store, suites)
    runs = data.runs(store)
    jobs: list = []
    rows = [
        _row(key, g, runs[key[0]], jobs)
        for key, g in prompts.groupby(data.GROUP_KEYS, sort=False)
        if methods is None or runs[key[0]]["method"] in methods or runs[key[0]]["method"] == "base"
    ]
    run_bootstraps(jobs, n_boot, seed)
    for r in rows:  # a point interval (constant values) is the mean itself, not one ulp beside it
        if r["mean_ci_low"] == r["mean_ci_high"]:
            r["mean"] = r["mean_ci_low"]
    _compare(rows)
    return sorted(rows, key=_sort_key)


def tables(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Rows grouped per (suite, reward, reward_version), in row order: the tables of the report."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["suite"], r["reward"], r["reward_version"]), []).append(r)
    return out
