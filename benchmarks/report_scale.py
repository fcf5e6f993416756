"""How long `bench report` takes on a store with one million score rows (target: under 10 s on 2 cores).

Builds (or reuses) a store under /tmp with 5 runs (base and four methods) x 10,000 prompts x 10 seeds
= 500,000 images, each scored by 2 rewards: 10^6 score rows. ``--train-seeds K`` makes each method an
arm of K training replicates (4K + 1 runs: the report's two-level bootstrap), and the store records
what a run records: both rewards' roles (preference) and tailorpo's in-loop reward (trained-on). Prompts carry a category (10 levels)
and meta attributes (colour: 6 levels, size: 3), as the tiny world's do. The store is filled with
DuckDB SQL in bulk, not through the per-row API. Image files are not written: the report's grids
then show placeholders, which is also what a report of a store whose images were deleted looks like.

What the newer report sections read is there too, beside the 10^6 scores of the runs: each method's
first replicate trained 1000 steps with ``CHECKPOINTS`` intermediate checkpoints (``bench run
--eval-every``), each drawn on ``CHECKPOINT_PROMPTS`` prompts x every seed and scored by both rewards;
a 64-d embedding (the tiny world's fidelity features) of every image of ``EMBEDDED_PROMPTS`` prompts
of every run; and a training log of 1000 steps x 6 metrics per trained run.

Each format is timed end to end as a user runs it (`python -m bench report ...` in a fresh process:
interpreter start, imports, SQL, bootstrap, charts, grids, writing). Prints a table.

    python benchmarks/report_scale.py [--prompts 10000] [--seeds 10] [--train-seeds 1] [--dir /tmp/bench_report_scale]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from bench.store import Store

METHODS = ("base", "dpo", "npo", "sdpo", "tailorpo")
REWARDS = ("pickscore", "hpsv21")
SHIFT = {"base": 0.0, "dpo": 0.05, "npo": -0.02, "sdpo": 0.03, "tailorpo": 0.0}  # mean effect on the score
TRAIN_STEPS, CHECKPOINTS, CHECKPOINT_PROMPTS = 1000, (250, 500, 750), 200
EMBEDDED_PROMPTS, EMBEDDING_DIM = 1000, 64
TRAIN_METRICS = ("loss", "implicit_acc", "rel_err_w", "rel_err_l", "grad_norm", "lr")


def _run_ids(train_seeds: int) -> list[tuple[str, str, int | None]]:
    """(run_id, method, train seed or None) of every run: base once, each method once per training seed."""
    return [("base", "base", None)] + [(m if train_seeds == 1 else f"{m}-s{k}", m, k if train_seeds > 1 else None)
                                       for m in METHODS[1:] for k in range(train_seeds)]


def build(db: Path, n_prompts: int, n_seeds: int, train_seeds: int = 1) -> Store:
    """A store with (1 + 4 train_seeds) x n_prompts x n_seeds images and len(REWARDS) scores each."""
    run_ids = _run_ids(train_seeds)
    finals = _finals(run_ids)
    ckpt_prompts = min(CHECKPOINT_PROMPTS, n_prompts)
    want = (len(run_ids) * n_prompts + len(finals) * len(CHECKPOINTS) * ckpt_prompts) * n_seeds * len(REWARDS)
    n_runs = len(run_ids) + len(finals) * len(CHECKPOINTS)
    if db.is_file():
        store = Store(db)
        counts = store.counts()
        if (counts["scores"], counts["runs"], counts["reward_roles"], counts["embeddings"] > 0) == (
                want, n_runs, len(REWARDS), True):
            return store
        db.unlink()
    store = Store(db)
    runs = ", ".join(f"('{rid}', '{m}', 'big-model', 'k', 'cfg{rid}', 'art-{rid}', '{_config(m)}', 'done', "
                     f"{'NULL' if m == 'base' else 10.0}, 50.0, 5.0)" for rid, m, _ in run_ids)
    shifts = ", ".join(f"('{m}', {s})" for m, s in SHIFT.items())
    rewards = ", ".join(f"('{r}')" for r in REWARDS)
    with duckdb.connect(str(db)) as con:
        con.execute(f"INSERT INTO runs (run_id, method, model, sampler_key, config_hash, artifact_hash, config_json, "
                    f"status, train_s, sample_s, score_s) VALUES {runs}")
        con.execute("""
            INSERT INTO prompts
            SELECT 'big', 'p' || lpad(i::VARCHAR, 6, '0'), 'prompt number ' || i, 'cat' || (i % 10),
                   '{"colour": "c' || (i % 6) || '", "size": "s' || (i % 3) || '"}'
            FROM range($n) t(i)""", {"n": n_prompts})
        con.execute("""
            INSERT INTO images (image_id, run_id, suite, prompt_id, prompt, seed, path, sha256, width, height)
            SELECT m.run_id || '/' || p.i || '/' || s.seed, m.run_id, 'big', 'p' || lpad(p.i::VARCHAR, 6, '0'),
                   'prompt number ' || p.i, s.seed, 'images/missing/' || m.run_id || '_' || p.i || '_' || s.seed
                   || '.png', '', 64, 64
            FROM (SELECT unnest($runs) AS run_id) m, range($n) p(i), range($k) s(seed)""",
                    {"runs": [rid for rid, _, _ in run_ids], "n": n_prompts, "k": n_seeds})
        # A score is a prompt effect + a seed effect + the method's shift + noise, all from hashes:
        # deterministic, and correlated within a prompt as real scores are.
        con.execute(f"""
            INSERT INTO scores (image_id, reward, reward_version, value)
            SELECT i.image_id, r.reward, 'v1',
                   (hash(r.reward || i.prompt_id) % 1000) / 1000.0 + (hash(i.seed) % 100) / 1000.0
                   + sh.shift + (hash(i.image_id || r.reward) % 1000) / 4000.0
            FROM images i JOIN runs ru ON ru.run_id = i.run_id, (VALUES {rewards}) r(reward),
                 (VALUES {shifts}) sh(method, shift)
            WHERE sh.method = ru.method""")
        _extras(con, finals, n_prompts, n_seeds, rewards)
    for reward in REWARDS:
        store.set_reward_role(reward, "preference")
    for rid, method, seed in run_ids:
        if seed is not None:
            store.add_replicate(rid, f"{method}-arm", seed)
        if method == "tailorpo":
            store.set_run_rewards(rid, {"pickscore": ("trained-on", "its in-loop reward")})
    return store


def _config(method: str, **extra) -> str:
    """A run's config_json, as SQL text: a trained method's steps."""
    steps = {"steps": TRAIN_STEPS} if method != "base" else {}
    return json.dumps({"method": method, "method_config": steps, **extra}).replace("'", "''")


def _finals(run_ids: list[tuple[str, str, int | None]]) -> list[tuple[str, str]]:
    """(run_id, method) of the runs with intermediate checkpoints: each method's first replicate."""
    return [(rid, m) for rid, m, seed in run_ids if m != "base" and seed in (None, 0)]


