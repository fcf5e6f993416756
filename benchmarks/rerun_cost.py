"""The cost of re-running a finished run, as a fraction of the first run (goal < 3 %).

    python benchmarks/rerun_cost.py                                   # tiny-micro, every method (~15 min a round on 2 cores)
    python benchmarks/rerun_cost.py --model tiny --rounds 2           # the default `bench run`
    python benchmarks/rerun_cost.py --args "--methods dpo --seeds 0"  # a smaller plan

Each round starts from an empty results folder (the tiny world and its derived data, built once
before the rounds, are linked in: building them is preparation, not the run), runs ``bench run`` as a user would (a fresh
``python -m bench run`` process: interpreter start and imports included), then runs the identical
command again, which finds everything done. The table shows both wall times and their ratio per
round, as median (range); and, from the store, that the re-run added no rows.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # benchmarks/common.py, beside this script


def bench(db: Path, model: str, extra: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", "run", "--model", model, "--db", str(db), *extra], check=True,
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny-micro", help="tiny (the default run) or tiny-micro")
    ap.add_argument("--args", default="", help="more `bench run` arguments, e.g. \"--methods dpo --seeds 0\"")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dpb-benchmarks")
    args = ap.parse_args()
    from bench import models
    from bench.store import Store
    from bench.tiny import data

    world = data.ensure_all(args.cache / "worlds", models.TINY_PRESETS[args.model], log=print)  # derived data too
    extra = shlex.split(args.args)
    print(f"machine: {common.machine()}; `bench run --model {args.model} {args.args}`, {args.rounds} rounds")
    rows, ratios = [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=args.cache) as root:
            db = Path(root) / "bench.duckdb"
            (Path(root) / "models").mkdir()
            os.symlink(world, Path(root) / "models" / world.name)
            first = bench(db, args.model, extra, args.threads)
            counts = Store(db).counts()
            again = bench(db, args.model, extra, args.threads)
            added = {k: v - counts[k] for k, v in Store(db).counts().items() if v != counts[k]}
        ratios.append(again / first)
        rows.append([r + 1, f"{first:.1f}", f"{again:.2f}", f"{100 * again / first:.2f} %",
                     ", ".join(f"{k} {v}" for k, v in counts.items()), added or "none"])
    rows.append(["median (range)", "", "", f"**{common.spread((100 * x for x in ratios), '{:.2f}')} %**", "", ""])
    common.print_table("Re-running a finished run (wall seconds of a fresh `python -m bench run`; goal < 3 %)",
                       ["round", "first run s", "re-run s", "re-run / first", "rows after the first run",
                        "rows the re-run added"], rows)


if __name__ == "__main__":
    main()
