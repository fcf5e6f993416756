"""The runs a report shows: their order, the names a reader sees, and what their numbers depend on."""

from __future__ import annotations

from typing import Any

from bench.report import data
from bench.store import Store


def shown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of the rows, each once (as its first row): base runs first, then by method, model and run_id."""
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(r["run_id"], r)
    return sorted(seen.values(), key=lambda r: (r["method"] != "base", r["method"], r["model"], r["run_id"]))


def labels(runs: list[dict[str, Any]]) -> list[str]:
    """Method names, with the model and then the sampler settings or the config hash added only where needed
    to tell runs apart.

    ``runs`` are dicts with method, model, config_hash and run_id (report rows or run entries), and optionally
    settings (``data.settings_text``) and n (best_of_n's candidates, ``data.config_facts``): runs of one name that
    differ in N are told apart by it (``best_of_n N=4``), runs drawn under different settings (base at guidance 7.5
    and at 8.5) by those, others by their config hash.
    """
    several_models = len({r["model"] for r in runs}) > 1
    names = [f"{r['method']} ({r['model']})" if several_models else r["method"] for r in runs]
    out = []
    for lab, r in zip(names, runs):
        if names.count(lab) > 1:
            same = [q for n, q in zip(names, runs) if n == lab]
            ns, settings = [q.get("n") for q in same], [q.get("settings") for q in same]
            if all(n is not None for n in ns) and len(set(ns)) == len(ns):
                lab = f"{lab} N={r['n']}"
            elif all(settings) and len(set(settings)) == len(settings):
                lab = f"{lab} ({r['settings']})"
            else:
                lab = f"{lab} [{(r['config_hash'] or r['run_id'])[:8]}]"
        out.append(lab)
    return out


def provenance(store: Store, rows: list[dict[str, Any]] | None = None, *, n_boot: int = 1000, seed: int = 0,
               also: set[str] = frozenset()) -> dict:
    """What the numbers depend on: the runs shown (all when rows is None) and the runs ``also`` names (the
    intermediate checkpoints of the curves), their configs, code and libraries."""
    wanted = None if rows is None else ({rid for r in rows for rid in r.get("run_ids") or [r["run_id"]]}
                                        | {r["base_run_id"] for r in rows} | set(also))
    runs = {}
    for r in data.run_records(store):
        run_id, versions = r.pop("run_id"), r.pop("versions_json")
        if wanted is None or run_id in wanted:
            r["versions"] = data.json_object(versions)  # None where it is not an object: data.anomalies
            runs[run_id] = {k: (v if isinstance(v, (str, dict)) else None) for k, v in r.items()}  # NaN -> None
    return {
        "store": str(store.db_path),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "unit": "prompt", "interval": "percentile 95%",
                      "replicates": "an arm of K > 1 training replicates: two-level, resampling replicates and "
                                    "prompts (prompts crossed with replicates)"},
        "test": "two-sided exact sign test over prompts, Holm-adjusted within each (suite, reward, version)",
        "git_shas": sorted({r["git_sha"] for r in runs.values() if r["git_sha"]}),
        "runs": runs,
    }
