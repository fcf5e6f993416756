"""A 7th method and a lower-is-better reward are one file each, in a package of the user's own.

The test writes both into a temporary package on the path, names it in BENCH_METHOD_PACKAGES and
BENCH_REWARD_PACKAGES, and runs `bench list`, `bench run` and `bench report` with no other change:
the method trains on the pair kit from a Pick-a-Pic shard, the reward wins when it is lower.
"""

from __future__ import annotations

import json
import sys
import textwrap

import duckdb
import pytest
from run_inputs import run_inputs
from typer.testing import CliRunner

from bench.cli import app

METHOD = '''
"""Hinge preference loss on Diffusion-DPO's implicit reward (SLiC-style): a throwaway method for tests.

L = mean(max(0, 1 − z)), z = −β/2·Δ as in methods/dpo.py: pairs already separated by a margin stop pulling.
"""

import torch

from methods.core.diffusion import latent_shape
from methods.core.dpo_loss import DPOConfig
from methods.core.pairs import train_pairs
from methods.core.training import TrainedUNetMethod
from methods.core.types import PAIRS


def hinge_loss(model_err_w, model_err_l, ref_err_w, ref_err_l, beta_sf):
    z = -0.5 * beta_sf * ((model_err_w - ref_err_w) - (model_err_l - ref_err_l))  # (B,)
    return torch.relu(1.0 - z).mean(), (z > 0).float().mean()


class HingeDPO(TrainedUNetMethod):
    id = "hinge_dpo"
    paper = "(test plugin)"
    Config = DPOConfig

    def needs(self):
        return frozenset({PAIRS})

    def train(self, ctx):
        c, h, w = latent_shape(ctx.pipe)
        beta_sf = self.cfg.beta_sf(c * h * w)

        def loss_fn(e):
            loss, acc = hinge_loss(e.model_err_w, e.model_err_l, e.ref_err_w, e.ref_err_l, beta_sf)
            return loss, {"implicit_acc": float(acc)}

        train_pairs(ctx, self.cfg, loss_fn)


METHOD = HingeDPO
'''

REWARD = '''
"""Brightness, lower is better: a throwaway reward for tests."""

import numpy as np

from metrics.core.api import Reward


class Darkness(Reward):
    id = "darkness"
    base_version = "darkness-v1"
    higher_is_better = False
    description = "mean pixel value in [0, 1]; darker wins"

    def score(self, images, prompts):
        return np.array([np.asarray(im.convert("RGB"), dtype=np.float64).mean() / 255.0 for im in images])


REWARD = Darkness
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    root = tmp_path / "plugin_root"
    for package, name, text in (("my_methods", "hinge_dpo", METHOD), ("my_rewards", "darkness", REWARD)):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("BENCH_METHOD_PACKAGES", "my_methods")
    monkeypatch.setenv("BENCH_REWARD_PACKAGES", "my_rewards")
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in ("my_methods", "my_rewards")]:
        del sys.modules[name]


def test_a_method_and_a_lower_is_better_reward_each_one_file(plugins, tiny_sd_dir, tmp_path):
    runner = CliRunner()
    assert "hinge_dpo" in runner.invoke(app, ["list", "methods"]).output
    assert "darkness" in runner.invoke(app, ["list", "rewards"]).output

    prompts, data = run_inputs(tmp_path / "inputs")
    db = tmp_path / "results" / "bench.duckdb"
    sets = ["hinge_dpo.steps=2", "hinge_dpo.batch_pairs=2", "hinge_dpo.warmup_steps=0", "hinge_dpo.lr=1e-3",
            f"data.pickapic={data}", "sampler.steps=2", "sampler.batch=4"]
    run = runner.invoke(app, ["run", "--model", str(tiny_sd_dir), "--methods", "hinge_dpo", "--suite", str(prompts),
                              "--seeds", "0-1", "--rewards", "darkness,oracle", "--device", "cpu", "--db", str(db),
                              *[x for s in sets for x in ("--set", s)]])
    assert run.exit_code == 0, run.output

    with duckdb.connect(str(db), read_only=True) as con:
        assert dict(con.execute("SELECT method, status FROM runs").fetchall()) == {"base": "done", "hinge_dpo": "done"}
        assert con.execute("SELECT max(step) FROM train_log WHERE method = 'hinge_dpo'").fetchone()[0] == 2
        assert con.execute("SELECT * FROM rewards ORDER BY reward").fetchall() == [
            ("darkness", "darkness-v1", False), ("oracle", "oracle-v1", True)]
        # the win rate by hand: a pair is won when the method's image is darker than base's
        by_hand = con.execute("SELECT avg(CASE WHEN value < base_value THEN 1.0 WHEN value = base_value THEN 0.5 "
                              "ELSE 0.0 END), count(*) FROM pairs WHERE reward = 'darkness'").fetchone()
    assert by_hand[1] == 2 * 12

    out = tmp_path / "report.json"
    report = runner.invoke(app, ["report", "--db", str(db), "--format", "json", "--out", str(out)])
    assert report.exit_code == 0, report.output
    rows = {(r["method"], r["reward"]): r for r in json.loads(out.read_text())["rows"]}
    assert rows[("hinge_dpo", "darkness")]["win_rate"] == pytest.approx(by_hand[0])
    assert rows[("hinge_dpo", "oracle")]["n"] == 2 * 12
    md = runner.invoke(app, ["report", "--db", str(db), "--format", "md", "--out", str(tmp_path / "r.md")])
    assert md.exit_code == 0, md.output
    assert r"hinge\_dpo" in md.output and "darkness" in md.output  # Markdown escapes the underscore
