"""Issue 19 in the report: training replicates, reward marks, an honest ranking, matched controls.

Synthetic stores written through the Store API as the runner writes them: runs with a config_json
(guidance, sampler, steps), a sampler_key covering them, ``replicates``, ``run_rewards`` and
``reward_roles`` rows. Image files are not written (the grids show placeholders); scores are chosen
so that every win rate below can be counted by hand.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pytest

from bench.report import charts, summary, writer
from bench.report import rows as report_rows
from bench.report.document import assemble
from bench.store import Store

PROMPTS = range(24)
SEEDS = (0, 1)
SUITE = "tiny-eval"
Score = Callable[[int, int], float]


def _base(p: int, s: int) -> float:
    return 0.3 + 0.01 * p + 0.001 * s


def _config(method: str, guidance: float, train_seed: int | None) -> str:
    method_config = {"guidance_scale": guidance, **({"seed": train_seed} if train_seed is not None else {})}
    return json.dumps({"method": method, "method_config": method_config, "model": "tiny",
                       "sampler": {"name": "ddim", "steps": 20, "batch": 64}})


def _prompts(store: Store) -> None:
    store.add_prompts(SUITE, [{"prompt_id": f"p{p:02d}", "prompt": f"prompt {p}", "category": f"c{p % 2}",
                               "meta_json": None} for p in PROMPTS])


def _run(store: Store, run_id: str, method: str, scores: dict[str, Score], guidance: float = 7.5,
         replicate: tuple[str, int] | None = None, relations: dict[str, tuple[str, str]] | None = None) -> None:
    store.begin_run({"run_id": run_id, "method": method, "model": "tiny", "sampler_key": f"tiny/ddim/20/{guidance}",
                     "config_hash": f"cfg-{run_id}",
                     "config_json": _config(method, guidance, replicate[1] if replicate else None)})
    store.add_images([{"image_id": f"{run_id}/{p}/{s}", "run_id": run_id, "suite": SUITE, "prompt_id": f"p{p:02d}",
                       "prompt": f"prompt {p}", "seed": s, "path": f"img/{run_id}_{p}_{s}.png", "sha256": "",
                       "width": 8, "height": 8} for p in PROMPTS for s in SEEDS])
    store.add_scores([(f"{run_id}/{p}/{s}", reward, "v1", float(fn(p, s)))
                      for reward, fn in scores.items() for p in PROMPTS for s in SEEDS])
    if replicate:
        store.add_replicate(run_id, *replicate)
    if relations:
        store.set_run_rewards(run_id, relations)
    store.add_phase_time(run_id, "sample", 1.0)
    store.finish_run(run_id, "done")


def _shift(win: Callable[[int, int], bool], by: float = 0.1) -> Score:
    """Base's score moved up where ``win`` holds, down elsewhere."""
    return lambda p, s: _base(p, s) + (by if win(p, s) else -by)


def _row(rows: list[dict], method: str, reward: str = "oracle") -> dict:
    (row,) = [r for r in rows if r["method"] == method and r["reward"] == reward]
    return row


def _md_tables(text: str) -> list[tuple[str, list[list[str]]]]:
    """(the heading above it, its rows of cells) for every Markdown table, the header row first."""
    out, heading, table = [], "", None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if table is None:
                table = (heading, [])
                out.append(table)
            if not line.startswith("|--") and not line.startswith("|---"):
                table[1].append([c.strip() for c in line.strip().strip("|").split(" | ")])
        else:
            table = None
            if line.startswith("#"):
                heading = line
    return out


# -- (a) replicates: the two-level interval ---------------------------------------------------------------------


def _npo_win(r: int) -> Callable[[int, int], bool]:
    return lambda p, s: p < 6 * (r + 1)  # replicate r wins on the first 6, 12 or 18 of 24 prompts


