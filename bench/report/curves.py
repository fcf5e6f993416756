"""Over-optimisation curves: a trained run's win rate against base at its intermediate checkpoints.

``bench run --eval-every N`` samples the model of every N-th training step of a run (its *final run*)
on a fixed subset of the suite's prompts, every seed; those runs are stored like any run, paired with
base through the ``pairs`` view, and named in ``checkpoint_steps``. They are no results of their own:
every other part of the report leaves them out (``data.per_prompt``).

Per (suite, final run, reward version) the curve has one point per checkpoint, and a last point: the
final run itself restricted to the same prompts (the subset its checkpoint runs were asked to draw,
``prompt_ids`` in their config, else the prompts they hold), at step = its ``method_config.steps``.
Each point's interval is the 95% percentile bootstrap over prompts of ``rows``, seeded alike, so two
points on the same prompts draw the same resamples.

**The flag.** Training on a proxy of human preference can raise the proxy while the truth falls
(Gao et al. 2023, "Scaling laws for reward model overoptimization", arXiv 2210.10760). Per curve a
final run is flagged "proxy rises while held-out falls" when, from its first point to its last, the win
rate on a reward it is not held out from (``trained-on`` or ``same-data``: a proxy) rises, and the win
rate on a held-out reward falls by more than the half-width of the 95% CI of that reward's last point.
Held-out rewards are tried gold first, then preference, then faithfulness.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.report import data
from bench.report import rows as report_rows
from bench.store import Store

POINT_KEYS = ("suite", "final_run_id", "run_id", "method", "reward", "reward_version", "reward_relation",
              "reward_role", "step", "win_rate", "ci_low", "ci_high", "n", "n_prompts")
ROLE_ORDER = ("gold", "preference", "faithfulness")
PROXY = ("trained-on", "same-data")


def _subset(ckpts: pd.DataFrame, ckpt_prompts: pd.DataFrame, runs: dict[str, dict]) -> set[str]:
    """The prompts the final run's checkpoint runs were asked to draw (or hold, for a config without the list)."""
    ids = [runs[rid]["prompt_ids"] for rid in ckpts["run_id"] if rid in runs and runs[rid]["prompt_ids"]]
    if ids:
        return set().union(*map(set, ids))
    return set(ckpt_prompts.loc[ckpt_prompts["run_id"].isin(list(ckpts["run_id"])), "prompt_id"])


def _point(g: pd.DataFrame, fields: dict[str, Any], jobs: list) -> dict[str, Any] | None:
    """One point from the per-prompt rows of one run, suite and reward version; its interval queued on ``jobs``."""
    g = g[g["n_pairs"] > 0]
    if g.empty:
        return None
    sums, sizes = g["win_sum"].to_numpy(np.float64), g["n_pairs"].to_numpy(np.float64)
    point = {**fields, "win_rate": float(sums.sum() / sizes.sum()), "ci_low": None, "ci_high": None,
             "n": int(sizes.sum()), "n_prompts": int(sizes.size)}
    jobs.append((point, ("ci_low", "ci_high"), sums, sizes, (float(g["win_min"].min()), float(g["win_max"].max()))))
    return point


