"""Issue 18, "nothing wrong is ever shown": bad input ends in one clear line with the documented exit code,
no traceback, and nothing written or lost.

Non-finite ``--set`` numbers, seed ranges past the limit, devices this machine lacks, a ``--db`` that is not
a DuckDB file: exit 2 before any work, no store created. ``bench report`` only reads (a read-only store, an
older store), never crashes on rows it did not expect (it names them) and treats suite and method names as
data (SQL parameters, file names from hashes, escaped text).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import tracemalloc
import typing
from pathlib import Path

import duckdb
import pytest
import torch
from typer.testing import CliRunner

from bench import plan as planning
from bench.cli import app
from bench.config import MAX_SEED, MAX_SEEDS, UsageError, build_config, parse_seeds
from bench.registry import METHODS
from bench.store import Store, StoreError
from test_report import _fill_all
from test_report_store import _png

runner = CliRunner()


def _flat(text: str) -> str:
    """Without whitespace: rich wraps long lines, and may fold a path mid-word."""
    return "".join(text.split())


def _refused(result, code: int, *needles: str) -> None:
    """The command exited ``code`` with a message naming every needle, never in a traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for needle in needles:
        assert _flat(needle) in _flat(result.output), (needle, result.output)


def _run(db: Path, *args: str):
    return runner.invoke(app, ["run", "--model", "tiny-micro", "--db", str(db), *args])


# -- 1. non-finite numbers in --set ---------------------------------------------------------------------------


@pytest.mark.parametrize("setting, value, needle", [
    ("base.guidance_scale", "nan", "expected a finite number"),
    ("dpo.beta", "inf", "expected a finite number"),
    ("dpo.beta", "-inf", "expected a finite number"),
    ("sdpo.mu", "NaN", "expected a finite number"),
    ("npo.lr", "1e999", "expected a finite number"),  # overflows to inf
    ("sampler.steps", "nan", "expected int"),
    ("dpo.seed", str(2**64), "out of range; integers go from -2**63 to 2**63 - 1"),
    ("sampler.steps", "-" + "9" * 30, "out of range"),
])
def test_non_finite_settings_are_refused_before_any_work(tmp_path: Path, setting: str, value: str, needle: str):
    db = tmp_path / "r" / "bench.duckdb"
    _refused(_run(db, "--set", f"{setting}={value}"), 2, f"--set {setting}={value!r}", needle)
    assert not db.parent.exists()


def _float_settings() -> list[tuple[str, type, str]]:
    out = []
    for mid in METHODS.available():
        cls = METHODS.get(mid).Config
        hints = typing.get_type_hints(cls)
        out += [(mid, cls, f.name) for f in dataclasses.fields(cls) if hints[f.name] is float]
    return out


@pytest.mark.parametrize("mid, cls, name", _float_settings(), ids=[f"{m}.{n}" for m, _, n in _float_settings()])
def test_every_float_setting_of_every_method_refuses_non_finite_values(mid: str, cls: type, name: str):
    for text in ("nan", "inf", "-Infinity", "1e400"):
        with pytest.raises(UsageError, match=re.escape(f"--set {mid}.{name}={text!r}: expected a finite number")):
            build_config(cls, {}, {name: text}, mid)
    default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    assert getattr(build_config(cls, {}, {name: repr(default)}, mid), name) == default  # finite ones pass


def test_resamples_outside_their_range_are_refused(tmp_path: Path):
    db = tmp_path / "r" / "bench.duckdb"
    Store(db)
    for n in ("10", "100001", str(10**18)):
        _refused(runner.invoke(app, ["report", "--db", str(db), "--resamples", n, "--out", str(tmp_path / "r.md")]),
                 2, "--resamples must be from 1,000 to 100,000")


# -- 2. seed ranges past the limit -----------------------------------------------------------------------------


@pytest.mark.parametrize("seeds, needle", [
    ("0-100000000", f"asks for 100,000,001 seeds; at most {MAX_SEEDS:,} per run"),
    (f"0-{MAX_SEEDS}", f"asks for {MAX_SEEDS + 1:,} seeds"),
    (f"0-{MAX_SEEDS - 1},{MAX_SEEDS}-{2 * MAX_SEEDS - 1}", f"asks for {2 * MAX_SEEDS:,} seeds"),  # each part fits
    (str(MAX_SEED + 1), f"seed {MAX_SEED + 1} is too large; seeds go up to {MAX_SEED}"),
    ("3-99999999999999999999", "seed 99999999999999999999 is too large"),
])
def test_seeds_past_the_limit_are_refused_before_any_work(tmp_path: Path, seeds: str, needle: str):
    db = tmp_path / "r" / "bench.duckdb"
    _refused(_run(db, "--seeds", seeds), 2, f"--seeds {seeds!r}", needle)
    assert not db.parent.exists()


