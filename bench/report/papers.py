"""Published results beside ours: the numbers papers report for catalogued checkpoints (issue 21).

``bench.checkpoints.PAPER_NUMBERS`` holds values read at their source, each for a catalogued checkpoint,
a suite, a reward and a statistic. A run of published weights records the catalogue name it sampled
(``published_weights.checkpoint`` in its config). Where the report shows such a run with a row on the
number's suite and reward, the number is set beside ours: a ``win_rate_vs_base`` beside the row's win rate
and its 95% CI, a ``mean`` beside its mean and the mean's CI, and ``checkpoints.compare`` says whether the
paper's value (on the harness's scale) lies within our interval. Numbers the harness cannot measure (human
judgements, ``human:…`` rewards; ``preference_accuracy``) are listed as reference only, where a run of
their checkpoint is shown.
"""

from __future__ import annotations

from typing import Any

from bench import checkpoints
from bench.report import summary

MEASURED = {"win_rate_vs_base": ("win_rate", "ci_low", "ci_high"), "mean": ("mean", "mean_ci_low", "mean_ci_high")}
COMPARED, REFERENCE, NOT_MEASURED = "compared", "reference only", "not measured"


def reproducible(number: checkpoints.PaperNumber) -> bool:
    """Whether the harness measures this kind of number at all."""
    return not number.reward.startswith("human:") and number.statistic in MEASURED


def _entry(number: checkpoints.PaperNumber, status: str, **ours: Any) -> dict[str, Any]:
    return {"paper": number.paper, "table": number.table, "checkpoint": number.checkpoint, "suite": number.suite,
            "reward": number.reward, "statistic": number.statistic, "paper_value": number.value,
            "scale": number.scale, "paper_value_harness": number.harness_value, "protocol": number.protocol,
            "source": number.source, "status": status, "run_id": None, "method": None, "reward_version": None,
            "ours": None, "ci_low": None, "ci_high": None, "verdict": None, **ours}


def _ours(number: checkpoints.PaperNumber, row: dict[str, Any]) -> dict[str, Any]:
    value, low, high = (row[k] for k in MEASURED[number.statistic])
    found = {"run_id": row["run_id"], "method": row["method"], "reward_version": row["reward_version"],
             "ours": value, "ci_low": low, "ci_high": high}
    if value is None or low is None or high is None:  # a win rate without a base to pair with
        return {**found, "verdict": None}
    return {**found, "verdict": checkpoints.compare(number.harness_value, value, low, high)}


def compare(rows: list[dict[str, Any]], published: dict[str, str | None]) -> list[dict[str, Any]]:
    """One entry per paper number whose checkpoint a shown run sampled: {"paper", "table", "checkpoint", "suite",
    "reward", "statistic", "paper_value" (as printed), "scale", "paper_value_harness" (on our scale), "protocol",
    "source", "status", "run_id", "method", "reward_version", "ours", "ci_low", "ci_high" (on our scale),
    "verdict" ("within CI" | "differs"; None where ours has no interval)}.

    status: "compared" (one entry per matching row: arm and reward version), "reference only" (the harness
    cannot measure it), "not measured" (it could, but no row of the run holds that suite and reward).
    ``rows``: the report rows; ``published``: run_id -> the catalogue name its weights are (None: not any).
    """
    of = {rid: published.get(rid) for r in rows for rid in r.get("run_ids") or [r["run_id"]]}
    shown = {name for name in of.values() if name}
    out = []
    for number in checkpoints.PAPER_NUMBERS:  # read when called: a test may replace the tuple
        if number.checkpoint not in shown:
            continue
        if not reproducible(number):
            out.append(_entry(number, REFERENCE))
            continue
        matching = [r for r in rows if r["suite"] == number.suite and r["reward"] == number.reward
                    and any(of.get(rid) == number.checkpoint for rid in r.get("run_ids") or [r["run_id"]])]
        if not matching:
            out.append(_entry(number, NOT_MEASURED))
        out += [_entry(number, COMPARED, **_ours(number, r)) for r in sorted(matching, key=summary.reward_key)]
    return out
