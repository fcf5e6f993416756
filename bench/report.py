"""The report: per (suite, reward version, run) means and win rates against base, from the store only.

A method run is paired with the ``base`` run of the same model and sampler_key (the store's
``pairs`` view) on the same (suite, prompt_id, seed), so both images share the prompt and the
initial noise. Intervals are 95% percentile cluster bootstraps over prompts, seeded per row, so
a row's numbers do not depend on which other rows are shown. p is the two-sided sign test over
prompts (a prompt wins when the mean of its paired wins is above 0.5), Holm-adjusted over the
methods of one table, i.e. within one (suite, reward, reward_version).

One SQL query (``per_prompt``) aggregates per (run, suite, reward version, prompt): the sums,
counts and ranges of the scores and of the paired wins. Those per-prompt sums are all a cluster
bootstrap needs, so numpy works on one row per prompt, never per image, and the intervals of all
rows with as many prompts share one set of resamples (``stats.cluster_sums_cis``). A store with
10^6 scores reports in a few seconds. The same per-prompt table feeds the category breakdowns
and the choice of the largest wins and losses (``bench.report_doc`` assembles the full report).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import stats
from bench.store import Store

FORMATS = {"md": "md", "json": "json", "csv": "csv"}  # fmt -> file extension
ROW_KEYS = (
    "suite", "reward", "reward_version", "model", "method", "run_id", "config_hash", "status", "base_run_id",
    "n", "n_images", "mean", "mean_ci_low", "mean_ci_high", "base_mean", "win_rate", "ci_low", "ci_high",
    "p_value", "p_holm", "train_s", "sample_s", "score_s",
)  # n: paired comparisons with base (for a base row: its scored images); n_images: scored images

# best / worst: the pair with the largest (smallest) score minus base's score, the smallest seed on ties.
PER_PROMPT_SQL = """
WITH agg AS (
    SELECT i.run_id, i.suite, s.reward, s.reward_version, i.prompt_id,
           count(*) AS n_images, sum(s.value) AS value_sum, min(s.value) AS value_min, max(s.value) AS value_max,
           count(p.win) AS n_pairs, coalesce(sum(p.win), 0) AS win_sum, min(p.win) AS win_min, max(p.win) AS win_max,
           max({'d': p.value - p.base_value, 's': -p.seed}) FILTER (WHERE p.win IS NOT NULL) AS best,
           min({'d': p.value - p.base_value, 's': p.seed}) FILTER (WHERE p.win IS NOT NULL) AS worst
    FROM images i JOIN scores s ON s.image_id = i.image_id
    LEFT JOIN pairs p ON p.image_id = i.image_id AND p.reward = s.reward AND p.reward_version = s.reward_version
    WHERE ($suites IS NULL OR list_contains($suites, i.suite))
    GROUP BY ALL
)
SELECT * EXCLUDE (best, worst), best.d AS best_delta, -best.s AS best_seed, worst.d AS worst_delta,
       worst.s AS worst_seed
FROM agg ORDER BY run_id, suite, reward, reward_version, prompt_id
"""
GROUP_KEYS = ["run_id", "suite", "reward", "reward_version"]
_RUNS_SQL = """
SELECT r.run_id, r.method, r.model, r.config_hash, r.status, r.train_s, r.sample_s, r.score_s,
       CASE WHEN r.method <> 'base' THEN br.base_run_id END AS base_run_id