def test_a_huge_seed_range_is_refused_before_it_is_expanded():
    tracemalloc.start()
    try:
        with pytest.raises(UsageError, match="at most"):
            parse_seeds("0-100000000")  # 10^8 ints would be gigabytes
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert parse_seeds(f"0-{MAX_SEEDS - 1}") == list(range(MAX_SEEDS))
    assert parse_seeds(f"{MAX_SEED}") == [MAX_SEED]


def test_run_help_states_the_seed_limits():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert f"{MAX_SEEDS:,}" in _flat(result.output) and str(MAX_SEED) in _flat(result.output)


# -- 3. devices this machine lacks -----------------------------------------------------------------------------


def _missing_devices() -> list[str]:
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = ["garbage", f"cuda:{n_gpus}", "cpu:1", "meta"] + (["cuda"] if n_gpus == 0 else [])
    return out + ([] if torch.backends.mps.is_available() else ["mps"])


@pytest.mark.parametrize("device", _missing_devices())
def test_devices_that_do_not_exist_are_refused_naming_those_that_do(tmp_path: Path, device: str):
    db = tmp_path / "r" / "bench.duckdb"
    _refused(_run(db, "--device", device), 2, f"--device {device!r}", "available here: cpu")
    assert not db.parent.exists()


def test_devices_that_exist_pass():
    for device in planning.available_devices():
        planning.check_device(device)
    planning.check_device("cpu:0")
    if torch.cuda.is_available():
        with pytest.raises(UsageError, match="needs a GPU per process"):
            planning.check_device("cuda", processes=torch.cuda.device_count() + 1)


# -- 4. a --db that is not a DuckDB database -------------------------------------------------------------------

NOT_DUCKDB = {"text": b"hello" * 1000, "sqlite": b"SQLite format 3\x00" + bytes(4080), "short": b"DU"}


@pytest.mark.parametrize("kind", list(NOT_DUCKDB))
@pytest.mark.parametrize("command", ["run", "report"])
def test_a_db_that_is_not_duckdb_exits_2_naming_it_and_stays_as_it_was(tmp_path: Path, command: str, kind: str):
    db = tmp_path / "data" / "bench.duckdb"
    db.parent.mkdir()
    db.write_bytes(NOT_DUCKDB[kind])
    args = ["run", "--model", "tiny-micro"] if command == "run" else ["report", "--out", str(tmp_path / "r.md")]
    _refused(runner.invoke(app, [*args, "--db", str(db)]), 2, str(db), "not a DuckDB database")
    assert db.read_bytes() == NOT_DUCKDB[kind]
    assert [p.name for p in db.parent.iterdir()] == ["bench.duckdb"] and not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_damaged_duckdb_file_exits_2_naming_it(tmp_path: Path, command: str):
    db = tmp_path / "bench.duckdb"
    damaged = bytes(8) + b"DUCK" + os.urandom(4096)  # DuckDB's magic bytes, then noise
    db.write_bytes(damaged)
    args = ["run", "--model", "tiny-micro"] if command == "run" else ["report", "--out", str(tmp_path / "r.md")]
    _refused(runner.invoke(app, [*args, "--db", str(db)]), 2, f"cannot open store {db}")
    assert db.read_bytes() == damaged


def test_report_refuses_an_empty_file_and_a_duckdb_database_that_is_not_a_store(tmp_path: Path):
    empty = tmp_path / "empty.duckdb"
    empty.touch()
    _refused(runner.invoke(app, ["report", "--db", str(empty)]), 2, str(empty), "is an empty file")
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE t AS SELECT 1 AS x")
    con.close()
    _refused(runner.invoke(app, ["report", "--db", str(other)]), 2, str(other), "not a results store",
             "no runs, images, scores table")
    assert empty.stat().st_size == 0


# -- 5. bench report on a read-only store ----------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    db = tmp_path / "results" / "bench.duckdb"
    _fill_all(Store(db))
    return db


