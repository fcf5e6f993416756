"""Every file read back is checked against the sha256 written with it, before it is used: trained
checkpoints (a manifest), images (the store's sha256), cached encodings (a sidecar); `bench verify`
checks a whole results folder; two `bench run`s that need one training share it.

On the tiny random SD1.5-layout pipeline and a small Pick-a-Pic shard (tests/run_inputs.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kill_helpers import store_rows
from run_inputs import run_inputs
from typer.testing import CliRunner

from bench import cli, integrity, prefdata
from bench.cli import app
from bench.store import Store

SHORT = ("steps=2", "batch_pairs=2", "micro_batch_pairs=0", "warmup_steps=0")
WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"  # dpo's full fine-tune


def _args(model: Path, inputs: tuple[Path, Path], db: Path) -> list[str]:
    prompts, data = inputs
    sets = [f"dpo.{f}" for f in SHORT] + [f"data.pickapic={data}", "sampler.steps=2", "sampler.batch=4"]
    return ["--model", str(model), "--methods", "dpo", "--suite", str(prompts), "--seeds", "0", "--rewards", "oracle",
            "--device", "cpu", "--db", str(db), *[x for s in sets for x in ("--set", s)]]


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _text(result) -> str:
    return " ".join(result.output.split())


def _flip(path: Path) -> None:
    """Change bytes in the middle of a file, keeping its size."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Messages on one line: a long path is never folded by rich."""
    monkeypatch.setattr(cli.console, "_width", 2000)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    return run_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def trained(tiny_sd_dir, inputs, tmp_path_factory) -> Path:
    """A finished results folder: dpo trained, base and dpo sampled and scored."""
    db = tmp_path_factory.mktemp("trained") / "results" / "bench.duckdb"
    result = _invoke("run", *_args(tiny_sd_dir, inputs, db))
    assert result.exit_code == 0, result.output
    return db


@pytest.fixture
def results(trained, tmp_path) -> Path:
    """A copy of the finished results folder to damage; returns its store."""
    shutil.copytree(trained.parent, tmp_path / "results")
    return tmp_path / "results" / "bench.duckdb"


def _checkpoint(db: Path) -> Path:
    (folder,) = [d for d in (db.parent / "checkpoints").iterdir() if d.is_dir()]
    return folder


def test_a_damaged_checkpoint_is_named_deleted_and_trained_again_before_it_is_used(tiny_sd_dir, inputs, results):
    weights = _checkpoint(results) / WEIGHTS
    original = integrity.sha256_file(weights)
    want = store_rows(results)
    _flip(weights)
    # dpo's images must be drawn again: with the damaged weights they would be other pixels, other files
    dpo = Store(results).query("SELECT path FROM images JOIN runs USING (run_id) WHERE method = 'dpo'").path
    for path in dpo:
        (results.parent / path).unlink()

    result = _invoke("run", *_args(tiny_sd_dir, inputs, results))
    assert result.exit_code == 0, result.output
    assert f"{weights}: sha256 differs from the one its manifest lists" in _text(result)
    assert "deleting it and training it again" in _text(result)
    assert integrity.sha256_file(weights) == original  # trained again, to the same bytes
    assert store_rows(results) == want
    assert Store(results).damaged_images().empty  # every image file is the one its row names: same pixels
    assert not list(results.parent.rglob("*.tmp"))

    # A checkpoint without a manifest (an older version wrote it) is not trusted either.
    (_checkpoint(results) / integrity.MANIFEST).unlink()
    result = _invoke("run", *_args(tiny_sd_dir, inputs, results))
    assert result.exit_code == 0, result.output
    assert "no manifest of sha256s (written by an older version), so it cannot be verified" in _text(result)
    assert integrity.manifest_problems(_checkpoint(results)) == []
    assert integrity.sha256_file(weights) == original and store_rows(results) == want