FROM runs r LEFT JOIN base_runs br ON br.model = r.model AND br.sampler_key = r.sampler_key
"""


def _check_filter(store: Store, column: str, table: str, wanted: list[str] | None) -> None:
    """Fail early on a suite or method the store does not hold, naming those it does."""
    if wanted is None:
        return
    stored = sorted(store.query(f"SELECT DISTINCT {column} FROM {table}")[column])
    unknown = [w for w in wanted if w not in stored]
    if unknown:
        raise ValueError(f"no {column} {', '.join(map(repr, unknown))} in the store; stored: {', '.join(stored) or 'none'}")


def check_filters(store: Store, suites: list[str] | None, methods: list[str] | None) -> None:
    """Raise ValueError naming what is stored when a suite or method filter matches nothing."""
    _check_filter(store, "suite", "images", suites)
    _check_filter(store, "method", "runs", methods)


def _opt(x: Any) -> float | None:
    """A float for JSON and CSV, or None where the store holds NULL."""
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def per_prompt(store: Store, suites: list[str] | None = None) -> pd.DataFrame:
    """One row per (run, suite, reward version, prompt) with scored images; columns: GROUP_KEYS, prompt_id,
    n_images, value_sum, value_min, value_max, n_pairs, win_sum, win_min, win_max (win_* NaN without pairs),
    best_delta, best_seed, worst_delta, worst_seed. Ordered by the keys, then prompt_id."""
    return store.query_quietly(PER_PROMPT_SQL, {"suites": suites})


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
    for k, batch in by_k.items():
        sums = np.stack([j[2] for j in batch], axis=1)  # (K, m)
        sizes = np.stack([j[3] for j in batch], axis=1)
        for (row, (lo_key, hi_key), *_), (lo, hi) in zip(
                batch, stats.cluster_sums_cis(sums, sizes, [j[4] for j in batch], n_boot=n_boot, seed=seed)):
            row[lo_key], row[hi_key] = lo, hi


def _sort_key(row: dict[str, Any]) -> tuple:
    return (row["suite"], row["reward"], row["reward_version"], row["method"] != "base", row["method"],
            row["model"], row["run_id"])


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
    ``prompts``: the ``per_prompt`` table of these suites when the caller already has it.
    """
    check_filters(store, suites, methods)
    runs = {r["run_id"]: r for r in store.query(_RUNS_SQL).to_dict("records")}
    for r in runs.values():
        r["base_run_id"] = r["base_run_id"] if isinstance(r["base_run_id"], str) else None
    frame = per_prompt(store, suites) if prompts is None else prompts
    jobs: list = []
    rows = [
        _row(key, g, runs[key[0]], jobs)
        for key, g in frame.groupby(GROUP_KEYS, sort=False)
        if methods is None or runs[key[0]]["method"] in methods or runs[key[0]]["method"] == "base"
    ]
    run_bootstraps(jobs, n_boot, seed)
    for r in rows:  # a point interval (constant values) is the mean itself, not one ulp beside it
        if r["mean_ci_low"] == r["mean_ci_high"]:
            r["mean"] = r["mean_ci_low"]
    means = {(r["run_id"], r["suite"], r["reward"], r["reward_version"]): r["mean"] for r in rows}
    tables: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        r["base_mean"] = means.get((r["base_run_id"], r["suite"], r["reward"], r["reward_version"]))
        if r["p_value"] is not None:
            tables.setdefault((r["suite"], r["reward"], r["reward_version"]), []).append(r)
    for family in tables.values():
        for r, adjusted in zip(family, stats.holm([r["p_value"] for r in family])):
            r["p_holm"] = float(adjusted)
    return sorted(rows, key=_sort_key)


def provenance(store: Store, rows: list[dict[str, Any]] | None = None, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """What the numbers depend on: the runs shown (all when rows is None), their configs, code and libraries."""
    frame = store.query(
        "SELECT run_id, method, model, model_revision, sampler_key, config_hash, artifact_hash, git_sha, "
        "status, versions_json FROM runs ORDER BY run_id"
    )
    shown = None if rows is None else {r["run_id"] for r in rows} | {r["base_run_id"] for r in rows}
    runs = {}
    for r in frame.to_dict("records"):
        run_id, versions = r.pop("run_id"), r.pop("versions_json")
        if shown is None or run_id in shown:
            r["versions"] = json.loads(versions) if isinstance(versions, str) else None
            runs[run_id] = {k: (v if isinstance(v, (str, dict)) else None) for k, v in r.items()}  # NaN -> None
    return {
        "store": str(store.db_path),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "unit": "prompt", "interval": "percentile 95%"},
        "test": "two-sided exact sign test over prompts, Holm-adjusted within each (suite, reward, version)",
        "git_shas": sorted({r["git_sha"] for r in runs.values() if r["git_sha"]}),
        "runs": runs,
    }


