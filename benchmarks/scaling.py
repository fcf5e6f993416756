"""Sampling throughput of `bench run` on 1 process and on 2 (`--processes 2`), on this machine.

    python benchmarks/scaling.py                        # tiny scale, tiny-eval x 4 seeds, base only
    python benchmarks/scaling.py --scale small-sd --seeds 0 --rounds 2

Caveat: on a CPU machine the processes share its cores. One process uses all of them as threads;
N processes use 1/N each. So N processes gain only where a single process leaves cores idle
(Python, PNG encoding, DuckDB commits, small batches that do not fill the threads), and can lose to
communication and to running N copies of the model. On N GPUs each process has its own device; this
benchmark measures the mechanism (sharding, one writer), not that speed-up.

Each run starts from an empty results folder and samples the base model on every prompt and seed
(``--methods base --rewards oracle``, DDIM 20 steps, batch 256), on a saved pipeline of the scale's
architecture (benchmarks/common.py). Throughput = images / the sample phase's time as the store
records it (``runs.sample_s``); wall time includes process start, launch and scoring. Rounds
alternate 1 and 2 processes; the table shows median (range).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # benchmarks/common.py, beside this script


def run(model: Path, processes: int, seeds: str, root: Path, threads: int | None) -> tuple[float, float, int]:
    from bench.store import Store

    db = root / "bench.duckdb"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", "run", "--model", str(model), "--methods", "base", "--rewards",
                    "oracle", "--seeds", seeds, "--device", "cpu", "--processes", str(processes), "--db", str(db),
                    "--set", "sampler.name=ddim", "--set", "sampler.steps=20", "--set", "sampler.batch=256"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    store = Store(db)
    sample_s = float(store.query("SELECT sample_s FROM runs").sample_s.iloc[0])
    return sample_s, wall, store.counts()["images"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="tiny", choices=common.SCALES)
    ap.add_argument("--seeds", default="0-3")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dpb-benchmarks")
    args = ap.parse_args()
    model = common.build_pipeline(args.scale, args.cache / f"pipeline-{args.scale}")
    cores = os.cpu_count() or 1
    layouts = {1: cores, 2: max(1, cores // 2)}  # threads per process: the cores, shared out
    print(f"machine: {common.machine()}; {args.scale} scale, tiny-eval x seeds {args.seeds}, {args.rounds} rounds")
    results: dict[int, list[tuple[float, float, int]]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for n, threads in layouts.items():
            with tempfile.TemporaryDirectory(dir=args.cache) as root:
                results[n].append(run(model, n, args.seeds, Path(root), threads))
    images = results[1][0][2]
    rows = []
    for n, threads in layouts.items():
        rows.append([n, threads, images, common.spread((s for s, _, _ in results[n]), "{:.1f}"),
                     common.spread((i / s for s, _, i in results[n]), "{:.1f}"),
                     common.spread((w for _, w, _ in results[n]), "{:.1f}")])
    speedup = [one[0] / two[0] for one, two in zip(results[1], results[2])]
    rows.append(["2 vs 1", "", "", "", f"**{common.spread(speedup, '{:.2f}')}×**", ""])
    common.print_table(f"Sampling throughput, 1 vs 2 processes sharing {cores} cores (per-round; median (range))",
                       ["processes", "threads each", "images", "sample phase s", "images/s", "wall s"], rows)


if __name__ == "__main__":
    main()