def test_a_damaged_checkpoint_that_cannot_be_trained_again_fails_its_run_naming_the_file(
        tiny_sd_dir, inputs, results, monkeypatch):
    from bench.registry import METHODS

    weights = _checkpoint(results) / WEIGHTS
    _flip(weights)

    def boom(self, ctx):
        raise RuntimeError("no data today")

    monkeypatch.setattr(METHODS.get("dpo"), "train", boom)
    result = _invoke("run", *_args(tiny_sd_dir, inputs, results))
    assert result.exit_code == 1, result.output
    status, error = Store(results).query("SELECT status, error FROM runs WHERE method = 'dpo'").iloc[0]
    assert status == "failed"
    assert f"{weights}: sha256 differs from the one its manifest lists" in error
    assert "training it again failed: RuntimeError: no data today" in error
    assert not list(results.parent.rglob("*.tmp"))
    assert not weights.exists()  # never used: deleted


def test_a_truncated_image_is_named_by_the_report_and_drawn_again_by_a_rerun(tiny_sd_dir, inputs, results, tmp_path):
    from bench.report import data, grids

    store = Store(results)
    base, suite = store.query("SELECT run_id, suite FROM images JOIN runs USING (run_id) WHERE method = 'base' "
                              "LIMIT 1").iloc[0]
    shown = data.fixed_prompts(store, base, suite, grids.GRID_FIXED).iloc[0]
    path, sha = store.query("SELECT path, sha256 FROM images WHERE run_id = ? AND prompt_id = ? AND seed = ?",
                            [base, shown.prompt_id, int(shown.seed)]).iloc[0]
    image = results.parent / path
    want = store_rows(results)
    image.write_bytes(image.read_bytes()[:50])  # truncated

    report = _invoke("report", "--db", str(results), "--out", str(tmp_path / "report" / "report.md"))
    assert report.exit_code == 0, report.output
    text = _text(report)
    assert "grid image file(s) are damaged" in text and f"{sha}.png" in text

    result = _invoke("run", *_args(tiny_sd_dir, inputs, results))
    assert result.exit_code == 0, result.output
    assert "1 stored image file(s) gone or damaged" in _text(result)
    assert integrity.sha256_file(image) == sha  # the same pixels, in the same file
    assert store_rows(results) == want
    again = _invoke("report", "--db", str(results), "--out", str(tmp_path / "again" / "report.md"))
    assert again.exit_code == 0 and "damaged" not in _text(again)


