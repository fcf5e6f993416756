"""The compute-matched frontier: what each run's win rate cost, beside best-of-N sampling.

Best-of-N (``methods/best_of_n.py``) trains nothing and spends its compute at sampling time: N samples
and N verifier scores per image. A trained method spends it once, in training, and then samples as base
does. To put both on one axis, each run's cost per image is

    cost = train_s / A + sample_s / n_images

with training amortised over A images (``AMORTISE``: 10,000 unless the caller says otherwise) and
n_images the run's stored images. Its win rate is the one against base on the suite's gold reward, else
on the preference reward held out from most runs (the first by name on a tie). One point per run (a
training replicate is a run), intermediate checkpoints left out; base sits at 50%. A method *beats the
frontier* where its 95% CI lies above the win rate of every best_of_n point that costs as much or less
(and there is at least one).
"""

from __future__ import annotations

from typing import Any

from bench.report import summary

AMORTISE = 10_000  # images a training run is amortised over
BEST_OF_N = "best_of_n"
POINT_KEYS = ("run_id", "method", "n", "best_of_n", "train_s", "sample_s", "n_images", "cost_s", "win_rate",
              "ci_low", "ci_high")


def _reward(in_suite: list[dict[str, Any]]) -> tuple[str | None, tuple[str, str] | None]:
    """(basis, (reward, version)) a suite's frontier is drawn on: the gold reward, else the preference reward most
    method runs are held out from; (None, None) where it has neither."""
    rated = [r for r in in_suite if r["win_rate"] is not None]
    gold = sorted({(r["reward"], r["reward_version"]) for r in rated if r["reward_role"] == summary.GOLD})
    if gold:
        return summary.GOLD, gold[0]
    held: dict[tuple[str, str], int] = {}
    for r in rated:
        if r["reward_role"] == summary.PREFERENCE:
            key = (r["reward"], r["reward_version"])
            held[key] = held.get(key, 0) + (r["reward_relation"] is None)
    if not held:
        return None, None
    return summary.PREFERENCE, min(held, key=lambda k: (-held[k], k))


def _point(r: dict[str, Any], cost: dict[str, Any], amortise: int, n: int | None) -> dict[str, Any]:
    per_image = cost.get("sample_s_per_image")
    cost_s = None if per_image is None else (cost.get("train_s") or 0.0) / amortise + per_image
    is_base = r["method"] == "base"
    return {"run_id": r["run_id"], "method": r["method"], "n": n, "best_of_n": r["method"] == BEST_OF_N,
            "train_s": cost.get("train_s"), "sample_s": cost.get("sample_s"), "n_images": cost.get("n_images"),
            "cost_s": cost_s, "win_rate": 0.5 if is_base else r["win_rate"], "ci_low": None if is_base else r["ci_low"],
            "ci_high": None if is_base else r["ci_high"]}


def build(replicate_rows: list[dict[str, Any]], costs: list[dict[str, Any]], n_of: dict[str, int | None],
          amortise: int = AMORTISE) -> list[dict[str, Any]]:
    """Per suite: {"suite", "basis" ("gold" | "preference"), "reward", "reward_version", "amortise", "points":
    [POINT_KEYS: one per run with a win rate (base: 0.5), ordered by cost; cost_s None where the run's sampling
    was not timed], "best_of_n": [run_ids of best_of_n points by N], "beats": [{"run_id", "cheaper": [best_of_n
    run_ids of lower or equal cost]}] (the methods whose CI lies above every such point), "cheapest": [run_ids
    of methods costing less than every best_of_n point]}.

    ``replicate_rows``: the per-run rows; ``costs``: ``summary.costs`` of them; ``n_of``: run_id -> best_of_n's
    N (``method_config.n``)."""
    if amortise <= 0:
        raise ValueError(f"amortise must be a positive number of images, got {amortise}")
    cost_of = {c["run_id"]: c for c in costs}
    out = []
    for suite in sorted({r["suite"] for r in replicate_rows}):
        in_suite = [r for r in replicate_rows if r["suite"] == suite]
        basis, key = _reward(in_suite)
        if key is None:
            continue
        on = [r for r in in_suite if (r["reward"], r["reward_version"]) == key
              and (r["win_rate"] is not None or r["method"] == "base")]
        points = [_point(r, cost_of.get(r["run_id"], {}), amortise, n_of.get(r["run_id"])
                         if r["method"] == BEST_OF_N else None) for r in on]
        points.sort(key=lambda p: (p["cost_s"] is None, p["cost_s"] or 0.0, p["run_id"]))
        bon = sorted((p for p in points if p["best_of_n"] and p["cost_s"] is not None),
                     key=lambda p: (p["n"] is None, p["n"] or 0, p["cost_s"], p["run_id"]))
        beats, cheapest = [], []
        for p in points:
            if p["best_of_n"] or p["method"] == "base" or p["cost_s"] is None or p["ci_low"] is None or not bon:
                continue
            cheaper = [b for b in bon if b["cost_s"] <= p["cost_s"]]
            if not cheaper:
                cheapest.append(p["run_id"])
            elif all(p["ci_low"] > b["win_rate"] for b in cheaper):
                beats.append({"run_id": p["run_id"], "cheaper": [b["run_id"] for b in cheaper]})
        out.append({"suite": suite, "basis": basis, "reward": key[0], "reward_version": key[1], "amortise": amortise,
                    "points": points, "best_of_n": [b["run_id"] for b in bon], "beats": beats, "cheapest": cheapest})
    return out
