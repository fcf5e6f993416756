"""``bench report``: formats, filters, where files go, and bad input exiting 2 before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from test_report_store import build_store

runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli_report") / "results" / "bench.duckdb"
    build_store(path, methods=("base", "dpo", "npo"))
    return path


def test_markdown_goes_to_the_terminal_and_beside_its_folder_of_figures(db: Path, tmp_path: Path):
    out = tmp_path / "r" / "week1.md"
    result = runner.invoke(app, ["report", "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "## Ranking" in result.output and f"written to {out}" in result.output.replace("\n", "")
    assert out.read_text().startswith("# diffusion-pref-bench report")
    names = {p.name for p in (tmp_path / "r" / "week1_files").iterdir()}
    assert any(n.startswith("winrate-") for n in names) and any(n.startswith("img-") for n in names)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_json_and_csv_have_no_figures(db: Path, tmp_path: Path, fmt: str):
    out = tmp_path / f"r.{fmt}"
    result = runner.invoke(app, ["report", "--db", str(db), "--format", fmt, "--out", str(out),
                                 "--methods", "dpo", "--suite", "tiny-eval"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "r_files").exists()
    if fmt == "json":
        data = json.loads(out.read_text())
        assert {r["method"] for r in data["rows"]} == {"base", "dpo"}
        assert data["categories"] and data["ranking"] and data["costs"]
    else:
        assert out.read_text().splitlines()[0].startswith("suite,reward,reward_version,model,method")


@pytest.mark.parametrize("args, needle", [
    (["--format", "pdf"], "unknown format 'pdf'"),
    (["--format", "md,html"], "--format takes one of"),
    (["--suite", "parti"], "no suite 'parti' in the store; stored: tiny-eval"),
    (["--methods", "spdo"], "no method 'spdo' in the store; stored: base, dpo, npo"),
    (["--resamples", "10"], "--resamples must be from 1,000 to 100,000"),
])
def test_bad_input_exits_2_and_writes_nothing(db: Path, tmp_path: Path, args: list[str], needle: str):
    out = tmp_path / "r.md"
    result = runner.invoke(app, ["report", "--db", str(db), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split())
    assert not out.exists() and not (tmp_path / "r_files").exists()


def test_a_missing_store_exits_2(tmp_path: Path):
    result = runner.invoke(app, ["report", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2 and "no results store" in result.output
