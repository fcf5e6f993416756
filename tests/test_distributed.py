"""Two CPU processes (gloo) do what one process does: the same training steps, images, rows and resume.

- the row-sharded random draws of a training step are the single-process draws (in-process);
- every training loop (DPO family, SFT errors, Self-NPO, TailorPO) on 2 processes spawned with
  torch.multiprocessing gives the single-process losses and weights within float tolerance;
- ``bench run --processes 2`` (accelerate's launcher), killed in training and in sampling and then
  resumed, stores exactly the rows (same images, same pixels, same scores) of one uninterrupted
  process, and only its main process ever opened the store.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kill_helpers import kill_when, store_rows
from run_inputs import run_inputs
from typer.testing import CliRunner

from bench.cli import app
from methods.core.parallel import ONE_PROCESS, DataParallel, TorchDataParallel

# -- the draws of a step, split by rows --------------------------------------------------------------


def _step_draws(gen: torch.Generator, rows: int) -> list[torch.Tensor]:
    # what the loops draw per micro-batch: noise, timesteps, uniforms, in every call form torch offers
    return [torch.randn((rows, 2, 3), generator=gen), torch.randint(0, 1000, (rows,), generator=gen),
            torch.rand(rows, generator=gen), torch.randn(rows, 4, generator=gen)]


@pytest.mark.parametrize("n, world", [(5, 2), (4, 2), (7, 3)])
def test_row_draws_are_slices_of_the_single_process_draws(n, world):
    want = _step_draws(torch.Generator().manual_seed(3), n)
    after = torch.Generator().manual_seed(3)
    _step_draws(after, n)
    got = []
    for rank in range(world):
        dp = TorchDataParallel(rank, world)  # draws need no process group
        gen = torch.Generator().manual_seed(3)
        with dp.draws(gen, n):
            got.append(_step_draws(gen, dp.rows(n).stop - dp.rows(n).start))
        assert torch.equal(gen.get_state(), after.get_state())  # every process consumed a whole step
    for i, full in enumerate(want):
        assert torch.equal(torch.cat([g[i] for g in got]), full)


def test_draws_that_cannot_be_split_are_refused():
    dp, gen = TorchDataParallel(0, 2), torch.Generator()
    with pytest.raises(RuntimeError, match="rows"), dp.draws(gen, 4):
        torch.randn((3, 2), generator=gen)  # not this process's 2 rows first
    with pytest.raises(RuntimeError, match="randperm"), dp.draws(gen, 4):
        torch.randperm(4, generator=gen)
    with dp.draws(gen, 4):
        torch.randn((5, 2))  # other generators are left alone
    with pytest.raises(ValueError, match="cannot be split over 2 processes"):
        dp.check_split([6, 1], "batch_pairs")
    ONE_PROCESS.check_split([1], "batch_pairs")


# -- training: 2 spawned processes against 1 ---------------------------------------------------------


def _cases() -> dict[str, tuple[str, dict]]:
    """Short runs of every training loop, with uneven splits and gradient accumulation."""
    common = {"steps": 2, "lr": 1e-3, "warmup_steps": 0}
    return {
        "dpo_full_uneven": ("dpo", {**common, "batch_pairs": 5, "micro_batch_pairs": 0, "prompt_dropout": 0.5}),
        "sdpo_lora_accumulated": ("sdpo", {**common, "batch_pairs": 6, "micro_batch_pairs": 4, "lora_rank": 2}),
        "contrastive_sft": ("contrastive", {**common, "batch_pairs": 4, "micro_batch_pairs": 0}),
        "self_npo": ("self_npo", {"steps": 2, "lr": 1e-3, "batch_size": 4, "micro_batch": 2, "teacher_steps": 2}),
        "tailorpo_guided": ("tailorpo", {"steps": 2, "lr": 1e-3, "batch_size": 3, "rollout_steps": 3,
                                         "gradient_guidance": True}),
    }


def _train_all(pipe_dir: Path, out: Path, dp: DataParallel) -> dict[str, list]:
    import tiny_pipelines
    from method_helpers import make_context, pair_data, short_config

    from bench.registry import METHODS

    pipe = tiny_pipelines.load(pipe_dir)
    pairs = pair_data(pipe, n=9, ties=1)
    logs = {}
    for name, (method_id, overrides) in _cases().items():
        cls = METHODS.get(method_id)
        ctx, logs[name] = make_context(pipe, out / name, pairs=pairs)
        cls(short_config(cls, **overrides)).train(dataclasses.replace(ctx, dist=dp))
    return logs


def _train_worker(rank: int, world: int, rendezvous: str, pipe_dir: Path, out: Path) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        logs = _train_all(pipe_dir, out, TorchDataParallel(rank, world))
        torch.save(logs, out / f"logs-{rank}.pt")
    finally:
        dist.destroy_process_group()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.rglob("*.safetensors"))
    assert files, f"no weights saved in {folder}"
    return {f"{f.relative_to(folder)}:{k}": v for f in files for k, v in load_file(f).items()}


@pytest.mark.slow
def test_two_processes_train_like_one(tiny_sd_dir, tmp_path):
    one = _train_all(tiny_sd_dir, tmp_path / "one", ONE_PROCESS)
    two = tmp_path / "two"
    two.mkdir()
    torch.multiprocessing.spawn(_train_worker, args=(2, str(tmp_path / "rendezvous"), tiny_sd_dir, two), nprocs=2)
    for rank in range(2):  # every process logs the same values: its loss covers the whole batch
        got = torch.load(two / f"logs-{rank}.pt")
        for name, want in one.items():
            assert [s for s, _ in got[name]] == [s for s, _ in want], name
            for (step, g), (_, w) in zip(got[name], want):
                assert g.keys() == w.keys(), name
                # Step 1 sees the same weights: float noise only. Later steps see weights one AdamW update
                # apart, which amplifies that noise (below): measured 1.4e-4 relative on sdpo's LoRA loss.
                rel = 1e-4 if step == 1 else 1e-3
                for key in w:
                    assert g[key] == pytest.approx(w[key], rel=rel, abs=1e-6), (name, step, key)
    # Only the main process saves, and it saves the single-process weights. The step-1 gradients agree to
    # ~1e-6 of their size, but AdamW divides each entry by its own magnitude, so float noise in entries
    # that nearly cancel becomes a visible difference: bounded here by 10 % of the most two steps can
    # move a weight (lr per step).
    for name, (_, overrides) in _cases().items():
        want, got = _weights(tmp_path / "one" / name), _weights(two / name)
        assert got.keys() == want.keys(), name
        worst = max((got[k] - want[k]).abs().max().item() for k in want)
        assert worst <= 0.1 * overrides["lr"] * overrides["steps"], (name, worst)


# -- bench run --processes 2: killed, resumed, same rows ---------------------------------------------


def _pixels(db: Path, method: str) -> torch.Tensor:
    """Every image of the method's run, ordered by image id, as integer pixel levels."""
    import numpy as np
    from PIL import Image

    from bench.store import Store

    paths = Store(db).query(f"SELECT path FROM images JOIN runs USING (run_id) WHERE method = '{method}' "
                            "ORDER BY image_id").path
    return torch.stack([torch.from_numpy(np.asarray(Image.open(db.parent / p), dtype=np.int16)) for p in paths])


