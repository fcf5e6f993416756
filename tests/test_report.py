"""The report rows (bench.report.rows) on a hand-built store whose win rates, means and p-values are known,
and the writer's formats and paths."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

from bench.report import runs, stats, writer
from bench.report import rows as report
from bench.store import Store

PROMPTS, SEEDS = range(10), (0, 1)
VERSIONS = '{"torch": "2.6.0", "diffusers": "0.35.1"}'


def _base_pick(p: int, s: int) -> float:
    return p + 0.1 * s


def _dpo_pick(p: int, s: int) -> float:
    # prompts 0-6 win both seeds, prompt 7 ties both, prompts 8-9 lose both:
    # win rate (14 + 2 × 0.5) / 20 = 0.75; per prompt 7 up, 1 tie, 2 down.
    return _base_pick(p, s) + (1.0 if p < 7 else 0.0 if p == 7 else -1.0)


def _fill(store: Store, run_id: str, method: str, scores: dict[str, object], sampler_key: str = "tiny/ddim/8/32",
          timed: bool = True):
    store.begin_run({"run_id": run_id, "method": method, "model": "tiny", "sampler_key": sampler_key,
                     "config_hash": f"cfg-{run_id}", "git_sha": "abc1234", "versions_json": VERSIONS})
    if timed:  # as the runner does: time is added only when work was done, not on a no-op re-run
        store.add_phase_time(run_id, "sample", 2.0)
    images = [{"image_id": f"{run_id}/{p}/{s}", "run_id": run_id, "suite": "parti", "prompt_id": f"p{p}",
               "prompt": f"prompt {p}", "seed": s, "path": f"img/{run_id}/{p}_{s}.png", "sha256": "",
               "width": 32, "height": 32} for p in PROMPTS for s in SEEDS]
    store.add_images(images)
    store.add_scores([(f"{run_id}/{p}/{s}", reward, "v1", float(fn(p, s)))
                      for reward, fn in scores.items() for p in PROMPTS for s in SEEDS])
    store.finish_run(run_id, "done")


def _fill_all(store: Store, timed: bool = True) -> None:
    store.add_prompts("parti", [{"prompt_id": f"p{p}", "prompt": f"prompt {p}", "category": None,
                                 "meta_json": None} for p in PROMPTS])
    _fill(store, "base-1", "base", {"pick": _base_pick, "hps": lambda p, s: 0.2}, timed=timed)
    _fill(store, "dpo-1", "dpo", {"pick": _dpo_pick, "hps": lambda p, s: 0.1}, timed=timed)
    if timed:
        store.add_phase_time("dpo-1", "train", 30.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("report") / "bench.duckdb")
    _fill_all(s)
    return s


@pytest.fixture(scope="module")
def rows(store: Store) -> list[dict]:
    return report.build(store)


def _row(rows: list[dict], method: str, reward: str) -> dict:
    (row,) = [r for r in rows if r["method"] == method and r["reward"] == reward]
    return row


def test_one_row_per_suite_reward_and_run_with_all_keys(rows):
    assert [(r["reward"], r["method"]) for r in rows] == [("hps", "base"), ("hps", "dpo"), ("pick", "base"),
                                                          ("pick", "dpo")]
    assert all(tuple(r) == report.ROW_KEYS for r in rows)


def test_win_rates_means_and_p_values_are_exact(rows):
    pick = _row(rows, "dpo", "pick")
    assert (pick["n"], pick["n_images"], pick["win_rate"]) == (20, 20, 0.75)
    assert pick["mean"] == pytest.approx(5.05) and pick["base_mean"] == pytest.approx(4.55)
    assert pick["p_value"] == pytest.approx(92 / 512)  # n = 9 untied prompts, 7 up: 2 (36 + 9 + 1) / 2^9
    assert pick["p_holm"] == pick["p_value"]  # one method per table: nothing to adjust
    assert pick["ci_low"] < 0.75 < pick["ci_high"] and 0.0 <= pick["ci_low"] and pick["ci_high"] <= 1.0
    hps = _row(rows, "dpo", "hps")
    assert (hps["win_rate"], hps["ci_low"], hps["ci_high"]) == (0.0, 0.0, 0.0)
    assert hps["p_value"] == pytest.approx(2 / 1024)
    assert (hps["mean"], hps["mean_ci_low"], hps["mean_ci_high"], hps["base_mean"]) == (0.1, 0.1, 0.1, 0.2)
    assert (hps["train_s"], hps["sample_s"], hps["score_s"]) == (30.0, 2.0, None)


def test_intervals_are_the_cluster_bootstrap_of_the_per_image_values(rows):
    # build() bootstraps per-prompt sums, all rows at once; the result is the bootstrap of each row's values.
    clusters = np.repeat(np.arange(len(PROMPTS)), len(SEEDS))
    pick = _row(rows, "dpo", "pick")
    values = np.array([_dpo_pick(p, s) for p in PROMPTS for s in SEEDS])
    assert (pick["mean_ci_low"], pick["mean_ci_high"]) == pytest.approx(stats.cluster_bootstrap_ci(values, clusters))
    base = np.array([_base_pick(p, s) for p in PROMPTS for s in SEEDS])
    wins = stats.paired_wins(values, base)
    assert (pick["ci_low"], pick["ci_high"]) == pytest.approx(stats.cluster_bootstrap_ci(wins, clusters))


def test_batched_intervals_equal_each_computed_alone():
    rng = np.random.default_rng(0)
    sums, sizes = rng.normal(size=(50, 3)), rng.integers(1, 4, size=(50, 3)).astype(float)
    bounds = [(-9.0, 9.0), (0.5, 0.5), (-9.0, 9.0)]
    together = stats.cluster_sums_cis(sums, sizes, bounds, n_boot=500, seed=7)
    alone = [stats.cluster_sums_ci(sums[:, j], sizes[:, j], bounds[j], n_boot=500, seed=7) for j in range(3)]
    assert np.allclose(together, alone, rtol=1e-12, atol=0) and together[1] == (0.5, 0.5)


def test_base_rows_carry_means_but_no_comparison(rows):
    base = _row(rows, "base", "pick")
    assert base["mean"] == pytest.approx(4.55) and base["n"] == 20
    assert all(base[k] is None for k in ("win_rate", "ci_low", "ci_high", "p_value", "p_holm", "base_mean"))


def test_report_matches_the_winrates_view(store, rows):
    view = store.query("SELECT * FROM winrates").to_dict("records")
    assert len(view) == 2
    for v in view:
        r = _row(rows, v["method"], v["reward"])
        assert (r["n"], r["win_rate"], r["run_id"], r["suite"]) == (v["n"], v["win_rate"], v["run_id"], v["suite"])


def test_build_is_seeded_and_rebuilding_after_rewrites_changes_nothing(store, rows):
    before = store.counts()
    _fill_all(store, timed=False)
    assert store.counts() == before
    assert report.build(store) == rows
    other_seed = _row(report.build(store, seed=1), "dpo", "pick")
    assert (other_seed["win_rate"], other_seed["mean"]) == (0.75, _row(rows, "dpo", "pick")["mean"])


def test_holm_adjusts_within_a_table(tmp_path: Path):
    s = Store(tmp_path / "bench.duckdb")
    _fill(s, "base-1", "base", {"pick": _base_pick})
    _fill(s, "dpo-1", "dpo", {"pick": _dpo_pick})
    _fill(s, "npo-1", "npo", {"pick": lambda p, s: _base_pick(p, s) - 1})  # 10 prompts down: p = 2/1024
    built = report.build(s)
    dpo, npo = _row(built, "dpo", "pick"), _row(built, "npo", "pick")
    assert npo["p_holm"] == pytest.approx(2 * 2 / 1024)
    assert dpo["p_holm"] == pytest.approx(max(92 / 512, 2 * 2 / 1024))
    only_dpo = report.build(s, methods=["dpo"])
    assert [r["method"] for r in only_dpo] == ["base", "dpo"]  # base stays as the reference


def test_unknown_filters_name_what_is_stored(store):
    with pytest.raises(ValueError, match="no suite 'drawbench' in the store; stored: parti"):
        report.build(store, suites=["drawbench"])
    with pytest.raises(ValueError, match="no method 'spdo'.*stored: base, dpo"):
        report.build(store, methods=["spdo"])
    assert len(report.build(store, suites=["parti"])) == 4


def test_a_run_without_a_matching_base_has_no_win_rate(tmp_path: Path):
    s = Store(tmp_path / "bench.duckdb")
    _fill(s, "base-1", "base", {"pick": _base_pick})
    _fill(s, "dpo-1", "dpo", {"pick": _dpo_pick}, sampler_key="tiny/ddim/50/32")
    dpo = _row(report.build(s), "dpo", "pick")
    assert (dpo["n"], dpo["win_rate"], dpo["p_value"], dpo["base_run_id"]) == (0, None, None, None)


def test_json_holds_rows_and_provenance(store, rows, tmp_path: Path):
    _, text = writer.write(store, "json", tmp_path / "r.json")
    data = json.loads(text)
    assert data["rows"] == rows
    assert data["provenance"]["git_shas"] == ["abc1234"]
    assert data["provenance"]["runs"]["dpo-1"]["versions"] == {"torch": "2.6.0", "diffusers": "0.35.1"}
    assert data["provenance"]["runs"]["dpo-1"]["config_hash"] == "cfg-dpo-1"
    assert set(data["provenance"]["runs"]) == {"base-1", "dpo-1"}
    assert set(runs.provenance(store, rows[:1])["runs"]) == {"base-1"}  # only the runs shown


def test_csv_holds_rows_only(store, tmp_path: Path):
    _, text = writer.write(store, "csv", tmp_path / "r.csv")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert tuple(parsed[0]) == report.ROW_KEYS and len(parsed) == 4
    assert float(parsed[3]["win_rate"]) == 0.75 and parsed[2]["win_rate"] == ""


def test_markdown_has_one_table_per_suite_and_reward_and_a_footer(store, tmp_path: Path):
    _, text = writer.write(store, "md", tmp_path / "r.md")
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("## ")] == [
        "## Ranking", "## Suite parti", "## Cost", "## Statistics", "## Provenance"]
    assert [line for line in lines if line.startswith("### ")] == ["### parti", "### hps (v1)", "### pick (v1)",
                                                               "### Compute-matched frontier", "### Image grids"]
    assert "| dpo | 20 | 5.05 [" in text and "| 75.0 [" in text and "| 0.18 (0.18) | 30 | 2 |" in text
    assert "| base | 20 | 4.55 [" in text and "torch 2.6.0" in text and "abc1234" in text


def test_write_refuses_unknown_formats_and_writes_nothing(store, tmp_path: Path):
    with pytest.raises(ValueError, match="unknown report format 'pdf'; available: md, html, json, csv"):
        writer.write(store, "pdf", tmp_path / "r.pdf")
    assert list(tmp_path.iterdir()) == []


def test_write_goes_to_out_or_the_reports_folder(store, tmp_path: Path):
    path, text = writer.write(store, "csv", None, tmp_path / "reports")
    assert path == tmp_path / "reports" / "report.csv" and path.read_text() == text
    path, text = writer.write(store, "json", tmp_path / "x" / "mine.json", tmp_path / "reports")
    assert path == tmp_path / "x" / "mine.json" and json.loads(path.read_text())["rows"]


@pytest.mark.slow
def test_a_million_scores_report_in_a_few_seconds(tmp_path: Path):
    s = Store(tmp_path / "bench.duckdb")
    rng = np.random.default_rng(0)
    n_prompts, n_seeds = 10_000, 10
    for method in ("base", "dpo", "npo", "sdpo", "tailorpo"):
        s.begin_run({"run_id": method, "method": method, "model": "tiny", "sampler_key": "k"})
        s.add_images([{"image_id": f"{method}/{p}/{k}", "run_id": method, "suite": "big", "prompt_id": f"p{p}",
                       "prompt": "", "seed": k, "path": f"{p}_{k}.png", "sha256": "", "width": 8, "height": 8}
                      for p in range(n_prompts) for k in range(n_seeds)])
        values = rng.normal(size=(2, n_prompts * n_seeds)).tolist()
        s.add_scores([(f"{method}/{p}/{k}", reward, "v1", values[j][p * n_seeds + k])
                      for j, reward in enumerate(("pick", "hps")) for p in range(n_prompts) for k in range(n_seeds)])
    assert s.counts()["scores"] == 1_000_000
    start = time.process_time()  # CPU time (all threads): other jobs on a shared machine do not inflate it
    built = report.build(s)
    assert time.process_time() - start < 8.0  # ~2.5 s on a 2-core VM
    assert len(built) == 10 and all(r["n"] == 100_000 for r in built)


def test_an_empty_store_reports_no_rows(tmp_path: Path):
    s = Store(tmp_path / "bench.duckdb")
    assert report.build(s) == []
    _, text = writer.write(s, "md", tmp_path / "e.md")
    assert "No scored images in the store" in text and "## Provenance" in text
    assert json.loads(writer.write(s, "json", tmp_path / "e.json")[1])["rows"] == []
