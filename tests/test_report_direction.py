"""A lower-is-better reward (a distance, an error) in the report: ranks, wins and losses go its way.

The store holds two rewards scoring the same images: ``pick`` (higher is better) and ``dist`` =
−pick, declared lower-is-better. Read in its own direction, ``dist`` says exactly what ``pick``
says, so every ranking, win rate and grid pick must agree between them; read the wrong way it
would put the worst run first and show the losses as wins.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import data, grids, writer
from bench.report import rows as report_rows
from bench.report.document import assemble
from bench.store import Store

PROMPTS, SEEDS = range(6), (0, 1)
# dpo's gain over base per prompt (+0.01 per seed): two clear wins, a small one, two losses, a tie
DPO_GAIN = (0.5, 0.3, 0.1, -0.2, -0.4, 0.0)


def _pick(method: str, p: int, s: int) -> float:
    base = 1.0 + p + 0.1 * s
    if method == "dpo":
        return base + DPO_GAIN[p] + (0.01 * s if DPO_GAIN[p] else 0.0)
    return base - 0.05 if method == "npo" else base  # npo loses every pair


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("direction") / "bench.duckdb")
    s.add_prompts("parti", [{"prompt_id": f"p{p}", "prompt": f"prompt {p}", "category": None, "meta_json": None}
                            for p in PROMPTS])
    s.add_reward("dist", "v1", higher_is_better=False)
    s.add_reward("pick", "v1", higher_is_better=True)
    for method in ("base", "dpo", "npo"):
        s.begin_run({"run_id": f"{method}-1", "method": method, "model": "tiny", "sampler_key": "k"})
        s.add_images([{"image_id": f"{method}/{p}/{k}", "run_id": f"{method}-1", "suite": "parti",
                       "prompt_id": f"p{p}", "prompt": f"prompt {p}", "seed": k, "path": f"{method}_{p}_{k}.png",
                       "sha256": "", "width": 8, "height": 8} for p in PROMPTS for k in SEEDS])
        s.add_scores([(f"{method}/{p}/{k}", reward, "v1", sign * _pick(method, p, k))
                      for reward, sign in (("pick", 1.0), ("dist", -1.0)) for p in PROMPTS for k in SEEDS])
        s.finish_run(f"{method}-1", "done")
    return s


def _by_reward(rows: list[dict], method: str) -> dict[str, dict]:
    return {r["reward"]: r for r in rows if r["method"] == method}


def test_directions_come_from_the_rewards_table_and_default_to_higher(store):
    directions = data.directions(store)
    assert directions[("dist", "v1")] is False and directions[("pick", "v1")] is True
    assert directions[("unlisted", "v1")] is True


def test_win_rates_and_p_values_count_a_lower_score_as_the_win(store):
    rows = report_rows.build(store)
    for method in ("dpo", "npo"):
        dist, pick = _by_reward(rows, method)["dist"], _by_reward(rows, method)["pick"]
        assert (dist["win_rate"], dist["ci_low"], dist["ci_high"], dist["p_value"]) == (
            pick["win_rate"], pick["ci_low"], pick["ci_high"], pick["p_value"])
    # 3 prompts up, 1 tie: (6 + 2 × ½) / 12
    assert _by_reward(rows, "dpo")["dist"]["win_rate"] == pytest.approx(7 / 12)
    assert _by_reward(rows, "npo")["dist"]["win_rate"] == 0.0


def test_ranking_counts_a_lower_score_as_the_win_on_a_lower_is_better_reward(store):
    (block,) = assemble(store).ranking
    assert block["rewards"] == ["dist (v1)", "pick (v1)"]
    assert [e["method"] for e in block["entries"]] == ["dpo", "base", "npo"]
    for entry, rate in zip(block["entries"], (7 / 12, None, 0.0)):
        assert entry["win_rates"] == ({} if rate is None else {"dist (v1)": rate, "pick (v1)": rate})


def test_grids_pick_the_largest_wins_and_losses_in_the_reward_direction(store):
    rows = report_rows.build(store)
    chosen = grids.select(store, rows, {r["run_id"]: r["method"] for r in rows})
    by_reason = {r: (g.prompt_id, g.seed) for g in chosen for r in g.reasons}
    # on dist the largest win is the largest drop of the score: shown as score minus base's, negative
    assert by_reason["largest win: dpo on dist, -0.51"] == by_reason["largest win: dpo on pick, +0.51"] == ("p0", 1)
    assert by_reason["largest win: dpo on dist, -0.31"] == by_reason["largest win: dpo on pick, +0.31"] == ("p1", 1)
    assert by_reason["largest loss: dpo on dist, +0.4"] == by_reason["largest loss: dpo on pick, -0.4"] == ("p4", 0)
    assert by_reason["largest loss: dpo on dist, +0.2"] == by_reason["largest loss: dpo on pick, -0.2"] == ("p3", 0)
    assert sum(r.startswith("largest") and "dist" in r for r in by_reason) == 4


def test_markdown_says_which_way_a_reward_is_better(store, tmp_path: Path):
    _, text = writer.write(store, "md", tmp_path / "r.md")
    assert "### dist (v1) · lower is better" in text and "### pick (v1)\n" in text
    assert "higher is better, except for dist, where lower is better" in text
    assert "scores better (higher; lower for dist) than base's" in text
    assert "largest win: dpo on dist, -0.51" in text  # the document hands the directions to the grids
