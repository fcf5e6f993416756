"""The full report's data on a hand-built tiny-world-like store: categories, ranking, costs, grids.

``build_store`` is shared with tests/test_report_html.py: a store written through the Store API as
the runner writes it (prompts with categories and meta, base + three methods, real 32x32 PNGs
named by their sha256, two rewards) whose win rates per category are known by construction, and
two prompts that are markup.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from bench.report import categories as report_categories
from bench.report import grids, summary as report_summary, writer
from bench.report import rows as report
from bench.store import Store

XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
# (prompt_id, text, category, meta): two circles, two squares, two prompts that are markup with
# their own (markup) categories, so that each category gives one fixed grid.
PROMPTS = [
    ("0000", "a red circle on a white background", "circle", {"shape": "circle", "colour": "red", "size": "small"}),
    ("0001", "a blue circle on a black background", "circle", {"shape": "circle", "colour": "blue", "size": "large"}),
    ("0002", "a green square on a gray background", "square", {"shape": "square", "colour": "green", "size": "small"}),
    ("0003", "a red square on a beige background", "square", {"shape": "square", "colour": "red", "size": "large"}),
    ("0004", XSS[0], "<i>odd</i>", {"shape": "x", "colour": "blue", "size": "small"}),
    ("0005", XSS[1], "<b onmouseover=alert(2)>odd</b>", {"shape": "y", "colour": "green", "size": "large"}),
]
SEEDS = (0, 1)
SUITE = "tiny-eval"
CATEGORY = {pid: cat for pid, _, cat, _ in PROMPTS}


def oracle(method: str, p: int, s: int) -> float:
    """base rises with prompt and seed; dpo wins on circles, loses on squares, ties on the markup prompts;
    npo loses everywhere; contrastive equals dpo (a tie in the ranking)."""
    base = 0.5 + 0.01 * p + 0.001 * s
    if method == "base":
        return base
    if method in ("dpo", "contrastive"):
        cat = CATEGORY[f"{p:04d}"]
        return base + (0.1 + 0.01 * p + 0.001 * s if cat == "circle" else -0.05 - 0.01 * p - 0.001 * s
                       if cat == "square" else 0.0)
    return base - 0.02


def pick(method: str, p: int, s: int) -> float:
    """dpo and contrastive win every pair, npo ties every pair."""
    return 1.0 + p + (0.5 if method in ("dpo", "contrastive") else 0.0)


def _png(method: str, p: int, s: int) -> bytes:
    rng = np.random.default_rng(int(hashlib.md5(f"{method}/{p}/{s}".encode()).hexdigest()[:8], 16))
    pixels = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def build_store(db: Path, methods: tuple[str, ...] = ("base", "dpo", "npo", "contrastive")) -> Store:
    store = Store(db)
    store.add_prompts(SUITE, [{"prompt_id": pid, "prompt": text, "category": cat, "meta_json": json.dumps(meta)}
                              for pid, text, cat, meta in PROMPTS])
    for method in methods:
        run_id = f"{method}-tiny-{hashlib.md5(method.encode()).hexdigest()[:6]}"
        store.begin_run({"run_id": run_id, "method": method, "model": "tiny", "sampler_key": "tiny/ddim/8/32",
                         "config_hash": run_id[-6:], "git_sha": "abc1234",
                         "versions_json": json.dumps({"torch": "2.14.1"})})
        rows = []
        for i, (pid, text, _, _) in enumerate(PROMPTS):
            for s in SEEDS:
                data = _png(method, i, s)
                digest = hashlib.sha256(data).hexdigest()
                path = store.root / "images" / digest[:2] / f"{digest}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                rows.append({"image_id": f"{run_id}/{pid}/{s}", "run_id": run_id, "suite": SUITE, "prompt_id": pid,
                             "prompt": text, "seed": s, "path": str(path), "sha256": digest, "width": 32,
                             "height": 32})
        store.add_images(rows)
        store.add_scores([(f"{run_id}/{PROMPTS[p][0]}/{s}", reward, version, fn(method, p, s))
                          for reward, version, fn in (("oracle", "oracle-v1", oracle), ("pick", "v1", pick))
                          for p in range(len(PROMPTS)) for s in SEEDS])
        if method != "base":
            store.add_phase_time(run_id, "train", 12.0)
        store.add_phase_time(run_id, "sample", 3.0)
        store.add_phase_time(run_id, "score", 0.5)
        store.finish_run(run_id, "done")
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return build_store(tmp_path_factory.mktemp("full_report") / "results" / "bench.duckdb")


@pytest.fixture(scope="module")
def rows(store: Store) -> list[dict]:
    return report.build(store)


def _method_run(rows: list[dict], method: str) -> str:
    return next(r["run_id"] for r in rows if r["method"] == method)


def test_categories_break_win_rates_down_by_category_and_by_meta_attribute(store, rows):
    tables = report_categories.breakdown(store, rows)
    oracle_tables = {t["attribute"]: t for t in tables if t["reward"] == "oracle"}
    # shape splits the prompts exactly as category does: shown once, as category
    assert sorted(oracle_tables) == ["category", "colour", "size"]
    cat = oracle_tables["category"]
    assert cat["levels"] == sorted({c for _, _, c, _ in PROMPTS})
    dpo = cat["cells"][_method_run(rows, "dpo")]
    assert (dpo["circle"]["win_rate"], dpo["square"]["win_rate"], dpo["<i>odd</i>"]["win_rate"]) == (1.0, 0.0, 0.5)
    assert (dpo["circle"]["ci_low"], dpo["circle"]["ci_high"], dpo["circle"]["n"], dpo["circle"]["n_prompts"]) == (
        1.0, 1.0, 4, 2)
    npo_size = oracle_tables["size"]["cells"][_method_run(rows, "npo")]
    assert npo_size["small"]["win_rate"] == 0.0 and npo_size["large"]["n_prompts"] == 3
    assert set(cat["cells"]) == {r["run_id"] for r in rows if r["method"] != "base"}


def test_attributes_ignore_free_text_and_too_many_levels():
    import pandas as pd

    prompts = pd.DataFrame({"prompt_id": [f"{i}" for i in range(20)], "category": [None] * 20,
                            "meta_json": [json.dumps({"id": i, "note": "same", "half": i % 2}) for i in range(20)]})
    assert list(report_categories.attributes(prompts)) == ["half"]


def test_without_reward_roles_a_reward_takes_the_role_its_registered_class_declares(rows):
    # No reward_roles rows: oracle is registered as the tiny world's gold reward, pick is registered nowhere
    assert {r["reward"]: r["reward_role"] for r in rows} == {"oracle": "gold", "pick": "preference"}
    (block,) = report_summary.ranking(rows)
    assert (block["basis"], block["ranked_on"]) == ("gold", ["oracle (oracle-v1)"])


def test_ranking_on_preference_rewards_averages_the_win_rates_of_every_reward(rows):
    # Both rewards preference rewards (as an unregistered oracle would be): every run is held out from both.
    (block,) = report_summary.ranking([{**r, "reward_role": "preference"} for r in rows])
    assert block["rewards"] == block["ranked_on"] == ["oracle (oracle-v1)", "pick (v1)"]
    assert (block["basis"], block["constraints"]) == ("preference", [])
    methods = [e["method"] for e in block["entries"]]
    assert methods[:2] == ["contrastive", "dpo"] and methods[2:] == ["base", "npo"]  # tied arms: by method
    dpo = block["entries"][1]
    assert dpo["win_rates"] == {"oracle (oracle-v1)": 0.5, "pick (v1)": 1.0} and dpo["score"] == 0.75
    # all 6 prompts up: sign test p = 2/64, Holm over the 3 methods of the table gives 0.094
    assert dpo["significant"]["pick (v1)"] is False
    base, npo = block["entries"][2], block["entries"][3]
    assert base["score"] == 0.5 and npo["score"] == 0.25  # npo: 0 on oracle, ties base on pick


def test_costs_sum_phases_and_divide_sampling_by_images(store, rows):
    costs = {c["method"]: c for c in report_summary.costs(store, rows)}
    assert (costs["dpo"]["train_s"], costs["dpo"]["total_s"], costs["dpo"]["n_images"]) == (12.0, 15.5, 12)
    assert costs["dpo"]["sample_s_per_image"] == pytest.approx(0.25)
    assert costs["base"]["train_s"] is None and costs["base"]["total_s"] == 3.5


def test_histograms_share_edges_and_count_every_image(store, rows):
    hists = report_summary.histograms(store, rows, bins=10)
    assert [(h["reward"], len(h["edges"])) for h in hists] == [("oracle", 11), ("pick", 11)]
    assert all(sum(c) == 12 for h in hists for c in h["counts"].values())


def test_grids_are_stable_and_show_fixed_prompts_then_largest_wins_and_losses(store, rows):
    labels = {r["run_id"]: r["method"] for r in rows}
    chosen = grids.select(store, rows, labels)
    again = grids.select(store, rows, labels)
    assert [(g.prompt_id, g.seed, g.reasons) for g in chosen] == [(g.prompt_id, g.seed, g.reasons) for g in again]
    fixed = [g for g in chosen if "fixed prompt" in g.reasons]
    assert len(fixed) == grids.GRID_FIXED and len({g.category for g in fixed}) == 4  # one per category
    assert [c.label for c in chosen[0].cells] == ["base", "contrastive", "dpo", "npo"]
    by_reason = {r: (g.prompt_id, g.seed) for g in chosen for r in g.reasons}
    # largest oracle wins: the circles' best seeds, 0001 (+0.111) then 0000 (+0.101); contrastive ties
    # with dpo and comes first by run_id; the largest losses: the squares 0003 then 0002
    assert by_reason["largest win: contrastive on oracle, +0.111"] == ("0001", 1)
    assert by_reason["largest win: contrastive on oracle, +0.101"] == ("0000", 1)
    assert by_reason["largest loss: contrastive on oracle, -0.081"] == ("0003", 1)
    assert by_reason["largest loss: contrastive on oracle, -0.071"] == ("0002", 1)
    assert by_reason["largest win: contrastive on pick, +0.5"] == ("0000", 0)  # all tie: first prompt, seed
    assert not any(r.startswith("largest loss: ") and "pick" in r for r in by_reason)  # nothing loses on pick
    cell = chosen[0].cells[2]
    assert set(cell.scores) == {"oracle (oracle-v1)", "pick (v1)"} and cell.source.is_file()


def test_missing_image_files_become_placeholders(store, rows, tmp_path: Path):
    labels = {r["run_id"]: r["method"] for r in rows}
    chosen = grids.select(store, rows, labels)
    chosen[0].cells[1].source = tmp_path / "deleted.png"
    missing = grids.materialise(chosen, tmp_path / "files")
    assert missing == 1 and chosen[0].cells[1].missing and chosen[0].cells[1].src == grids.PLACEHOLDER
    assert (tmp_path / "files" / grids.PLACEHOLDER).is_file()
    thumb = chosen[0].cells[0]
    assert not thumb.missing and thumb.src.startswith("img-") and (thumb.width, thumb.height) == (32, 32)
    with Image.open(tmp_path / "files" / thumb.src) as im:
        assert im.size == (32, 32)


def test_markdown_report_links_every_chart_and_image_and_escapes_prompts(store, tmp_path: Path):
    path, text = writer.write(store, "md", tmp_path / "out" / "report.md")
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads == ["## Ranking", "## Suite tiny-eval", "## Cost", "## Statistics", "## Provenance"]
    links = re.findall(r"!\[(?:\\.|[^\]\\])*\]\(([^)\s]+)\)", text)
    assert any("winrate-" in link for link in links) and any("scores-" in link for link in links)
    assert sum(link.startswith("report_files/img-") for link in links) >= 4 * 4  # fixed grids x 4 runs
    assert all((path.parent / unquote(link)).is_file() for link in links)
    assert "<script>" not in text and "<img src=x" not in text and "<i>odd" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "comparisons with base" in text and "Bonferroni" in text and "### By category" in text


def test_json_report_keeps_the_row_keys_and_adds_the_summaries(store, tmp_path: Path):
    _, text = writer.write(store, "json", tmp_path / "r.json")
    data = json.loads(text)
    assert all(tuple(r) == report.ROW_KEYS for r in data["rows"])
    assert {"ranking", "categories", "costs", "provenance"} <= set(data)
    assert not (tmp_path / "r_files").exists()  # JSON has no figures


def test_report_filters_apply_to_every_section(store, tmp_path: Path):
    _, text = writer.write(store, "md", tmp_path / "f.md", methods=["npo"])
    assert "| dpo " not in text and "| npo " in text and "| base " in text
    assert "contrastive" not in text.split("## Provenance")[0]


def test_an_empty_store_renders_every_format(tmp_path: Path):
    empty = Store(tmp_path / "bench.duckdb")
    for fmt in writer.FORMATS:
        _, text = writer.write(empty, fmt, tmp_path / f"e.{fmt}")
        assert text
    assert "No scored images" in (tmp_path / "e.html").read_text()
