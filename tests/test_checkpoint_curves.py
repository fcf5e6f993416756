"""--eval-every: intermediate checkpoints kept in the artifact and sampled on a fixed subset of the suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import plan as planning
from bench.cli import app
from bench.store import Store

runner = CliRunner()


def test_checkpoint_runs_are_planned_on_a_fixed_subset(tmp_path: Path):
    plain = planning.make_plan("dpo,tailorpo", "tiny", "tiny-eval", "0-1", None, tmp_path / "b.duckdb", {}, "cpu")
    plan = planning.make_plan("dpo,tailorpo", "tiny", "tiny-eval", "0-1", None, tmp_path / "b.duckdb", {}, "cpu",
                              eval_every=50, eval_prompts=20)
    finals = {r.method: r for r in plan.runs if r.checkpoint_step is None}
    # The final runs keep their ids (same weights); their artifact also holds the snapshots.
    assert {r.run_id for r in finals.values()} == {r.run_id for r in plain.runs}
    assert finals["dpo"].artifact_hash != next(r for r in plain.runs if r.method == "dpo").artifact_hash
    steps = {}
    for r in plan.runs:
        if r.checkpoint_step is not None:
            steps.setdefault(r.method, []).append(r.checkpoint_step)
            assert r.final_run == finals[r.method].run_id and not r.trains and len(r.prompt_ids) == 20
            assert r.reward_relations == finals[r.method].reward_relations
    assert steps == {"dpo": list(range(50, finals["dpo"].cfg.steps, 50)),
                     "tailorpo": list(range(50, finals["tailorpo"].cfg.steps, 50))}
    subset = {r.prompt_ids for r in plan.runs if r.prompt_ids}
    assert len(subset) == 1  # one subset for every method: the curves compare like for like
    assert planning.eval_subset(plan.suite, 20) == next(iter(subset))


@pytest.mark.slow
def test_an_intermediate_checkpoint_is_the_model_of_that_step(tmp_path: Path):
    db = tmp_path / "results" / "bench.duckdb"
    common = ["--model", "tiny-micro", "--methods", "dpo", "--seeds", "0", "--db", str(db), "--set",
              "sampler.steps=2", "--rewards", "oracle", "--set", "dpo.warmup_steps=0"]
    curve = runner.invoke(app, ["run", *common, "--set", "dpo.steps=4", "--eval-every", "2", "--eval-prompts", "10"])
    assert curve.exit_code == 0, curve.output
    assert "1 intermediate checkpoints" in curve.output
    store = Store(db)
    (row,) = store.query("SELECT run_id, final_run_id, step FROM checkpoint_steps").itertuples(index=False)
    assert row.step == 2
    images = store.query("SELECT run_id, prompt_id, sha256 FROM images")
    mid = images[images.run_id == row.run_id]
    assert len(mid) == 10  # the subset, one seed
    # Training two steps gives the same model as the step-2 checkpoint of a four-step training.
    short = runner.invoke(app, ["run", *common, "--set", "dpo.steps=2"])
    assert short.exit_code == 0, short.output
    runs = store.query("SELECT run_id, config_json FROM runs WHERE method = 'dpo'")
    two = next(r for r, c in zip(runs.run_id, map(json.loads, runs.config_json))
               if c["method_config"]["steps"] == 2 and "checkpoint_step" not in c)
    drawn = dict(zip(images[images.run_id == row.run_id].prompt_id, mid.sha256))
    again = store.query("SELECT prompt_id, sha256 FROM images WHERE run_id = ?", [two])
    assert {p: h for p, h in zip(again.prompt_id, again.sha256) if p in drawn} == drawn
    final = images[images.run_id == row.final_run_id]
    assert len(final) == 200 and {p: h for p, h in zip(final.prompt_id, final.sha256) if p in drawn} != drawn
    counts = store.counts()
    assert runner.invoke(app, ["run", *common, "--set", "dpo.steps=4", "--eval-every", "2", "--eval-prompts",
                               "10"]).exit_code == 0
    assert store.counts() == counts  # resumed: nothing new
