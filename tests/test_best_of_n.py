"""best_of_n: N candidates per (prompt, seed), the verifier keeps the best; candidate 0 is base's own image."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import plan as planning
from bench.cli import app
from bench.config import UsageError
from bench.store import Store
from methods.best_of_n import BestOfN, BestOfNConfig, candidate_seed

runner = CliRunner()


def test_candidate_seeds_start_with_the_seed_and_are_fixed():
    method = BestOfN(BestOfNConfig(n=4))
    seeds = method.candidate_seeds(123)
    assert seeds[0] == 123 and len(set(seeds)) == 4
    assert seeds == [candidate_seed(123, k) for k in range(4)] == BestOfN(BestOfNConfig(n=4)).candidate_seeds(123)
    assert BestOfN(BestOfNConfig(n=2)).candidate_seeds(123) == seeds[:2]  # N = 2 draws a subset of N = 4's


def test_the_oracle_is_never_a_verifier_and_the_verifier_is_marked_trained_on(tmp_path: Path):
    with pytest.raises(ValueError, match="verifier 'oracle' is the truth"):
        BestOfN(BestOfNConfig(verifier="oracle"))
    plan = planning.make_plan("best_of_n", "tiny", "tiny-eval", "0", None, tmp_path / "b.duckdb", {}, "cpu")
    (run,) = [r for r in plan.runs if r.method == "best_of_n"]
    assert [(rid, rel) for rid, rel, _ in run.reward_relations] == [("tiny-pickscore", "trained-on")]
    assert run.sampler_key == next(r for r in plan.runs if r.method == "base").sampler_key
    bad = planning.make_plan("best_of_n", "tiny", "tiny-eval", "0", None, tmp_path / "b.duckdb",
                             {"best_of_n": {"verifier": "nope"}}, "cpu")
    with pytest.raises(UsageError, match="unknown verifier 'nope'"):
        planning.preflight(bad)


@pytest.mark.slow
def test_best_of_n_never_loses_to_base_on_its_verifier(tmp_path: Path):
    db = tmp_path / "results" / "bench.duckdb"
    args = ["run", "--model", "tiny-micro", "--methods", "best_of_n", "--seeds", "0", "--db", str(db),
            "--set", "sampler.steps=2", "--set", "best_of_n.n=3", "--rewards", "tiny-pickscore,oracle"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    store = Store(db)
    pairs = store.query("SELECT reward, count(*) AS n, avg(win) AS win_rate, min(win) AS worst, "
                        "avg((value = base_value)::INT) AS same FROM pairs GROUP BY reward ORDER BY reward")
    by_reward = {r.reward: r for r in pairs.itertuples(index=False)}
    # Candidate 0 is base's own image, so the kept one scores at least as well as base's under the verifier.
    verifier = by_reward["tiny-pickscore"]
    assert verifier.n == 200 and verifier.worst >= 0.5 and verifier.win_rate > 0.5
    assert 0 < verifier.same < 1  # base's image kept for some prompts, another candidate for others
    counts = store.counts()
    assert runner.invoke(app, args).exit_code == 0 and store.counts() == counts  # a rerun draws nothing new