@pytest.fixture(scope="module")
def replicated(tmp_path_factory) -> Store:
    """base; dpo: three identical replicates (added in train-seed order 2, 0, 1); npo: three that disagree
    (win rates 25%, 50%, 75%); sdpo: one run, no replicate row."""
    store = Store(tmp_path_factory.mktemp("replicates") / "bench.duckdb")
    _prompts(store)
    _run(store, "base-1", "base", {"oracle": _base})
    dpo = _shift(lambda p, s: p % 10 < 7)
    for seed in (2, 0, 1):
        _run(store, f"dpo-s{seed}", "dpo", {"oracle": dpo}, replicate=("dpo-arm", seed))
    for seed in (0, 1, 2):
        _run(store, f"npo-s{seed}", "npo", {"oracle": _shift(_npo_win(seed))}, replicate=("npo-arm", seed))
    _run(store, "sdpo-1", "sdpo", {"oracle": _shift(lambda p, s: p % 3 > 0)})
    return store


def test_an_arm_is_one_row_pooling_its_replicates_named_by_its_smallest_train_seed(replicated):
    built = report_rows.build_all(replicated)
    npo = _row(built.rows, "npo")
    assert (npo["run_id"], npo["arm"], npo["n_replicates"]) == ("npo-s0", "npo-arm", 3)
    assert npo["run_ids"] == ["npo-s0", "npo-s1", "npo-s2"]
    assert npo["replicate_win_rates"] == [0.25, 0.5, 0.75] and npo["replicate_sd"] == pytest.approx(0.25)
    assert (npo["win_rate"], npo["n"], npo["n_images"]) == (0.5, 3 * 48, 3 * 48)
    # pooled per prompt: 6 prompts win 3/3, 6 win 2/3, 6 win 1/3, 6 win 0/3: 12 up, 12 down
    assert npo["p_value"] == 1.0
    dpo = _row(built.rows, "dpo")
    assert dpo["run_ids"] == ["dpo-s0", "dpo-s1", "dpo-s2"] and dpo["run_id"] == "dpo-s0"
    assert [r["method"] for r in built.rows] == ["base", "dpo", "npo", "sdpo"]
    assert sorted(r["run_id"] for r in built.replicate_rows) == sorted(
        ["base-1", "sdpo-1"] + [f"{m}-s{k}" for m in ("dpo", "npo") for k in range(3)])
    per_run = {r["run_id"]: r for r in built.replicate_rows}
    assert [per_run[f"npo-s{k}"]["win_rate"] for k in range(3)] == [0.25, 0.5, 0.75]
    assert per_run["npo-s2"]["train_seed"] == 2 and per_run["npo-s2"]["arm"] == "npo-arm"


def test_the_two_level_interval_equals_the_prompt_only_one_when_replicates_agree(replicated):
    rows = report_rows.build(replicated)
    dpo = _row(rows, "dpo")
    assert dpo["win_rate"] == 0.75  # p % 10 < 7: 18 of the 24 prompts
    assert (dpo["ci_low"], dpo["ci_high"]) == pytest.approx((dpo["prompt_ci_low"], dpo["prompt_ci_high"]), rel=1e-12)
    alone = next(r for r in report_rows.build_all(replicated).replicate_rows if r["run_id"] == "dpo-s0")
    assert (dpo["ci_low"], dpo["ci_high"]) == pytest.approx((alone["ci_low"], alone["ci_high"]), rel=1e-12)
    assert dpo["replicate_sd"] == 0.0 and dpo["ci_low"] > 0.5


def test_the_two_level_interval_widens_when_replicates_disagree(replicated):
    npo = _row(report_rows.build(replicated), "npo")
    assert npo["ci_low"] < npo["prompt_ci_low"] < 0.5 < npo["prompt_ci_high"] < npo["ci_high"]
    assert npo["ci_high"] - npo["ci_low"] > 1.3 * (npo["prompt_ci_high"] - npo["prompt_ci_low"])


def test_a_lone_run_keeps_the_numbers_of_a_run(replicated):
    built = report_rows.build_all(replicated)
    sdpo = _row(built.rows, "sdpo")
    alone = _row(built.replicate_rows, "sdpo")
    assert all(sdpo[k] == alone[k] for k in report_rows.BASE_KEYS if k != "p_holm")
    assert (sdpo["arm"], sdpo["n_replicates"], sdpo["run_ids"], sdpo["replicate_sd"]) == ("sdpo-1", 1, ["sdpo-1"],
                                                                                           None)
    assert (sdpo["prompt_ci_low"], sdpo["prompt_ci_high"]) == (sdpo["ci_low"], sdpo["ci_high"])
    assert sdpo["replicate_win_rates"] == [sdpo["win_rate"]]