def _args(model: Path, prompts: Path, data: Path) -> list[str]:
    return ["--model", str(model), "--methods", "dpo", "--suite", str(prompts), "--seeds", "0-3",
            "--rewards", "oracle", "--device", "cpu", "--set", f"data.pickapic={data}", "--set", "dpo.steps=3",
            "--set", "dpo.batch_pairs=4", "--set", "dpo.micro_batch_pairs=0", "--set", "dpo.warmup_steps=0",
            "--set", "sampler.steps=2", "--set", "sampler.batch=2"]


@pytest.mark.slow
def test_two_processes_killed_and_resumed_store_what_one_process_stores(tiny_sd_dir, tmp_path):
    prompts, data = run_inputs(tmp_path / "inputs")
    args = _args(tiny_sd_dir, prompts, data)
    reference = tmp_path / "one" / "bench.duckdb"
    result = CliRunner().invoke(app, ["run", "--db", str(reference), *args])  # 1 thread (conftest), like each process
    assert result.exit_code == 0, result.output

    db = tmp_path / "two" / "bench.duckdb"
    command = [sys.executable, "-m", "bench", "run", "--processes", "2", "--db", str(db), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    checkpoints, images = db.parent / "checkpoints", db.parent / "images"
    stages = [lambda: checkpoints.exists() and any(checkpoints.glob("*.tmp")),  # while training
              lambda: images.exists() and sum(1 for _ in images.rglob("*.png")) >= 10]  # while sampling
    for ready in stages:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        assert kill_when(proc, ready), "the run finished before it could be killed"
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 processes" in " ".join(done.stderr.split())  # the plan line, as the main process printed it

    got, want = store_rows(db), store_rows(reference)
    assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in want.items()}
    assert [r[:4] for r in got["images"]] == [r[:4] for r in want["images"]]  # same ids, runs, prompts, seeds
    # The same checkpoint sampled by 2 processes: the same pixels (sha256) and scores.
    base_ids = {r[0] for r in want["images"] if r[1].startswith("base-")}
    assert [r for r in got["images"] if r[0] in base_ids] == [r for r in want["images"] if r[0] in base_ids]
    assert [r for r in got["scores"] if r[0] in base_ids] == [r for r in want["scores"] if r[0] in base_ids]
    # dpo's checkpoint was trained by DDP: float noise in its weights may move a pixel by one level.
    assert _pixels(db, "dpo").sub(_pixels(reference, "dpo")).abs().max() <= 1
    for g, w in zip(got["scores"], want["scores"]):
        assert g[:3] == w[:3] and g[3] == pytest.approx(w[3], abs=1e-2), g[:3]
    assert [r[1:] for r in got["runs"]] == [r[1:] for r in want["runs"]]
    # Losses of 2 processes x 2 pairs = of 1 x 4 pairs. Step 1 agrees to ~1e-7; later steps differ more,
    # as AdamW's first steps turn float noise into small weight differences which β = 5000 magnifies.
    for g, w in zip(got["train_log"], want["train_log"]):
        assert g[:3] == w[:3] and g[3] == pytest.approx(w[3], rel=2e-3, abs=1e-6), g[:3]
    assert not list(db.parent.rglob("*.tmp")), "a temporary file survived the resumed run"
