"""A run killed with SIGKILL mid-way and started again ends with exactly the rows of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kill_helpers import kill_when, store_rows

from bench.tiny import prepare

ARGS = ["--model", "tiny-micro", "--methods", "dpo,npo", "--seeds", "0-1", "--set", "dpo.steps=4",
        "--set", "npo.steps=4", "--set", "sampler.steps=2"]


def _bench(db: Path) -> list[str]:
    return [sys.executable, "-m", "bench", "run", "--db", str(db), *ARGS]


def _world(results: Path, built: Path) -> None:
    """Share one built micro world between the runs (building it is not what is tested)."""
    target = prepare.world_dir(results, "micro")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(built, target)


@pytest.fixture(scope="module")
def built_micro_world(tmp_path_factory):
    return prepare.ensure(tmp_path_factory.mktemp("world"), "micro", log=lambda m: None)


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_matches_uninterrupted(tmp_path, built_micro_world):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = tmp_path / "reference" / "bench.duckdb"
    _world(reference.parent, built_micro_world)
    subprocess.run(_bench(reference), check=True, env=env, capture_output=True)

    db = tmp_path / "killed" / "bench.duckdb"
    _world(db.parent, built_micro_world)
    images = db.parent / "images"
    checkpoints = db.parent / "checkpoints"
    # Kill during training, then while images are being written, then once scoring has started.
    stages = [lambda: checkpoints.exists() and any(checkpoints.iterdir()),
              lambda: images.exists() and sum(1 for _ in images.rglob("*.png")) >= 50,
              lambda: images.exists() and sum(1 for _ in images.rglob("*.png")) >= 1000]
    kills = 0
    for ready in stages:
        proc = subprocess.Popen(_bench(db), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        if kill_when(proc, ready):
            kills += 1
        else:
            break
    assert kills >= 2, "the run finished before it could be killed twice"
    done = subprocess.run(_bench(db), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

    got, want = store_rows(db), store_rows(reference)
    assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in want.items()}
    assert got["images"] == want["images"]  # same ids, same pixels (sha256)
    assert got["scores"] == want["scores"]
    assert [r[1:] for r in got["runs"]] == [r[1:] for r in want["runs"]]
    assert not list(db.parent.rglob("*.tmp")), "a temporary file survived the resumed run"


@pytest.mark.slow
def test_sigkill_at_ten_random_points_then_resume_matches_uninterrupted(tmp_path, built_micro_world):
    """Three methods; ten kills at seeded random moments (training, sampling, scoring, start-up alike)."""
    import random
    import time

    args = ["--model", "tiny-micro", "--methods", "dpo,npo,sdpo", "--seeds", "0-1", "--set", "sampler.steps=2",
            *[x for m in ("dpo", "npo", "sdpo") for x in ("--set", f"{m}.steps=6")]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def bench(db: Path) -> list[str]:
        return [sys.executable, "-m", "bench", "run", "--db", str(db), *args]

    reference = tmp_path / "reference" / "bench.duckdb"
    _world(reference.parent, built_micro_world)
    start = time.monotonic()
    subprocess.run(bench(reference), check=True, env=env, capture_output=True)
    whole = time.monotonic() - start

    db = tmp_path / "killed" / "bench.duckdb"
    _world(db.parent, built_micro_world)
    rng = random.Random(20261206)
    kills = 0
    while kills < 10:
        proc = subprocess.Popen(bench(db), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + rng.uniform(0.5, whole / 8)  # start-up included: ten kills fit in one run
        if not kill_when(proc, lambda: time.monotonic() >= deadline):
            break  # it finished: the remaining points fell after the end
        kills += 1
    assert kills == 10, f"only {kills} of 10 kills landed before the run finished"
    done = subprocess.run(bench(db), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

    got, want = store_rows(db), store_rows(reference)
    for table in want:
        assert got[table] == want[table], table  # the same rows: ids, image sha256s, scores, train logs
    assert not list(db.parent.rglob("*.tmp")), "a temporary file survived the resumed run"