def test_a_rows_numbers_do_not_depend_on_the_other_rows(replicated):
    everything = _row(report_rows.build(replicated), "npo")
    alone = _row(report_rows.build(replicated, methods=["npo"]), "npo")
    assert everything == alone


def test_reports_show_each_replicate_and_say_what_the_intervals_cover(replicated, tmp_path: Path):
    _, md = writer.write(replicated, "md", tmp_path / "r.md")
    assert "### Training replicates" in md
    (table,) = [rows for heading, rows in _md_tables(md) if heading == "#### oracle (v1)"]
    assert table[0][:4] == ["method", "train seed 0 win %", "train seed 1 win %", "train seed 2 win %"]
    assert [r[0] for r in table[1:]] == ["dpo", "npo"]  # sdpo has one run: nothing to spread
    assert table[2][1:5] == ["25.0", "50.0", "75.0", "25.0"]
    assert "training seeds and prompts" in md and "does not cover another training run" in md
    data = json.loads(writer.write(replicated, "json", tmp_path / "r.json")[1])
    assert len(data["rows"]) == 4 and len(data["replicate_rows"]) == 8
    assert data["rows"] == report_rows.build(replicated)
    costs = [c["run_id"] for c in data["costs"]]
    assert costs[:4] == ["base-1", "dpo-s0", "dpo-s1", "dpo-s2"]  # every replicate costs, by train seed
    _, html = writer.write(replicated, "html", tmp_path / "r.html")
    assert "<h3>Training replicates</h3>" in html and "dpo · train seed 2" in html  # the cost table
    csv = writer.write(replicated, "csv", tmp_path / "r.csv")[1]
    assert "npo-s0;npo-s1;npo-s2" in csv and "0.25;0.5;0.75" in csv


# -- (b) matched controls -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_bases(tmp_path_factory) -> Store:
    """base at guidance 7.5 and at 8.5; dpo samples at 7.5, sdpo at 8.5. sdpo beats base at 8.5 on every
    pair and would lose every pair against base at 7.5, so its win rate says which base it is paired with."""
    store = Store(tmp_path_factory.mktemp("bases") / "bench.duckdb")
    _prompts(store)
    _run(store, "base-75", "base", {"oracle": _base})
    _run(store, "base-85", "base", {"oracle": lambda p, s: _base(p, s) - 0.2}, guidance=8.5)
    _run(store, "dpo-1", "dpo", {"oracle": _shift(lambda p, s: True)})
    _run(store, "sdpo-1", "sdpo", {"oracle": lambda p, s: _base(p, s) - 0.1}, guidance=8.5)
    return store


def test_a_run_at_another_guidance_is_paired_with_the_base_at_that_guidance(two_bases, tmp_path: Path):
    rows = report_rows.build(two_bases)
    sdpo, dpo = _row(rows, "sdpo"), _row(rows, "dpo")
    assert (sdpo["base_run_id"], sdpo["base_settings"], sdpo["win_rate"]) == (
        "base-85", "guidance 8.5, ddim, 20 steps", 1.0)
    assert (dpo["base_run_id"], dpo["base_settings"]) == ("base-75", "guidance 7.5, ddim, 20 steps")
    data = json.loads(writer.write(two_bases, "json", tmp_path / "r.json")[1])
    assert _row(data["rows"], "sdpo")["base_settings"] == "guidance 8.5, ddim, 20 steps"
    _, md = writer.write(two_bases, "md", tmp_path / "r.md")
    (table,) = [rows for heading, rows in _md_tables(md) if heading == "### oracle (v1)"]
    assert table[0][:2] == ["method", "paired base"]
    by_label = {r[0]: r for r in table[1:]}
    assert by_label["sdpo"][1] == "base (guidance 8.5, ddim, 20 steps)"
    assert by_label["dpo"][1] == "base (guidance 7.5, ddim, 20 steps)"
    assert "base (guidance 8.5, ddim, 20 steps) at guidance 8.5, ddim, 20 steps for sdpo" in md


def test_one_base_adds_no_column(replicated, tmp_path: Path):
    _, md = writer.write(replicated, "md", tmp_path / "r.md")
    (table,) = [rows for heading, rows in _md_tables(md) if heading == "### oracle (v1)"]
    assert "paired base" not in table[0]
    assert "Matched controls: each method is paired with the base run" in md and "guidance 7.5, ddim, 20 steps" in md