def test_report_of_a_read_only_store_writes_nothing_to_it(small_db: Path, tmp_path: Path):
    # As root the modes do not stop a write, so what is checked is that the file and its folder are
    # byte for byte unchanged (opening read-write rewrites the views, which changes the file). As another
    # user, the modes alone would make a read-write open fail.
    folder = small_db.parent
    before = {p.name: _sha(p) for p in folder.iterdir() if p.is_file()}
    small_db.chmod(0o444)
    folder.chmod(0o555)
    try:
        for fmt in ("md", "json"):
            result = runner.invoke(app, ["report", "--db", str(small_db), "--format", fmt,
                                         "--out", str(tmp_path / "out" / f"r.{fmt}")])
            _refused(result, 0, "written to")
    finally:
        folder.chmod(0o755)
        small_db.chmod(0o644)
    assert {p.name: _sha(p) for p in folder.iterdir() if p.is_file()} == before


def test_report_opens_only_read_only_connections(small_db: Path, tmp_path: Path, monkeypatch):
    modes = []
    connect = duckdb.connect

    def spy(path, read_only=False, **kw):
        modes.append(read_only)
        return connect(path, read_only=read_only, **kw)

    monkeypatch.setattr("bench.store.duckdb.connect", spy)
    for fmt in ("md", "html", "json", "csv"):
        result = runner.invoke(app, ["report", "--db", str(small_db), "--format", fmt,
                                     "--out", str(tmp_path / f"r.{fmt}")])
        _refused(result, 0, "written to")
    assert modes and all(modes)


