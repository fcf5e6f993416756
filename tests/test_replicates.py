"""Training-seed replicates, matched base controls and reward relations: the plan, and a run on the test world."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import plan as planning
from bench.cli import app
from bench.config import UsageError
from bench.store import Store

runner = CliRunner()


def _plan(tmp_path: Path, methods: str | None = None, sets: dict | None = None, train_seeds: str | None = None,
          model: str = "tiny") -> planning.Plan:
    return planning.make_plan(methods, model, "tiny-eval", "0-1", None, tmp_path / "bench.duckdb", sets or {},
                              "cpu", train_seeds=train_seeds)


def test_one_replicate_by_default_keeps_todays_run_ids(tmp_path):
    default = _plan(tmp_path)
    seed0 = _plan(tmp_path, train_seeds="0")  # every method's default seed is 0
    assert [r.run_id for r in default.runs] == [r.run_id for r in seed0.runs]
    for r in default.runs:
        # The run id hashes what it did before replicates: method, config, model, sampler, parents.
        identity = {"method": r.method, "cfg": dataclasses.asdict(r.cfg), "model": r.model_revision,
                    "sampler": r.sampler.key_fields(), "parents": {}}
        assert r.run_id.endswith(planning.config_hash(identity)[:8])
        assert (r.train_seed is None) == (not r.cls.trains)
        assert r.arm == r.run_id if r.train_seed is None else r.arm != r.run_id


def test_replicates_share_an_arm_and_stack_on_the_same_seed(tmp_path):
    plan = _plan(tmp_path, "dpo,npo", {"npo": {"stack_on": "dpo"}}, train_seeds="0-2")
    by_method: dict[str, list] = {}
    for r in plan.runs:
        by_method.setdefault(r.method, []).append(r)
    assert len(by_method["base"]) == 1
    for method in ("dpo", "npo"):
        reps = by_method[method]
        assert [r.train_seed for r in reps] == [0, 1, 2]
        assert len({r.arm for r in reps}) == 1
        assert len({r.run_id for r in reps}) == len({r.artifact_hash for r in reps}) == 3
        assert len({r.sampler_key for r in reps}) == 1  # sampled like base: shared prompts, seeds and noise
    dpo_by_seed = {r.train_seed: r.run_id for r in by_method["dpo"]}
    for r in by_method["npo"]:
        assert r.parent_runs == (("dpo", dpo_by_seed[r.train_seed]),)


def test_train_seeds_and_a_seed_setting_conflict(tmp_path):
    with pytest.raises(UsageError, match="--train-seeds and --set dpo.seed"):
        _plan(tmp_path, "dpo", {"dpo": {"seed": "3"}}, train_seeds="0-1")
    with pytest.raises(UsageError, match="malformed --train-seeds"):
        _plan(tmp_path, "dpo", train_seeds="2-1")
    with pytest.raises(UsageError, match="at most 100"):
        _plan(tmp_path, "dpo", train_seeds="0-100")


def test_a_method_sampled_under_other_settings_gets_a_matched_base(tmp_path):
    plan = _plan(tmp_path, "sdpo,dpo", {"sdpo": {"guidance_scale": "8.5"}})
    bases = [r for r in plan.runs if r.method == "base"]
    assert sorted(b.cfg.guidance_scale for b in bases) == [5.0, 8.5]
    sdpo = next(r for r in plan.runs if r.method == "sdpo")
    dpo = next(r for r in plan.runs if r.method == "dpo")
    matched = {b.sampler_key: b for b in bases}
    assert matched[sdpo.sampler_key].cfg.guidance_scale == 8.5
    assert matched[dpo.sampler_key].cfg.guidance_scale == 5.0
    assert any("guidance 8.5, ddim, 20 steps" in n and "sdpo" in n for n in plan.notes)
    # Where settings already match (the tiny defaults), no base is added and sampler keys agree.
    default = _plan(tmp_path)
    assert [r.method for r in default.runs].count("base") == 1
    assert len({r.sampler_key for r in default.runs}) == 1


def test_reward_relations(tmp_path):
    plan = _plan(tmp_path, "dpo,tailorpo,self_npo,contrastive")
    rel = {r.method: {rid: relation for rid, relation, _ in r.reward_relations} for r in plan.runs}
    assert rel["base"] == {} and rel["self_npo"] == {}  # self_npo trains on images, no preference labels
    assert rel["dpo"] == {"tiny-pickscore": "same-data"}  # learned from the tiny-pickapic labels dpo trains on
    assert rel["tailorpo"] == {"tiny-pickscore": "trained-on"}  # its in-loop reward
    assert rel["contrastive"] == {"tiny-pickscore": "same-data"}  # its modules train on the pairs
    assert "oracle" not in {rid for r in rel.values() for rid in r}  # the gold is never trained on


@pytest.mark.slow
def test_replicated_run_on_the_test_world(tmp_path):
    db = tmp_path / "results" / "bench.duckdb"
    args = ["run", "--model", "tiny-micro", "--methods", "dpo", "--seeds", "0", "--train-seeds", "0-1",
            "--db", str(db), "--set", "dpo.steps=3", "--set", "sampler.steps=2",
            "--rewards", "oracle,tiny-pickscore,fidelity"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "dpo x2" in result.output
    store = Store(db)
    reps = store.query("SELECT r.run_id, p.arm, p.train_seed FROM runs r JOIN replicates p USING (run_id) "
                       "ORDER BY train_seed")
    assert list(reps["train_seed"]) == [0, 1] and reps["arm"].nunique() == 1
    # Both replicates are paired with the one base run, on the same prompts and seeds.
    pairs = store.query("SELECT run_id, base_run_id, count(*) AS n FROM pairs WHERE reward = 'oracle' GROUP BY ALL")
    assert len(pairs) == 2 and pairs["base_run_id"].nunique() == 1 and set(pairs["n"]) == {200}
    # Different training seeds train different weights: the images differ somewhere.
    images = store.query("SELECT i.run_id, i.prompt_id, i.sha256 FROM images i JOIN replicates USING (run_id)")
    by_prompt = images.pivot(index="prompt_id", columns="run_id", values="sha256")
    assert (by_prompt.iloc[:, 0] != by_prompt.iloc[:, 1]).any()
    relations = store.query("SELECT run_id, reward, relation FROM run_rewards")
    assert set(relations["reward"]) == {"tiny-pickscore"} and set(relations["relation"]) == {"same-data"}
    roles = dict(store.query("SELECT reward, role FROM reward_roles").itertuples(index=False))
    assert roles == {"oracle": "gold", "tiny-pickscore": "preference", "fidelity": "faithfulness"}
    # The fidelity classifier's features of every image, for the report's diversity.
    spaces = store.query("SELECT space, count(*) AS n, min(len(vector)) AS d FROM embeddings GROUP BY space")
    assert spaces.to_dict("records") == [{"space": "fidelity-features", "n": 3 * 200, "d": 64}]
    again = runner.invoke(app, args)  # a second run adds nothing
    assert again.exit_code == 0, again.output
    assert store.counts()["images"] == 3 * 200