def build(store: Store, prompts: pd.DataFrame, shown: list[str], suites: list[str] | None = None,
          n_boot: int = 1000, seed: int = 0, known: data.Known | None = None) -> list[dict[str, Any]]:
    """The points of every curve (keys ``POINT_KEYS``) of the final runs in ``shown`` (run_ids), ordered by suite,
    final run, reward, version and step. ``prompts``: the report's ``data.per_prompt`` table (final runs);
    ``known``: ``data.known`` where the caller has it."""
    steps = data.checkpoint_steps(store)
    steps = steps[steps["final_run_id"].isin(shown)]
    if steps.empty:
        return []
    ckpt_prompts = data.checkpoint_pairs(store, suites)
    runs, relations, roles = known or data.known(store)
    jobs: list = []
    points: list[dict[str, Any]] = []
    for final, ckpts in steps.groupby("final_run_id", sort=True):
        subset = _subset(ckpts, ckpt_prompts, runs)
        step_of = {rid: int(step) for rid, step in zip(ckpts["run_id"], ckpts["step"])}
        mine = ckpt_prompts[ckpt_prompts["run_id"].isin(list(step_of))]
        # the final run's last point, in the suites its checkpoints were drawn in
        last = prompts[(prompts["run_id"] == final) & prompts["prompt_id"].isin(list(subset))
                       & prompts["suite"].isin(list(set(mine["suite"])))]
        final_step = runs[final]["steps"]
        parts = [mine] + ([last] if final_step is not None else [])
        for (run_id, suite, reward, version), g in pd.concat(parts).groupby(data.GROUP_KEYS, sort=True):
            fields = {"suite": suite, "final_run_id": final, "run_id": run_id, "method": runs[final]["method"],
                      "reward": reward, "reward_version": version,
                      "reward_relation": relations.get(final, {}).get(reward, (None,))[0],
                      "reward_role": roles[reward], "step": step_of.get(run_id, final_step)}
            point = _point(g, fields, jobs)
            if point is not None:
                points.append(point)
    report_rows.run_bootstraps(jobs, n_boot, seed)
    return sorted(points, key=lambda p: (p["suite"], p["final_run_id"], p["reward"], p["reward_version"],
                                         p["step"]))


def series(points: list[dict[str, Any]]) -> dict[tuple[str, str], list[list[dict[str, Any]]]]:
    """(suite, final_run_id) -> its curves, one list of points per reward version, in step order."""
    out: dict[tuple[str, str], dict[tuple[str, str], list]] = {}
    for p in points:
        out.setdefault((p["suite"], p["final_run_id"]), {}).setdefault((p["reward"], p["reward_version"]), []).append(p)
    return {key: list(curves.values()) for key, curves in out.items()}


def _half_width(p: dict[str, Any]) -> float:
    return (p["ci_high"] - p["ci_low"]) / 2.0


def _ends(curve: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = curve[0], curve[-1]
    return {"reward": first["reward"], "reward_version": first["reward_version"], "role": first["reward_role"],
            "relation": first["reward_relation"], "first": first["win_rate"], "last": last["win_rate"],
            "half_width": _half_width(last)}


def flags(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (suite, final run) whose curves have two points or more: {"suite", "final_run_id", "method",
    "flagged", "first_step", "last_step", "proxy" (the proxy reward that rises most, else the one that falls
    least; None without a proxy), "held_out" (the first held-out reward, gold first, that falls by more than its
    last point's CI half-width; else the first held-out one; None without one)}: each reward as {"reward",
    "reward_version", "role", "relation", "first", "last", "half_width"} (win rates as fractions)."""
    out = []
    for (suite, final), curves in series(points).items():
        curves = [c for c in curves if len(c) >= 2]
        if not curves:
            continue
        ends = [_ends(c) for c in curves]
        proxies = sorted((e for e in ends if e["relation"] in PROXY), key=lambda e: (e["first"] - e["last"],
                                                                                     e["reward"]))
        held = sorted((e for e in ends if e["relation"] not in PROXY),
                      key=lambda e: (ROLE_ORDER.index(e["role"]) if e["role"] in ROLE_ORDER else len(ROLE_ORDER),
                                     e["reward"], e["reward_version"]))
        falling = [e for e in held if e["first"] - e["last"] > e["half_width"]]
        proxy = proxies[0] if proxies else None
        held_out = falling[0] if falling else (held[0] if held else None)
        out.append({"suite": suite, "final_run_id": final, "method": curves[0][0]["method"],
                    "flagged": bool(proxy and proxy["last"] > proxy["first"] and falling),
                    "first_step": min(c[0]["step"] for c in curves), "last_step": max(c[-1]["step"] for c in curves),
                    "proxy": proxy, "held_out": held_out})
    return out