def _extras(con: duckdb.DuckDBPyConnection, finals: list[tuple[str, str]], n_prompts: int, n_seeds: int,
            rewards: str) -> None:
    """The checkpoint runs of ``finals`` with their images and scores, embeddings of a prompt subset of every run,
    and the training logs; a checkpoint's effect on the score grows with its step."""
    subset = [f"p{i:06d}" for i in range(min(CHECKPOINT_PROMPTS, n_prompts))]
    ckpts = [(f"{rid}-step{step}", rid, m, step) for rid, m in finals for step in CHECKPOINTS]
    for ckpt, final, method, step in ckpts:
        config = _config(method, checkpoint_step=step, final_run=final, prompt_ids=subset)
        con.execute(f"INSERT INTO runs (run_id, method, model, sampler_key, config_hash, artifact_hash, config_json, "
                    f"status, sample_s) VALUES ('{ckpt}', '{method}', 'big-model', 'k', 'cfg{ckpt}', 'art-{final}', "
                    f"'{config}', 'done', 1.0)")
        con.execute("INSERT INTO checkpoint_steps VALUES (?, ?, ?)", [ckpt, final, step])
    con.execute("""
        INSERT INTO images (image_id, run_id, suite, prompt_id, prompt, seed, path, sha256, width, height)
        SELECT c.run_id || '/' || p.i || '/' || s.seed, c.run_id, 'big', 'p' || lpad(p.i::VARCHAR, 6, '0'),
               'prompt number ' || p.i, s.seed, 'images/missing/' || c.run_id || '_' || p.i || '_' || s.seed
               || '.png', '', 64, 64
        FROM (SELECT unnest($runs) AS run_id) c, range($n) p(i), range($k) s(seed)""",
                {"runs": [c for c, *_ in ckpts], "n": len(subset), "k": n_seeds})
    con.execute(f"""
        INSERT INTO scores (image_id, reward, reward_version, value)
        SELECT i.image_id, r.reward, 'v1',
               (hash(r.reward || i.prompt_id) % 1000) / 1000.0 + (hash(i.seed) % 100) / 1000.0
               + c.step / {TRAIN_STEPS} * 0.05 * (CASE WHEN r.reward = 'pickscore' THEN 1 ELSE -1 END)
               + (hash(i.image_id || r.reward) % 1000) / 4000.0
        FROM images i JOIN checkpoint_steps c ON c.run_id = i.run_id, (VALUES {rewards}) r(reward)""")
    con.execute("""
        INSERT INTO embeddings
        SELECT i.image_id, 'fidelity-features', 'v1',
               list_transform(range($d), lambda j: ((hash(i.image_id || j) % 2000) / 1000.0 - 1.0)::FLOAT)
        FROM images i WHERE i.prompt_id < 'p' || lpad($n::VARCHAR, 6, '0')
          AND i.run_id NOT IN (SELECT run_id FROM checkpoint_steps)""", {"d": EMBEDDING_DIM, "n": EMBEDDED_PROMPTS})
    con.execute("""
        INSERT INTO train_log
        SELECT 'art-' || r.run_id, r.method, s.step, m.name,
               CASE m.name WHEN 'loss' THEN 0.69 - s.step / 5000.0 WHEN 'implicit_acc' THEN 0.5 + s.step / 4000.0
                           ELSE (hash(r.run_id || m.name || s.step) % 1000) / 1e5 END
        FROM runs r, range(1, $steps + 1) s(step), (SELECT unnest($names) AS name) m
        WHERE r.method <> 'base' AND r.run_id NOT IN (SELECT run_id FROM checkpoint_steps)""",
                {"steps": TRAIN_STEPS, "names": list(TRAIN_METRICS)})


