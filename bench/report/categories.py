"""Win rates against base broken down by prompt category and by prompt attributes.

A suite's prompts may carry a ``category`` (PartiPrompts' challenge category, the tiny world's
shape) and attributes in ``meta_json`` (the tiny world's shape, colour, background and size).
Each of those with between 2 and ``MAX_LEVELS`` values becomes one breakdown; an attribute that
splits the prompts exactly as another already shown (the tiny world's shape is its category) is
left out.

Within a level, the win rate and its interval are computed exactly as in the main table (paired
wins in the reward's direction, percentile bootstrap resampling the level's prompts), from the
per-prompt sums of ``data.per_prompt``. The intervals are descriptive: with many levels some
exclude 50% by chance, and no adjustment for the number of levels is made. An arm with several
training replicates pools them per prompt, and its interval resamples prompts only: it does not
cover another training run (the main table's two-level interval does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.report import data, rows as report_rows
from bench.store import Store

MAX_LEVELS = 12
NO_LEVEL = "(none)"


def _scalar(v: Any) -> str | None:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (str, int)):
        return str(v)
    return None


def _same_partition(a: pd.Series, b: pd.Series) -> bool:
    """True when two labellings group the prompts identically (level names aside)."""
    pairs = pd.DataFrame({"a": a.to_numpy(object), "b": b.to_numpy(object)}).drop_duplicates()
    return len(pairs) == a.nunique() == b.nunique()


def attributes(prompts: pd.DataFrame) -> dict[str, pd.Series]:
    """The breakdowns of one suite: attribute name -> level per prompt_id (index), in display order."""
    out: dict[str, pd.Series] = {}
    ids = prompts["prompt_id"].to_numpy()
    candidates: list[tuple[str, list[str | None]]] = [("category", [c if isinstance(c, str) else None
                                                                    for c in prompts["category"].tolist()])]
    metas = [data.json_object(m) or {} for m in prompts["meta_json"].tolist()]  # not an object: data.anomalies
    for key in sorted({k for m in metas for k in m}):
        candidates.append((key, [_scalar(m.get(key)) for m in metas]))
    for name, levels in candidates:
        if all(v is None for v in levels):
            continue
        series = pd.Series([NO_LEVEL if v is None else v for v in levels], index=ids)
        if not 2 <= series.nunique() <= MAX_LEVELS:
            continue
        if any(_same_partition(series, kept) for kept in out.values()):
            continue
        out[name] = series
    return out


def _cells(g: pd.DataFrame, runs: list[str], levels: pd.Series, jobs: list) -> dict[str, dict[str, Any]]:
    """run_id -> level -> win rate of one attribute's levels; the intervals are queued on ``jobs``."""
    labelled = g.assign(level=levels.reindex(g["prompt_id"]).fillna(NO_LEVEL).to_numpy())
    cells: dict[str, dict[str, Any]] = {rid: {} for rid in runs}
    for (rid, level), gl in labelled[labelled["run_id"].isin(runs)].groupby(["run_id", "level"]):
        sums, sizes = gl["win_sum"].to_numpy(np.float64), gl["n_pairs"].to_numpy(np.float64)
        cell = cells[rid][str(level)] = {"n": int(sizes.sum()), "n_prompts": int(sizes.size),
                                         "win_rate": float(sums.sum() / sizes.sum())}
        bounds = (float(gl["win_min"].min()), float(gl["win_max"].max()))
        jobs.append((cell, ("ci_low", "ci_high"), sums, sizes, bounds))
    return cells


def _pooled(per_prompt: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The per-prompt rows of the rows' runs, an arm's replicates summed per prompt under its row's run_id."""
    arm_of = {rid: r["run_id"] for r in rows for rid in r.get("run_ids") or [r["run_id"]]}
    if all(rid == rep for rid, rep in arm_of.items()):
        return per_prompt  # no arm with several replicates: nothing to pool
    frame = per_prompt[per_prompt["run_id"].isin(list(arm_of))].assign(
        run_id=lambda f: f["run_id"].map(arm_of))
    return frame.groupby(data.GROUP_KEYS + ["prompt_id"], as_index=False, sort=False).agg(
        win_sum=("win_sum", "sum"), n_pairs=("n_pairs", "sum"), win_min=("win_min", "min"),
        win_max=("win_max", "max"))


def breakdown(store: Store, rows: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0,
              prompts: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One table per (suite, reward version, attribute):

    {"suite", "reward", "reward_version", "attribute", "levels": [level names], "runs": [run_id with a win
    rate], "cells": {run_id: {level: {"n", "n_prompts", "win_rate", "ci_low", "ci_high"}}}}

    ``prompts``: the ``data.per_prompt`` table when the caller already has it.
    """
    compared = [r for r in rows if r["win_rate"] is not None]
    if not compared:
        return []
    suites = sorted({r["suite"] for r in compared})
    meta = data.prompt_meta(store, suites)
    per_prompt = data.per_prompt(store, suites) if prompts is None else prompts
    per_prompt = _pooled(per_prompt[per_prompt["n_pairs"] > 0], compared)
    order = {r["run_id"]: i for i, r in enumerate(compared)}  # the main table's order of methods
    out, jobs = [], []
    for suite in suites:
        attrs = attributes(meta[meta["suite"] == suite])
        if not attrs:
            continue
        shown = {(r["reward"], r["reward_version"], r["run_id"]) for r in compared if r["suite"] == suite}
        in_suite = per_prompt[per_prompt["suite"] == suite]
        for (reward, version), g in in_suite.groupby(["reward", "reward_version"], sort=True):
            runs = sorted((rid for rid in g["run_id"].unique() if (reward, version, rid) in shown), key=order.get)
            out += [{"suite": suite, "reward": reward, "reward_version": version, "attribute": name,
                     "levels": sorted(str(v) for v in levels.unique()), "runs": runs,
                     "cells": _cells(g, runs, levels, jobs)} for name, levels in attrs.items()]
    report_rows.run_bootstraps(jobs, n_boot, seed)
    return out
