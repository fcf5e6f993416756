"""The report: per (suite, reward version, run) means and win rates against base, from the store only.

A method run is paired with the ``base`` run of the same model and sampler_key (the store's
``pairs`` view) on the same (suite, prompt_id, seed), so both images share the prompt and the
initial noise. Intervals are 95% percentile cluster bootstraps over prompts, seeded per row, so
a row's numbers do not depend on which other rows are shown. p is the two-sided sign test over
prompts (a prompt wins when the mean of its paired wins is above 0.5), Holm-adjusted over the
methods of one table, i.e. within one (suite, reward, reward_version).

One SQL query returns, per (run, suite, reward version), the arrays of prompt codes, scores and
paired wins; numpy does the statistics. A store with 10^6 scores reports in a few seconds.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench import stats
from bench.store import Store

FORMATS = {"md": "md", "json": "json", "csv": "csv"}  # fmt -> file extension
ROW_KEYS = (
    "suite", "reward", "reward_version", "model", "method", "run_id", "config_hash", "status", "base_run_id",
    "n", "n_images", "mean", "mean_ci_low", "mean_ci_high", "base_mean", "win_rate", "ci_low", "ci_high",
    "p_value", "p_holm", "train_s", "sample_s", "score_s",
)  # n: paired comparisons with base (for a base row: its scored images); n_images: scored images

# c numbers prompts within the whole result so that it is a valid cluster label inside any group.
_ARRAYS_SQL = """
WITH scored AS (
    SELECT i.run_id, i.suite, s.reward, s.reward_version, s.value, p.win,
           dense_rank() OVER (ORDER BY i.suite, i.prompt_id) AS c
    FROM images i JOIN scores s ON s.image_id = i.image_id
    LEFT JOIN pairs p ON p.image_id = i.image_id AND p.reward = s.reward AND p.reward_version = s.reward_version
    WHERE ($suites IS NULL OR list_contains($suites, i.suite))
)
SELECT run_id, suite, reward, reward_version, list(c) AS clusters, list(value) AS vals,
       coalesce(list(c) FILTER (WHERE win IS NOT NULL), []) AS win_clusters,
       coalesce(list(win) FILTER (WHERE win IS NOT NULL), [])::DOUBLE[] AS wins
FROM scored GROUP BY run_id, suite, reward, reward_version
"""
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


def _opt(x: Any) -> float | None:
    """A float for JSON and CSV, or None where the store holds NULL."""
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _row(group: Any, run: dict[str, Any], n_boot: int, seed: int) -> dict[str, Any]:
    """Statistics of one (run, suite, reward version) group."""
    vals = np.asarray(group.vals, dtype=np.float64)
    mean, lo, hi = stats.mean_ci(vals, np.asarray(group.clusters), n_boot=n_boot, seed=seed)
    wins = np.asarray(group.wins, dtype=np.float64)
    row = {
        "suite": group.suite, "reward": group.reward, "reward_version": group.reward_version,
        "model": run["model"], "method": run["method"], "run_id": group.run_id, "config_hash": run["config_hash"],
        "status": run["status"], "base_run_id": run["base_run_id"],
        "n": int(wins.size) if run["method"] != "base" else int(vals.size), "n_images": int(vals.size),
        "mean": mean, "mean_ci_low": lo, "mean_ci_high": hi, "base_mean": None,
        "win_rate": None, "ci_low": None, "ci_high": None, "p_value": None, "p_holm": None,
        "train_s": _opt(run["train_s"]), "sample_s": _opt(run["sample_s"]), "score_s": _opt(run["score_s"]),
    }
    if wins.size:
        clusters = np.asarray(group.win_clusters)
        row["win_rate"] = float(wins.mean())
        row["ci_low"], row["ci_high"] = stats.cluster_bootstrap_ci(wins, clusters, n_boot=n_boot, seed=seed)
        row["p_value"] = stats.sign_test_p(stats.per_cluster_means(wins, clusters))
    return row


def _sort_key(row: dict[str, Any]) -> tuple:
    return (row["suite"], row["reward"], row["reward_version"], row["method"] != "base", row["method"],
            row["model"], row["run_id"])


def build(
    store: Store,
    suites: list[str] | None = None,
    methods: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Report rows (keys ``ROW_KEYS``), one per (suite, reward, reward_version, run).

    ``methods`` filters the method runs; base runs are always shown, being the reference.
    """
    _check_filter(store, "suite", "images", suites)
    _check_filter(store, "method", "runs", methods)
    runs = {r["run_id"]: r for r in store.query(_RUNS_SQL).to_dict("records")}
    for r in runs.values():
        r["base_run_id"] = r["base_run_id"] if isinstance(r["base_run_id"], str) else None
    groups = store.query(_ARRAYS_SQL, {"suites": suites})
    rows = [
        _row(g, runs[g.run_id], n_boot, seed)
        for g in groups.itertuples(index=False)
        if methods is None or runs[g.run_id]["method"] in methods or runs[g.run_id]["method"] == "base"
    ]
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