def test_report_reads_beside_another_reader_holding_the_file(small_db: Path, tmp_path: Path):
    # DuckDB lets many read-only connections share a file and none beside a writer: a report that opened
    # read-write would wait for this reader (30 s) and fail.
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, time
        con = duckdb.connect({str(small_db)!r}, read_only=True)
        print("held", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = runner.invoke(app, ["report", "--db", str(small_db), "--format", "json",
                                     "--out", str(tmp_path / "r.json")])
        _refused(result, 0, "written to")
        assert json.loads((tmp_path / "r.json").read_text())["rows"]
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_read_only_store_refuses_writes_and_creates_nothing(small_db: Path, tmp_path: Path):
    store = Store(small_db, read_only=True)
    with pytest.raises(StoreError, match="opened read-only"):
        store.begin_run({"run_id": "r9", "method": "base", "model": "tiny", "sampler_key": "k"})
    assert store.counts()["runs"] == 2
    with pytest.raises(StoreError, match="no results store"):
        Store(tmp_path / "new" / "bench.duckdb", read_only=True)
    assert not (tmp_path / "new").exists()


def test_a_store_written_by_an_older_version_reads_as_the_current_schema(small_db: Path, tmp_path: Path):
    # The first stores had no rewards or run_suites table, and views without higher_is_better.
    clean, _ = _json_report(small_db, tmp_path / "a.json")
    con = duckdb.connect(str(small_db))
    con.execute("DROP VIEW winrates; DROP VIEW pairs; DROP TABLE rewards; DROP TABLE run_suites")
    con.close()
    before = _sha(small_db)
    old, _ = _json_report(small_db, tmp_path / "b.json")
    assert old["rows"] == clean["rows"] and old["rows"]
    assert _sha(small_db) == before


# -- 6. rows the report did not expect -------------------------------------------------------------------------

NAN_SCORES = ("dpo-1/0/0", "dpo-1/0/1", "dpo-1/1/0")


def _poke(db: Path, *sql: str) -> None:
    con = duckdb.connect(str(db))
    for statement in sql:
        con.execute(statement)
    con.close()


def _json_report(db: Path, out: Path) -> tuple[dict, str]:
    result = runner.invoke(app, ["report", "--db", str(db), "--format", "json", "--out", str(out)])
    _refused(result, 0, "written to")
    return json.loads(out.read_text()), result.output


def test_non_finite_scores_are_left_out_and_named(small_db: Path, tmp_path: Path):
    ids = ", ".join(f"'{i}'" for i in NAN_SCORES)
    _poke(small_db, f"UPDATE scores SET value = 'nan'::DOUBLE WHERE reward = 'pick' AND image_id IN ({ids})",
          "UPDATE scores SET value = 'inf'::DOUBLE WHERE reward = 'hps' AND image_id = 'base-1/9/1'")
    doc, output = _json_report(small_db, tmp_path / "r.json")
    nan_warning = "3 non-finite scores (NaN or infinite) of reward pick (v1) in run dpo-1, suite parti, were left out"
    assert nan_warning in doc["warnings"]
    assert "1 non-finite score (NaN or infinite) of reward hps (v1) in run base-1, suite parti, was left out" \
        in doc["warnings"]
    assert _flat(f"warning: {nan_warning}") in _flat(output)
    (dpo_pick,) = [r for r in doc["rows"] if r["method"] == "dpo" and r["reward"] == "pick"]
    assert dpo_pick["n"] == dpo_pick["n_images"] == 20 - len(NAN_SCORES)
    (dpo_hps,) = [r for r in doc["rows"] if r["method"] == "dpo" and r["reward"] == "hps"]
    assert dpo_hps["n"] == 19  # base's infinite score leaves its pair out
    for fmt in ("md", "html", "csv"):
        result = runner.invoke(app, ["report", "--db", str(small_db), "--format", fmt,
                                     "--out", str(tmp_path / f"r.{fmt}")])
        _refused(result, 0, "written to", nan_warning)
    md = (tmp_path / "r.md").read_text()
    assert f"⚠ {nan_warning}" in md and not re.search(r"\bnan\b|\binf\b", md.replace("NaN or infinite", ""), re.IGNORECASE)
    assert "<div class=warnings>" in (tmp_path / "r.html").read_text()


def test_rows_of_unknown_runs_and_images_and_broken_json_are_left_out_and_named(small_db: Path, tmp_path: Path):
    clean, _ = _json_report(small_db, tmp_path / "clean.json")
    _poke(small_db,
          "INSERT INTO images (image_id, run_id, suite, prompt_id, prompt, seed, path, sha256, width, height) "
          "VALUES ('ghost/p0/0', 'ghost-1', 'parti', 'p0', 'prompt 0', 0, 'img/ghost.png', '', 32, 32)",
          "INSERT INTO scores (image_id, reward, reward_version, value) VALUES ('ghost/p0/0', 'pick', 'v1', 9.0), "
          "('nowhere', 'pick', 'v1', 1.0), ('nowhere-2', 'pick', 'v1', 2.0)",
          "UPDATE runs SET train_s = 'inf'::DOUBLE WHERE run_id = 'dpo-1'",
          "UPDATE runs SET versions_json = '{broken' WHERE run_id = 'base-1'",
          "UPDATE prompts SET meta_json = '[1, 2' WHERE prompt_id = 'p3'")
    doc, _ = _json_report(small_db, tmp_path / "r.json")
    assert doc["warnings"] == [
        "2 scores of reward pick (v1) of images that are not stored were left out",
        "1 image of suite parti of run ghost-1, which is not in the runs table, was left out",
        "run dpo-1 has a non-finite train_s; it shows as —",
        "run base-1 has a versions_json that is not a JSON object; its library versions are not shown",
        "1 prompt of suite parti has a meta_json that is not a JSON object; left out of the attribute tables",
    ]
    expected = [{**r, "train_s": None} if r["run_id"] == "dpo-1" else r for r in clean["rows"]]
    assert doc["rows"] == expected
    assert doc["provenance"]["runs"]["base-1"]["versions"] is None
    result = runner.invoke(app, ["report", "--db", str(small_db), "--out", str(tmp_path / "r.md")])
    _refused(result, 0, "written to", "run ghost-1, which is not in the runs table")


# -- 7. names are data: quotes, markup, paths ------------------------------------------------------------------

ODD_NAMES = ["it's", 'say "cheese"', "../../escape", "<b>bold</b> | *x* [/red]", "x'; DROP TABLE runs;--",
             "cats, dogs"]


def _odd_store(db: Path, suite: str, method: str) -> Store:
    """base and one method on three prompts of ``suite``, real PNGs, two rewards: the method wins on one, the
    other is 0 for every image (the tiny world's fidelity on a small suite)."""
    store = Store(db)
    store.add_prompts(suite, [{"prompt_id": f"p'{i}", "prompt": f"it's prompt {i}", "category": f"c'{i % 2}",
                               "meta_json": json.dumps({"shape": f"s'{i % 2}"})} for i in range(3)])
    for run_id, m in (("base-'1", "base"), (f"{method}-'1", method)):
        store.begin_run({"run_id": run_id, "method": m, "model": "ti'ny", "sampler_key": "k'1",
                         "config_hash": "c'" + run_id})
        rows = []
        for i in range(3):
            for s in (0, 1):
                png = _png(m, i, s)
                digest = hashlib.sha256(png).hexdigest()
                path = db.parent / "images" / f"{digest}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png)
                rows.append({"image_id": f"{run_id}/{i}/{s}", "run_id": run_id, "suite": suite, "prompt_id": f"p'{i}",
                             "prompt": f"it's prompt {i}", "seed": s, "path": str(path), "sha256": digest,
                             "width": 32, "height": 32})
        store.add_images(rows)
        store.add_scores([(f"{run_id}/{i}/{s}", reward, "v'1", value) for i in range(3) for s in (0, 1)
                          for reward, value in (("pi'ck", i + s + (m != "base")), ("fi'delity", 0.0))])
        store.finish_run(run_id, "done")
    return store


@pytest.mark.parametrize("suite", ODD_NAMES)
@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_suite_and_method_names_are_data_everywhere(tmp_path: Path, suite: str, fmt: str):
    method = "dpo'<i>x</i>"
    db = tmp_path / "results" / "bench.duckdb"
    _odd_store(db, suite, method)
    out = tmp_path / "out" / f"r.{fmt}"
    result = runner.invoke(app, ["report", "--db", str(db), "--format", fmt, "--out", str(out), "--suite", suite,
                                 "--methods", method])
    _refused(result, 0, "written to")
    assert Store(db).counts()["runs"] == 2  # "DROP TABLE runs" stayed text
    if fmt == "json":
        doc = json.loads(out.read_text())
        assert {(r["suite"], r["method"]) for r in doc["rows"]} == {(suite, "base"), (suite, method)}
        (row,) = [r for r in doc["rows"] if r["method"] == method and r["reward"] == "pi'ck"]
        assert row["win_rate"] == 1.0 and row["n"] == 6
        return
    files = out.parent / "r_files"
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, "r_files"])
    names = [p.name for p in files.iterdir()]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names), names
    assert any(n.startswith("winrate-") for n in names) and any(n.startswith("img-") for n in names)
    text = out.read_text()
    assert "<b>bold</b>" not in text and "<i>x</i>" not in text