# -- (c) reward marks and (d) the ranking -------------------------------------------------------------------------


def _oracle_good(p: int, s: int) -> bool:
    return s == 0 or p % 3 == 0  # 2/3 of the pairs up: every seed 0, seed 1 on a third of the prompts


@pytest.fixture(scope="module")
def marked(tmp_path_factory) -> Store:
    """The tiny world's roles: oracle (gold), tiny-pickscore (preference, learned from tiny-pickapic), fidelity
    (faithfulness). good: wins the oracle on 2/3 of the pairs, ties base on fidelity everywhere and loses
    tiny-pickscore everywhere. dpo: same-data on tiny-pickscore. tailorpo (two replicates): trained on
    tiny-pickscore, wins it everywhere, loses the oracle and fidelity everywhere."""
    store = Store(tmp_path_factory.mktemp("marked") / "bench.duckdb")
    _prompts(store)
    store.set_reward_role("oracle", "gold")
    store.set_reward_role("tiny-pickscore", "preference", "tiny-pickapic")
    store.set_reward_role("fidelity", "faithfulness")
    lose, win = _shift(lambda p, s: False), _shift(lambda p, s: True)
    _run(store, "base-1", "base", {"oracle": _base, "tiny-pickscore": _base, "fidelity": _base})
    _run(store, "good-1", "good", {"oracle": _shift(_oracle_good), "tiny-pickscore": lose, "fidelity": _base})
    _run(store, "dpo-1", "dpo", {"oracle": _shift(lambda p, s: p % 2 == 0), "tiny-pickscore": win, "fidelity": _base},
         relations={"tiny-pickscore": ("same-data", "learned from tiny-pickapic, whose labels dpo trained on")})
    for seed in (0, 1):
        _run(store, f"tailorpo-s{seed}", "tailorpo", {"oracle": lose, "tiny-pickscore": win, "fidelity": lose},
             replicate=("tailorpo-arm", seed), relations={"tiny-pickscore": ("trained-on", "its in-loop reward")})
    return store


def test_rows_carry_the_reward_role_and_relation(marked):
    rows = report_rows.build(marked)
    assert {(r["method"], r["reward"]): r["reward_relation"] for r in rows if r["reward_relation"]} == {
        ("dpo", "tiny-pickscore"): "same-data", ("tailorpo", "tiny-pickscore"): "trained-on"}
    assert {r["reward"]: r["reward_role"] for r in rows} == {"oracle": "gold", "tiny-pickscore": "preference",
                                                             "fidelity": "faithfulness"}


def _check_marks(tables: list[tuple[str, list[list[str]]]]) -> int:
    """Every cell naming tailorpo or dpo under a tiny-pickscore heading is marked, no other is; returns how many
    tables name tailorpo."""
    seen = 0
    for heading, rows in tables:
        on_pick = "tiny-pickscore" in heading
        cells = [c for row in rows for c in row if c.startswith(("tailorpo", "dpo"))]
        seen += any(c.startswith("tailorpo") for c in cells)
        for c in cells:
            want = ("†" if c.startswith("tailorpo") else "‡") if on_pick else None
            assert (want in c) if want else ("†" not in c and "‡" not in c), (heading, c)
    return seen