PROVENANCE_COLUMNS = ["run", "method", "model", "revision", "sampler", "config", "artifact", "status", "versions"]


def provenance_facts(prov: dict) -> list[tuple[str, str]]:
    """The footer's (label, plain text) lines, for every format to escape and lay out its own way."""
    b = prov["bootstrap"]
    return [("n", "paired (prompt, seed) comparisons with base; for base, its scored images"),
            ("intervals", f"{b['interval']} cluster bootstrap over prompts, {b['n_boot']} resamples, seed {b['seed']}"),
            ("p", prov["test"]), ("git", ", ".join(prov["git_shas"]) or "unknown"), ("store", prov["store"])]


def provenance_runs(prov: dict) -> list[list[str]]:
    """One row of PROVENANCE_COLUMNS per run, in plain text ("" where a value is missing)."""
    rows = []
    for run_id, r in prov["runs"].items():
        versions = ", ".join(f"{k} {v}" for k, v in (r["versions"] or {}).items())
        rows.append([str(c) if c else "" for c in (run_id, r["method"], r["model"], r["model_revision"],
                                                    r["sampler_key"], r["config_hash"], r["artifact_hash"],
                                                    r["status"], versions)])
    return rows


def labels(runs: list[dict[str, Any]]) -> list[str]:
    """Method names, with the model and then the config hash added only where needed to tell runs apart.

    ``runs`` are dicts with method, model, config_hash and run_id (report rows or run entries).
    """
    several_models = len({r["model"] for r in runs}) > 1
    names = [f"{r['method']} ({r['model']})" if several_models else r["method"] for r in runs]
    return [
        f"{lab} [{(r['config_hash'] or r['run_id'])[:8]}]" if names.count(lab) > 1 else lab
        for lab, r in zip(names, runs)
    ]


_labels = labels


def tables(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Rows grouped per (suite, reward, reward_version), in row order: the tables of the report."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["suite"], r["reward"], r["reward_version"]), []).append(r)
    return out


def _markdown(rows: list[dict[str, Any]], prov: dict) -> str:
    """The tables alone (no figures): what ``render(..., "md")`` returns; the full report is bench.report_doc."""
    from bench import report_md

    out = ["# diffusion-pref-bench report", ""]
    grouped = tables(rows)
    if not grouped:
        out += ["No scored images in the store for this selection.", ""]
    for (suite, reward, version), table in grouped.items():
        out += [f"## {report_md.text(suite)} · {report_md.text(reward)} ({report_md.text(version)})", ""]
        out += report_md.results_table(table, labels(table)) + [""]
    out += ["## Provenance", ""] + report_md.provenance_lines(prov)
    return "\n".join(out) + "\n"


def render(rows: list[dict[str, Any]], provenance: dict, fmt: str, extra: dict[str, Any] | None = None) -> str:
    """The report as Markdown tables, JSON ({"rows", "provenance"} and the keys of ``extra``) or CSV (rows only)."""
    if fmt == "md":
        return _markdown(rows, provenance)
    if fmt == "json":
        return json.dumps({"rows": rows, "provenance": provenance, **(extra or {})}, indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=ROW_KEYS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    raise ValueError(f"unknown report format {fmt!r}; available: {', '.join(FORMATS)}")


def write(text: str, fmt: str, out: Path | None, reports_dir: Path) -> Path:
    """Write the rendered report to ``out``, or to ``reports_dir/report.<ext>``; returns the path."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; available: {', '.join(FORMATS)}")
    path = Path(out) if out is not None else Path(reports_dir) / f"report.{FORMATS[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