def test_a_reward_with_one_value_draws_its_histogram_in_the_middle_bin(tmp_path: Path):
    # The cause of "a suite whose name has a quote ends in a traceback": that suite (it's.txt, three prompts)
    # had a reward scoring 0 on every image, and numpy 2 refused np.add.at(counts, middle, [n]).
    from bench.report import rows as report_rows
    from bench.report import summary

    store = _odd_store(tmp_path / "results" / "bench.duckdb", "plain", "dpo")
    hists = summary.histograms(store, report_rows.build(store))
    (flat,) = [h for h in hists if h["reward"] == "fi'delity"]
    assert flat["edges"][0] == -0.5 and flat["edges"][-1] == 0.5
    assert all(c == [0] * 15 + [6] + [0] * 14 for c in flat["counts"].values())


# -- 8. more of the same family --------------------------------------------------------------------------------


def test_a_suite_file_edited_since_it_was_run_is_refused_before_any_work(tmp_path: Path):
    # A .txt suite numbers its prompts by line: a line inserted at the top renames every later prompt.
    db = tmp_path / "results" / "bench.duckdb"
    store = Store(db)
    store.add_prompts("mine", [{"prompt_id": "00000", "prompt": "a red circle", "category": None, "meta_json": None}])
    suite = tmp_path / "mine.txt"
    suite.write_text("a blue square\na red circle\n")
    before = _sha(db)
    result = _run(db, "--suite", str(suite))
    _refused(result, 2, "suite 'mine' has changed since it was stored", "00000 was 'a red circle' and now reads "
             "'a blue square'")
    assert _sha(db) == before and store.counts()["runs"] == 0


@pytest.mark.parametrize("command, args, needle", [
    ("report", ["--suite", "[/x]"], "no suite '[/x]' in the store"),
    ("report", ["--methods", "[/bold] [red]"], "no method '[/bold] [red]' in the store"),
    ("run", ["--suite", "[/x].txt"], "suite file [/x].txt does not exist"),
    ("run", ["--methods", "[/x]"], "unknown method '[/x]'"),
])
def test_names_that_read_as_terminal_markup_are_printed_as_typed(small_db: Path, tmp_path: Path, command: str,
                                                                  args: list[str], needle: str):
    extra = ["--model", "tiny-micro"] if command == "run" else ["--out", str(tmp_path / "r.md")]
    _refused(runner.invoke(app, [command, "--db", str(small_db), *extra, *args]), 2, needle)


@pytest.mark.parametrize("where", ["directory", "under a file"])
def test_a_report_path_that_cannot_be_written_is_refused_before_any_work(small_db: Path, tmp_path: Path, where: str):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = tmp_path if where == "directory" else blocker / "r.md"
    needle = "is a directory" if where == "directory" else "is a file, not a directory"
    _refused(runner.invoke(app, ["report", "--db", str(small_db), "--out", str(out)]), 2, needle)
    assert blocker.read_text() == "x" and not (tmp_path / "r_files").exists()


def test_a_directory_as_db_is_refused_by_report(tmp_path: Path):
    _refused(runner.invoke(app, ["report", "--db", str(tmp_path)]), 2, f"store path {tmp_path} is a directory")