def test_a_run_is_marked_in_every_table_on_a_reward_it_is_not_held_out_from(marked, tmp_path: Path):
    _, md = writer.write(marked, "md", tmp_path / "r.md")
    tables = _md_tables(md)
    grids = [rows for heading, rows in tables if heading == "### Image grids"]
    named = _check_marks([(h, rows) for h, rows in tables if h != "### Image grids"])
    # results (3 rewards), ranking, replicates (3), categories (3 rewards × category)
    assert named >= 10
    pick_tables = [h for h, rows in tables if "tiny-pickscore" in h and any(c.startswith("tailorpo")
                                                                            for row in rows for c in row)]
    assert len(pick_tables) == 3  # its results, replicate and category tables
    assert grids
    for rows in grids:  # score cells: tailorpo's column marks tiny-pickscore, base's does not
        header, scores = rows[0], rows[-1]
        cell = dict(zip(header, scores))
        assert "tiny-pickscore † " in cell["tailorpo"] and "tiny-pickscore ‡ " in cell["dpo"]
        assert "†" not in cell["base"] and "‡" not in cell["base"] and "†" not in cell["good"]
    assert "† = trained on this reward" in md and "‡ = this reward was learned from the preference data" in md
    assert "† tailorpo on tiny-pickscore (its in-loop reward)" in md
    assert "### tiny-pickscore (v1) · preference" in md and "### oracle (v1) · gold" in md
    _, html = writer.write(marked, "html", tmp_path / "r.html")
    assert "<td>tailorpo †</td>" in html and "<td>dpo ‡</td>" in html and "tiny-pickscore †: " in html
    assert "largest win: dpo ‡ on tiny-pickscore" in md and "largest loss: tailorpo on fidelity" in md
    doc = assemble(marked)
    panels = charts._winrate_panels(doc.rows, doc.labels, {r["run_id"]: i for i, r in enumerate(doc.rows)})
    labels = {p["title"]: p["labels"] for p in panels}
    assert "tailorpo †" in labels["tiny-pickscore (v1)"] and "tailorpo" in labels["oracle (v1)"]
    data = json.loads(writer.write(marked, "json", tmp_path / "r.json")[1])
    assert {(r["run_id"], r["relation"]) for r in data["reward_relations"]} == {
        ("dpo-1", "same-data"), ("tailorpo-s0", "trained-on"), ("tailorpo-s1", "trained-on")}


def test_the_ranking_follows_the_gold_reward_with_fidelity_as_a_constraint(marked, tmp_path: Path):
    rows = report_rows.build(marked)
    (block,) = summary.ranking(rows)
    assert (block["basis"], block["ranked_on"], block["constraints"]) == ("gold", ["oracle (v1)"], ["fidelity (v1)"])
    assert [e["method"] for e in block["entries"]] == ["good", "base", "dpo", "tailorpo"]
    good = block["entries"][0]
    assert good["score"] == pytest.approx(2 / 3) and good["score_ci_low"] > 0.5 and good["group"] == 1
    assert good["constraints"]["fidelity (v1)"] == {"gain": 0.0, "ci_low": 0.0, "ci_high": 0.0, "below_base": False}
    tailorpo = block["entries"][3]
    assert tailorpo["constraints"]["fidelity (v1)"]["gain"] == pytest.approx(-0.1)
    assert tailorpo["constraints"]["fidelity (v1)"]["below_base"] is True
    _, md = writer.write(marked, "md", tmp_path / "r.md")
    (table,) = [rows for heading, rows in _md_tables(md) if heading == f"### {SUITE}"]
    assert table[0] == ["rank", "method", "oracle win % vs base [95% CI]", "Δ fidelity vs base [95% CI]"]
    assert table[1][:2] == ["1", "good"] and table[1][2].startswith("66.7 [") and table[1][3] == "0 [0, 0]"
    assert table[2][:3] == ["2", "base", "50 (base)"]
    assert table[4][1] == "tailorpo" and table[4][3].startswith("-0.1 [") and "⚠" in table[4][3]
    assert "Ranked on the win rate against base on oracle, the gold reward" in md
    assert "Faithfulness (fidelity) is a constraint" in md


def test_the_mean_rank_of_old_would_have_put_base_above_the_method(marked):
    # What this replaces: each reward ranked the runs by mean score (ties sharing the average rank), and the
    # runs were ordered by mean rank, base first on a tie. good is first on the oracle, ties base on fidelity and
    # is last on tiny-pickscore: mean rank 1.5 each, and base came first.
    rows = [r for r in report_rows.build(marked) if r["method"] in ("base", "good")]
    mean_rank = {}
    for method, other in (("base", "good"), ("good", "base")):
        means = {(r["method"], r["reward"]): r["mean"] for r in rows}
        mean_rank[method] = np.mean([1.0 if means[(method, w)] > means[(other, w)] else
                                     1.5 if means[(method, w)] == means[(other, w)] else 2.0
                                     for w in ("oracle", "tiny-pickscore", "fidelity")])
    assert sorted(mean_rank, key=lambda m: (mean_rank[m], m != "base")) == ["base", "good"]
    (block,) = summary.ranking(rows)
    assert [e["method"] for e in block["entries"]] == ["good", "base"] and block["entries"][0]["group"] == 1