def time_report(db: Path, fmt: str, out: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the child, bytes written) for one `bench report` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", "report", "--db", str(db), "--format", fmt, "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--train-seeds", type=int, default=1, help="replicates of each method (1: single runs)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench_report_scale"))
    parser.add_argument("--formats", default="md,json,html,csv")
    args = parser.parse_args()
    db = args.dir / "bench.duckdb"
    start = time.perf_counter()
    store = build(db, args.prompts, args.seeds, args.train_seeds)
    counts = store.counts()
    print(f"store {db}: {counts['runs']} runs ({counts['checkpoint_steps']} of them intermediate checkpoints), "
          f"{counts['prompts']} prompts, {counts['images']} images, {counts['scores']} scores, "
          f"{counts['embeddings']} embeddings, {counts['train_log']} train_log rows "
          f"(ready in {time.perf_counter() - start:.1f} s)")
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores (other work inflates wall time; CPU s does not grow "
          f"with it)")
    print("\n| format | wall s | CPU s | output bytes | under 10 s |\n|---|---:|---:|---:|---|")
    for fmt in args.formats.split(","):
        wall, cpu, size = time_report(db, fmt, args.dir / "reports" / f"report.{fmt}")
        print(f"| {fmt} | {wall:.2f} | {cpu:.2f} | {size} | {'yes' if wall < 10 else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
