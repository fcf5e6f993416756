"""The CLI end to end on the test-size tiny world: exit codes, and a re-run that adds nothing."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.store import Store

runner = CliRunner()


@pytest.mark.parametrize("args, needle", [
    (["--methods", "spdo"], "unknown method 'spdo'"),
    (["--seeds", "3-1"], "malformed --seeds"),
    (["--rewards", "nope"], "unknown reward 'nope'"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--suite", "nope"], "unknown suite 'nope'"),
    (["--set", "dpo.beta=-1"], "beta must be > 0"),
    (["--set", "dpo.bogus=1"], "unknown setting dpo.bogus"),
])
def test_bad_input_exits_2_before_any_work(tmp_path, args, needle):
    db = tmp_path / "r" / "bench.duckdb"
    result = runner.invoke(app, ["run", "--model", "tiny-micro", "--db", str(db), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not db.exists()


def test_unwritable_db_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["run", "--model", "tiny-micro", "--db", str(blocker / "bench.duckdb")])
    assert result.exit_code == 2, result.output


@pytest.mark.slow
def test_second_identical_run_adds_no_rows(tmp_path):
    db = tmp_path / "results" / "bench.duckdb"
    args = ["run", "--model", "tiny-micro", "--methods", "dpo", "--seeds", "0", "--db", str(db),
            "--set", "dpo.steps=3", "--set", "sampler.steps=2"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    counts = Store(db).counts()
    assert counts["images"] == 2 * 200 and counts["scores"] == 3 * 2 * 200
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert Store(db).counts() == counts
    report = runner.invoke(app, ["report", "--db", str(db), "--format", "json", "--out", str(tmp_path / "r.json")])
    assert report.exit_code == 0, report.output
    assert '"win_rate"' in report.output


@pytest.mark.slow
def test_default_relative_db_stores_images_it_can_read_back(tmp_path, monkeypatch):
    # The README's `bench run` uses the default --db results/bench.duckdb, a path relative to the cwd.
    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "three.txt"
    suite.write_text("a red circle on a black background\na blue square on a white background\n"
                     "a small green ring on a gray background\n")
    result = runner.invoke(app, ["run", "--model", "tiny-micro", "--methods", "dpo", "--seeds", "0",
                                 "--suite", str(suite), "--rewards", "oracle",
                                 "--set", "dpo.steps=1", "--set", "sampler.steps=2"])
    assert result.exit_code == 0, result.output
    store = Store(tmp_path / "results" / "bench.duckdb")
    assert set(store.query("SELECT status FROM runs").status) == {"done"}
    paths = store.query("SELECT path FROM images").path
    assert len(paths) == 2 * 3 and all((tmp_path / "results" / p).is_file() for p in paths)
    assert store.counts()["scores"] == 2 * 3