def test_without_a_gold_reward_the_ranking_averages_held_out_preference_rewards_only(tmp_path: Path):
    store = Store(tmp_path / "bench.duckdb")
    _prompts(store)
    store.set_reward_role("fidelity", "faithfulness")  # pick and hps have no row: preference rewards
    win, lose = _shift(lambda p, s: True), _shift(lambda p, s: False)
    _run(store, "base-1", "base", {"pick": _base, "hps": _base, "fidelity": _base})
    _run(store, "tailorpo-1", "tailorpo", {"pick": win, "hps": lose, "fidelity": _base},
         relations={"pick": ("trained-on", "its in-loop reward")})
    _run(store, "npo-1", "npo", {"pick": _shift(lambda p, s: p < 8), "hps": _shift(lambda p, s: p < 12),
                                 "fidelity": _base})
    (block,) = summary.ranking(report_rows.build(store))
    assert (block["basis"], block["ranked_on"]) == ("preference", ["hps (v1)", "pick (v1)"])
    by = {e["method"]: e for e in block["entries"]}
    assert by["tailorpo"]["held_out"] == ["hps (v1)"] and by["tailorpo"]["score"] == 0.0  # its 100% on pick is out
    assert by["npo"]["held_out"] == ["hps (v1)", "pick (v1)"] and by["npo"]["score"] == pytest.approx((1 / 3 + 0.5) / 2)
    assert [e["method"] for e in block["entries"]] == ["base", "npo", "tailorpo"]
    _, md = writer.write(store, "md", tmp_path / "r.md")
    (table,) = [rows for heading, rows in _md_tables(md) if heading == f"### {SUITE}"]
    assert table[0][2:5] == ["mean win % vs base (held out)", "hps win %", "pick win %"]
    assert table[3][1] == "tailorpo" and table[3][4] == "100.0 †"


def _ranking_row(method: str, rate: float | None, lo: float | None, hi: float | None) -> dict:
    return {"suite": "s", "reward": "oracle", "reward_version": "v1", "run_id": method, "method": method,
            "model": "tiny", "config_hash": method, "arm": method, "n_replicates": 1, "win_rate": rate, "ci_low": lo,
            "ci_high": hi, "p_holm": None if rate is None else 0.5, "reward_role": "gold", "reward_relation": None,
            "gain": None, "gain_ci_low": None, "gain_ci_high": None}


def test_a_method_significantly_above_base_on_the_gold_never_ranks_below_base():
    rng = random.Random(0)
    for trial in range(300):
        rows = [_ranking_row("base", None, None, None)]
        for i in range(rng.randint(1, 6)):
            lo, hi = sorted(rng.uniform(0.0, 1.0) for _ in range(2))
            # the point may even lie outside its percentile interval: the order must not depend on it
            rows.append(_ranking_row(f"m{i}", rng.uniform(0.0, 1.0) if trial % 3 == 0 else rng.uniform(lo, hi),
                                     lo, hi))
        order = [e["method"] for e in summary.ranking(rows)[0]["entries"]]
        at = order.index("base")
        for r in rows[1:]:
            if r["ci_low"] > 0.5:
                assert order.index(r["method"]) < at, (trial, rows)
            if r["ci_high"] < 0.5:
                assert order.index(r["method"]) > at, (trial, rows)


# -- (e) an old store ---------------------------------------------------------------------------------------------

# What the report rows of this store held before issue 19 (bench.report.rows as it was), per (reward, method):
# n, n_images, mean, mean_ci_low, mean_ci_high, base_mean, win_rate, ci_low, ci_high, p_value, p_holm.
BEFORE = {
    ("dist", "base"): (16, 16, -0.255599303635, -0.79057514989, 0.242792945827, None, None, None, None, None, None),
    ("dist", "dpo"): (16, 16, -0.258777530462, -0.615187478466, 0.023206477981, -0.255599303635, 0.5, 0.25, 0.75,
                      1.0, 1.0),
    ("dist", "npo"): (16, 16, 0.248106465625, -0.20726308976, 0.649052367215, -0.255599303635, 0.3125, 0.125, 0.5625,
                      0.375, 0.75),
    ("pick", "base"): (16, 16, 0.255599303635, -0.242792945827, 0.79057514989, None, None, None, None, None, None),
    ("pick", "dpo"): (16, 16, 0.258777530462, -0.023206477981, 0.615187478466, 0.255599303635, 0.5, 0.25, 0.75,
                      1.0, 1.0),
    ("pick", "npo"): (16, 16, -0.248106465625, -0.649052367215, 0.20726308976, 0.255599303635, 0.3125, 0.125, 0.5625,
                      0.375, 0.75),
}
_NUMBERS = ("n", "n_images", "mean", "mean_ci_low", "mean_ci_high", "base_mean", "win_rate", "ci_low", "ci_high",
            "p_value", "p_holm")


