"""Time the default ``bench run`` (every method on the tiny world) and print the results table.

    python benchmarks/run_default.py                       # results under /tmp/run-default
    python benchmarks/run_default.py --results results     # reuse the project's prepared world
    python benchmarks/run_default.py --methods dpo,sdpo --set dpo.lr=2e-5

The tiny world is prepared first (``bench prepare tiny``, timed separately), so the run's time is what
issue 4 budgets: training, sampling and scoring of all methods on a prepared world. Prints, per
method: training, sampling and scoring seconds, sampling cost relative to base, and the oracle win
rate against base with its 95% CI and the fidelity change, read back from ``bench report``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.store import Store


def bench(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", *args], check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=Path(tempfile.gettempdir()) / "run-default")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--methods", default=None, help="default: every registered method")
    ap.add_argument("--seeds", default=None)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    db = args.results / "bench.duckdb"
    prepare_s = bench("prepare", args.model, "--db", str(db))
    run = ["run", "--model", args.model, "--db", str(db)]
    run += ["--methods", args.methods] if args.methods else []
    run += ["--seeds", args.seeds] if args.seeds else []
    for s in args.set:
        run += ["--set", s]
    run_s = bench(*run)
    out = args.results / "report.json"
    subprocess.run([sys.executable, "-m", "bench", "report", "--db", str(db), "--format", "json", "--out", str(out)],
                   check=True, capture_output=True)
    rows = json.loads(out.read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    runs = Store(db).query("SELECT run_id, method, train_s, sample_s, score_s FROM runs WHERE status = 'done' "
                           "ORDER BY method, created_at")
    base_sample = float(runs.loc[runs.method == "base", "sample_s"].max())
    by = {(r["run_id"], r["reward"]): r for r in rows if r.get("suite") == "tiny-eval"}
    several = set(runs.method[runs.method.duplicated()])  # a store holding older configs of a method

    print(f"\nprepare (cached after the first time): {prepare_s:.0f} s; bench run: {run_s:.0f} s "
          f"({run_s / 60:.1f} min)\n")
    print("| method | train s | sample s | sample cost vs base | score s | oracle win vs base [95% CI] "
          "| oracle mean | fidelity | fidelity vs base |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs.itertuples():
        o, f = by.get((r.run_id, "oracle"), {}), by.get((r.run_id, "fidelity"), {})
        name = f"{r.method} ({r.run_id})" if r.method in several else r.method
        train = "—" if pd.isna(r.train_s) else f"{r.train_s:.0f}"  # — : base, or a checkpoint reused
        win = (f"{o['win_rate']:.3f} [{o['ci_low']:.3f}, {o['ci_high']:.3f}]"
               if o.get("win_rate") is not None else "—")
        dfid = (f"{f['mean'] - f['base_mean']:+.3f}" if f.get("base_mean") is not None and r.method != "base"
                else "—")
        print(f"| {name} | {train} | {r.sample_s or 0:.0f} | {(r.sample_s or 0) / base_sample:.2f}× "
              f"| {r.score_s or 0:.0f} | {win} | {o.get('mean', float('nan')):.3f} | "
              f"{f.get('mean', float('nan')):.3f} | {dfid} |")


if __name__ == "__main__":
    main()