def _g(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _labels(table: list[dict[str, Any]]) -> list[str]:
    """Method names, with the model and then the config hash added only where needed to tell rows apart."""
    several_models = len({r["model"] for r in table}) > 1
    labels = [f"{r['method']} ({r['model']})" if several_models else r["method"] for r in table]
    return [
        f"{lab} [{(r['config_hash'] or r['run_id'])[:8]}]" if labels.count(lab) > 1 else lab
        for lab, r in zip(labels, table)
    ]


def _markdown(rows: list[dict[str, Any]], prov: dict) -> str:
    out = ["# diffusion-pref-bench report", ""]
    tables: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        tables.setdefault((r["suite"], r["reward"], r["reward_version"]), []).append(r)
    if not tables:
        out += ["No scored images in the store for this selection.", ""]
    for (suite, reward, version), table in tables.items():
        out += [f"## {suite} · {reward} ({version})", "",
                "| method | n | mean [95% CI] | win rate vs base % [95% CI] | p (Holm) | train s | sample s |",
                "|---|---:|---|---|---|---:|---:|"]
        for label, r in zip(_labels(table), table):
            win = "—" if r["win_rate"] is None else f"{_pct(r['win_rate'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
            p = "—" if r["p_value"] is None else f"{r['p_value']:.3g} ({r['p_holm']:.3g})"
            out.append(f"| {label} | {r['n']} | {_g(r['mean'])} [{_g(r['mean_ci_low'])}, {_g(r['mean_ci_high'])}] "
                       f"| {win} | {p} | {_g(r['train_s'])} | {_g(r['sample_s'])} |")
        out.append("")
    b = prov["bootstrap"]
    out += ["## Provenance", "",
            f"- n: paired (prompt, seed) comparisons with base; for base, its scored images",
            f"- intervals: {b['interval']} cluster bootstrap over prompts, {b['n_boot']} resamples, seed {b['seed']}",
            f"- p: {prov['test']}",
            f"- git: {', '.join(prov['git_shas']) or 'unknown'}",
            f"- store: {prov['store']}", "",
            "| run | method | model | revision | sampler | config | artifact | status | versions |",
            "|---|---|---|---|---|---|---|---|---|"]
    for run_id, r in prov["runs"].items():
        versions = ", ".join(f"{k} {v}" for k, v in (r["versions"] or {}).items()) or "—"
        cells = [r["method"], r["model"], r["model_revision"], r["sampler_key"], r["config_hash"], r["artifact_hash"]]
        out.append(f"| {run_id} | " + " | ".join(c or "—" for c in cells) + f" | {r['status']} | {versions} |")
    return "\n".join(out) + "\n"


def render(rows: list[dict[str, Any]], provenance: dict, fmt: str) -> str:
    """The report as Markdown tables, JSON ({"rows", "provenance"}) or CSV (rows only)."""
    if fmt == "md":
        return _markdown(rows, provenance)
    if fmt == "json":
        return json.dumps({"rows": rows, "provenance": provenance}, indent=2, allow_nan=False) + "\n"
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