def _old_store(db: Path) -> Store:
    """A store as the harness wrote it before the replicates, run_rewards and reward_roles tables: those tables
    are dropped from the file, so a read-only open gives them as empty TEMP tables."""
    store = Store(db)
    rng = np.random.default_rng(5)
    store.add_prompts("parti", [{"prompt_id": f"p{p}", "prompt": f"prompt {p}", "category": f"c{p % 3}",
                                 "meta_json": None} for p in range(8)])
    store.add_reward("dist", "v1", higher_is_better=False)
    effect = {"base": 0.0, "dpo": 0.3, "npo": -0.1}
    for m in ("base", "dpo", "npo"):
        store.begin_run({"run_id": f"{m}-1", "method": m, "model": "tiny", "sampler_key": "k", "config_hash": f"h{m}"})
        store.add_images([{"image_id": f"{m}/{p}/{k}", "run_id": f"{m}-1", "suite": "parti", "prompt_id": f"p{p}",
                           "prompt": f"prompt {p}", "seed": k, "path": f"{m}_{p}_{k}.png", "sha256": "", "width": 8,
                           "height": 8} for p in range(8) for k in (0, 1)])
        noise = rng.normal(size=(8, 2))
        store.add_scores([(f"{m}/{p}/{k}", reward, "v1", float(sign * (p * 0.1 + effect[m] + noise[p, k])))
                          for reward, sign in (("pick", 1.0), ("dist", -1.0)) for p in range(8) for k in (0, 1)])
        store.add_phase_time(f"{m}-1", "sample", 1.5)
        store.finish_run(f"{m}-1", "done")
    with duckdb.connect(str(db)) as con:
        for table in ("replicates", "run_rewards", "reward_roles"):
            con.execute(f"DROP TABLE {table}")
    return Store(db, read_only=True)


def test_an_old_store_gives_the_rows_it_gave_before(tmp_path: Path):
    store = _old_store(tmp_path / "bench.duckdb")
    built = report_rows.build_all(store)
    assert len(built.rows) == len(BEFORE)
    for r in built.rows:
        assert tuple(r) == report_rows.ROW_KEYS
        want = BEFORE[(r["reward"], r["method"])]
        for key, value in zip(_NUMBERS, want):
            assert r[key] == (pytest.approx(value, rel=1e-9, abs=1e-12) if isinstance(value, float) else value), key
        assert (r["run_id"], r["config_hash"], r["status"], r["sample_s"], r["train_s"], r["score_s"]) == (
            f"{r['method']}-1", f"h{r['method']}", "done", 1.5, None, None)
        assert r["base_run_id"] == (None if r["method"] == "base" else "base-1")
        # the new keys of a run that is its own arm, in a store that records no roles nor relations
        assert (r["arm"], r["n_replicates"], r["run_ids"], r["replicate_win_rates"], r["replicate_sd"]) == (
            r["run_id"], 1, [r["run_id"]], [r["win_rate"]], None)
        assert (r["prompt_ci_low"], r["prompt_ci_high"]) == (r["ci_low"], r["ci_high"])
        assert (r["reward_role"], r["reward_relation"], r["base_settings"]) == ("preference", None, None)
    assert [{k: r[k] for k in report_rows.BASE_KEYS} for r in built.replicate_rows] == [
        {k: r[k] for k in report_rows.BASE_KEYS} for r in built.rows]
    _, md = writer.write(store, "md", tmp_path / "r.md")
    assert "Training replicates" not in md and "†" not in md and "paired base" not in md
    assert "Matched controls" not in md  # its runs record no settings to name