def test_a_damaged_cache_entry_is_computed_again(tiny_sd, inputs, tmp_path, monkeypatch, caplog):
    pairs = prefdata.read_pickapic(inputs[1])
    cache = tmp_path / "cache"
    first = prefdata.encode_pairs(tiny_sd, pairs, "cpu", 16, cache)
    (entry,) = cache.glob("*.safetensors")
    original = entry.read_bytes()
    assert integrity.sidecar_problem(entry) is None

    calls = []
    encode = tiny_sd.vae.encode
    monkeypatch.setattr(tiny_sd.vae, "encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    prefdata.encode_pairs(tiny_sd, pairs, "cpu", 16, cache)
    assert calls == []  # intact: read back

    _flip(entry)
    with caplog.at_level(logging.WARNING):
        again = prefdata.encode_pairs(tiny_sd, pairs, "cpu", 16, cache)
    assert calls and f"cache entry {entry}: sha256 differs" in caplog.text
    assert entry.read_bytes() == original and integrity.sidecar_problem(entry) is None
    assert (again.latents_w == first.latents_w).all() and (again.cond.embeds == first.cond.embeds).all()

    calls.clear()
    caplog.clear()
    integrity.sidecar(entry).unlink()  # as an older version left it: unverifiable
    with caplog.at_level(logging.WARNING):
        prefdata.encode_pairs(tiny_sd, pairs, "cpu", 16, cache)
    assert calls and "no sha256 recorded beside it" in caplog.text
    assert integrity.sidecar_problem(entry) is None and not list(cache.glob("*.tmp"))


def test_bench_verify_names_each_damaged_file_and_exits_1_or_0(results):
    clean = _invoke("verify", "--db", str(results))
    assert clean.exit_code == 0, clean.output
    assert "nothing damaged" in clean.output and "damaged:" not in clean.output
    assert "checked 24 images, 1 checkpoint, 1 cache entry, 1 tiny world" in clean.output  # the shipped one

    root = results.parent
    image = root / Store(results).query("SELECT path FROM images ORDER BY image_id LIMIT 1").path[0]
    image.write_bytes(image.read_bytes()[:-10])
    weights = _checkpoint(results) / WEIGHTS
    _flip(weights)
    (entry,) = (root / "cache").glob("*.safetensors")
    _flip(entry)
    world = root / "models" / "tiny-unfinished"
    world.mkdir(parents=True)
    damaged = _invoke("verify", "--db", str(results))
    assert damaged.exit_code == 1, damaged.output
    lines = [line for line in damaged.output.splitlines() if line.startswith("damaged: ")]
    assert len(lines) == 4, damaged.output
    assert any(line.startswith(f"damaged: {image}: sha256 differs") for line in lines)
    assert any(line.startswith(f"damaged: {weights}: sha256 differs from the one its manifest lists")
               for line in lines)
    assert any(line.startswith(f"damaged: {entry}: sha256 differs") for line in lines)
    assert any(line.startswith(f"damaged: {world}: ") for line in lines)
    assert damaged.output.strip().endswith("4 damaged")

    missing = _invoke("verify", "--db", str(root / "nowhere.duckdb"))
    assert missing.exit_code == 2 and "no results store" in _text(missing)


def test_two_runs_that_need_the_same_training_share_it(tiny_sd_dir, inputs, trained, tmp_path):
    """Both wait on the checkpoint's lock (held here until they do); then one trains, the other waits for
    it and uses it: both succeed, and the store holds exactly one run's rows."""
    db = tmp_path / "results" / "bench.duckdb"
    name = _checkpoint(trained).name  # the same options: the same artifact
    command = [sys.executable, "-m", "bench", "run", *_args(tiny_sd_dir, inputs, db)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "2000"}
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    with integrity.lock(db.parent / "checkpoints" / f"{name}.lock", lambda holder: None):
        procs = [subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT) for log in logs]
        end = time.monotonic() + 600
        while not all("dpo: waiting for process" in log.read_text() for log in logs):
            assert time.monotonic() < end and all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.2)
    codes = [p.wait(timeout=900) for p in procs]
    outputs = [" ".join(log.read_text().split()) for log in logs]
    assert codes == [0, 0], outputs
    assert sum("which another process trained meanwhile" in out for out in outputs) == 1, outputs
    assert store_rows(db) == store_rows(trained)  # one run's rows: no duplicates, no failed runs
    assert {status for *_, status in store_rows(db)["runs"]} == {"done"}
    assert not list(db.parent.rglob("*.tmp"))
    assert json.loads((db.parent / "checkpoints" / name / integrity.MANIFEST).read_text()) == json.loads(
        (_checkpoint(trained) / integrity.MANIFEST).read_text())


def test_temporaries_are_per_process_and_only_a_dead_writers_are_stale(tmp_path):
    target = tmp_path / "a.png"
    mine = integrity.tmp_path(target)
    assert mine.name.endswith(f"-{os.getpid()}.tmp") and mine.parent == tmp_path
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = mine.with_name(mine.name.replace(f"-{os.getpid()}.", f"-{dead.pid}."))
    foreign_old, foreign_new = tmp_path / "a.png.otherhost-1.tmp", tmp_path / "b.png.otherhost-1.tmp"
    for f in (mine, gone, foreign_old, foreign_new):
        f.write_bytes(b"x")
    os.utime(foreign_old, (time.time() - 2 * integrity.STALE_S,) * 2)
    integrity.remove_stale(tmp_path.glob("*.tmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, foreign_new.name])
    assert mine.read_bytes() == b"x"
