"""Issues 20 and 21 in the report: over-optimisation curves, diversity, training curves, the compute-matched
frontier and published numbers beside ours.

``build_extras`` writes a store through the Store API as the runner writes it (real 8x8 PNGs named by their
sha256, runs with a config_json), shared with tests/test_report_html.py. Suite ``tiny-eval`` (12 prompts x 3
seeds), rewards oracle (gold), tiny-pickscore (preference) and fidelity (faithfulness, 0 or 1):

* dpo-1: trained 300 steps, two intermediate checkpoints (steps 100, 200) on prompts p00-p05. On those prompts
  its tiny-pickscore win rate (a proxy: same-data) climbs 1/6 -> 1/2 -> 1 while its oracle one falls 1 -> 1/2
  -> 0: over-optimisation. Its images of a prompt are all alike (one embedding per prompt).
* sdpo-1: trained 300 steps, checkpoints at 100, 200: both rewards climb together (2/6 -> 4/6 -> 1).
* contrastive-1: wins the oracle on p02-p11 (10/12); tailorpo-1 (trained on tiny-pickscore) on none.
* best_of_n-2, -4, -8 (method_config.n = 2, 4, 8): win the oracle on the first 4, 5 and 10 prompts, sampling
  costs 2, 4 and 20 s; trained runs cost 1000 s of training (tailorpo 100) and 1 s of sampling.
* suite hpdv2 (6 prompts x 2 seeds): base and a run of the published weights dpo-sdxl (method dpo@dpo-sdxl)
  scored by hpsv2; its mean is 0.2816 (0.2716 to 0.2916 by prompt), the value Wallace et al. print (28.16,
  x100), and every image beats base's 0.27.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import checkpoints
from bench.report import (
    curves,
    data,
    frontier,
    grids,
    papers,
    render_data,
    render_html,
    render_md,
    summary,
    trainlog,
    writer,
)
from bench.report import diversity as report_diversity
from bench.report import rows as report_rows
from bench.report.document import assemble
from bench.store import Store

SUITE, SEEDS, PROMPTS = "tiny-eval", (0, 1, 2), range(12)
SUBSET = [f"p{p:02d}" for p in range(6)]
HPD_PROMPTS, HPD_SEEDS = range(6), (0, 1)
Win = Callable[[int, int], bool]


def _base(p: int, s: int) -> float:
    return 0.3 + 0.01 * p + 0.001 * s


def _png(key: str) -> bytes:
    rng = np.random.default_rng(int(hashlib.md5(key.encode()).hexdigest()[:8], 16))
    buf = io.BytesIO()
    Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _config(method: str, **extra) -> str:
    steps = {"steps": 300} if method in ("dpo", "sdpo", "contrastive", "tailorpo") else {}
    return json.dumps({"method": method.split("@")[0], "model": "tiny", "sampler": {"name": "ddim", "steps": 8},
                       "method_config": {"guidance_scale": 5.0, **steps, **extra.pop("method_config", {})}, **extra})


def _emb(run_id: str, p: int, s: int) -> np.ndarray:
    """dpo's images of a prompt are all alike; everyone else's differ from seed to seed."""
    key = f"{p}" if run_id.startswith("dpo-1") else f"{run_id}/{p}/{s}"
    return np.random.default_rng(int(hashlib.md5(key.encode()).hexdigest()[:8], 16)).normal(size=8) + 0.5


class Writes:
    """Images, scores and embeddings of many runs, each written in one Store call: every call opens the file,
    and hundreds of small writes would be most of a test's time."""

    def __init__(self) -> None:
        self.images: list[dict] = []
        self.scores: list[tuple] = []
        self.embeddings: list[tuple] = []

    def flush(self, store: Store) -> None:
        store.add_images(self.images)
        store.add_scores(self.scores)
        store.add_embeddings(self.embeddings)


def add_run(store: Store, run_id: str, method: str, oracle: Win | None, pick: Win | None, *,
            prompts=PROMPTS, suite: str = SUITE, seeds=SEEDS, config: str | None = None, times=(None, 1.0),
            relations: dict | None = None, artifact: str | None = None, embed: bool = True,
            scores: dict[str, Callable[[int, int], float]] | None = None, writes: Writes | None = None) -> None:
    """A run of ``method`` whose oracle and tiny-pickscore scores beat base's by 0.1 where ``oracle`` / ``pick``
    hold and fall 0.1 short elsewhere (None: base's own scores). With ``writes``, its images, scores and
    embeddings are gathered there for one write of many runs."""
    pending = writes or Writes()
    store.begin_run({"run_id": run_id, "method": method, "model": "tiny", "sampler_key": "tiny/ddim/8/5",
                     "config_hash": f"cfg-{run_id}", "artifact_hash": artifact or f"art-{run_id}",
                     "config_json": config or _config(method), "git_sha": "abc1234"})
    rows = []
    for p in prompts:
        for s in seeds:
            png = _png(f"{run_id}/{suite}/{p}/{s}")
            digest = hashlib.sha256(png).hexdigest()
            path = store.root / "images" / f"{digest}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            rows.append({"image_id": f"{run_id}/{suite}/{p}/{s}", "run_id": run_id, "suite": suite,
                         "prompt_id": f"p{p:02d}", "prompt": f"prompt {p}", "seed": s, "path": str(path),
                         "sha256": digest, "width": 8, "height": 8})
    pending.images += rows
    fns = scores or {"oracle": oracle, "tiny-pickscore": pick,
                     "fidelity": lambda p, s: 0.0 if run_id.startswith("dpo-1") and s == 2 else 1.0}
    out = []
    for reward, fn in fns.items():
        for p in prompts:
            for s in seeds:
                if reward in ("oracle", "tiny-pickscore"):
                    value = _base(p, s) if fn is None else _base(p, s) + (0.1 if fn(p, s) else -0.1)
                else:
                    value = fn(p, s)
                out.append((f"{run_id}/{suite}/{p}/{s}", reward, "v1", value))
    pending.scores += out
    if embed and suite == SUITE:
        pending.embeddings += [(f"{run_id}/{suite}/{p}/{s}", "fidelity-features", "v1", _emb(run_id, p, s))
                               for p in prompts for s in seeds]
    if relations:
        store.set_run_rewards(run_id, relations)
    for phase, seconds in zip(("train", "sample"), times):
        if seconds is not None:
            store.add_phase_time(run_id, phase, seconds)
    store.finish_run(run_id, "done")
    if writes is None:
        pending.flush(store)


SAME_DATA = {"tiny-pickscore": ("same-data", "learned from tiny-pickapic")}


def _checkpoint(store: Store, writes: Writes, final: str, method: str, step: int, oracle: Win, pick: Win) -> None:
    run_id = f"{final}-step{step}"
    add_run(store, run_id, method, oracle, pick, prompts=range(6), relations=SAME_DATA, times=(None, 0.5),
            artifact=f"art-{final}", config=_config(method, checkpoint_step=step, final_run=final, prompt_ids=SUBSET),
            writes=writes)
    store.add_checkpoint_step(run_id, final, step)


def _train_log(store: Store, artifact: str, method: str, rel: bool, slope: float) -> None:
    rows = []
    for step in range(1, 301):
        values = {"loss": 0.7 - 0.001 * step, "implicit_acc": min(1.0, 0.5 + 0.002 * step)}
        if rel:
            values |= {"rel_err_w": slope * step, "rel_err_l": 0.0002 * step, "err_w": 0.1, "err_l": 0.1}
        else:
            values |= {"err_w": 0.1 + slope * step, "err_l": 0.1}
        rows += [{"artifact_hash": artifact, "method": method, "step": step, "name": k, "value": v}
                 for k, v in values.items()]
    store.add_train_logs(rows)


def build_extras(db: Path) -> Store:
    store = Store(db)
    store.add_prompts(SUITE, [{"prompt_id": f"p{p:02d}", "prompt": f"prompt {p}", "category": f"c{p % 2}",
                               "meta_json": None} for p in PROMPTS])
    store.add_prompts("hpdv2", [{"prompt_id": f"p{p:02d}", "prompt": f"prompt {p}", "category": None,
                                 "meta_json": None} for p in HPD_PROMPTS])
    store.set_reward_role("oracle", "gold")
    store.set_reward_role("tiny-pickscore", "preference", "tiny-pickapic")
    store.set_reward_role("fidelity", "faithfulness")
    store.set_reward_role("hpsv2", "preference", "HPDv2")
    w = Writes()
    hpd = {"suite": "hpdv2", "prompts": HPD_PROMPTS, "seeds": HPD_SEEDS, "writes": w}
    add_run(store, "base-1", "base", None, None, writes=w)
    add_run(store, "base-1", "base", None, None, scores={"hpsv2": lambda p, s: 0.27}, **hpd)
    add_run(store, "dpo-1", "dpo", lambda p, s: p >= 6, lambda p, s: True, relations=SAME_DATA,
            times=(1000.0, 1.0), writes=w)
    _checkpoint(store, w, "dpo-1", "dpo", 100, lambda p, s: True, lambda p, s: p < 1)
    _checkpoint(store, w, "dpo-1", "dpo", 200, lambda p, s: p < 3, lambda p, s: p < 3)
    add_run(store, "sdpo-1", "sdpo", lambda p, s: True, lambda p, s: True, relations=SAME_DATA,
            times=(1000.0, 1.0), writes=w)
    _checkpoint(store, w, "sdpo-1", "sdpo", 100, lambda p, s: p < 2, lambda p, s: p < 2)
    _checkpoint(store, w, "sdpo-1", "sdpo", 200, lambda p, s: p < 4, lambda p, s: p < 4)
    add_run(store, "contrastive-1", "contrastive", lambda p, s: p >= 2, None, relations=SAME_DATA,
            times=(1000.0, 1.0), writes=w)
    add_run(store, "tailorpo-1", "tailorpo", lambda p, s: False, lambda p, s: True, times=(100.0, 1.0),
            relations={"tiny-pickscore": ("trained-on", "its in-loop reward")}, writes=w)
    for n, wins, sample_s in ((2, 4, 2.0), (4, 5, 4.0), (8, 10, 20.0)):
        add_run(store, f"best_of_n-{n}", "best_of_n", lambda p, s, k=wins: p < k, None, times=(None, sample_s),
                config=_config("best_of_n", method_config={"n": n}),
                relations={"tiny-pickscore": ("trained-on", "the verifier")}, writes=w)
    published = {"source": "dpo-sdxl", "checkpoint": "dpo-sdxl", "layout": "unet-folder", "fingerprint": "f" * 64}
    add_run(store, "published-1", "dpo@dpo-sdxl", None, None,
            config=_config("dpo@dpo-sdxl", published_weights=published, trains=False),
            scores={"hpsv2": lambda p, s: 0.2816 + 0.004 * (p - 2.5)}, **hpd)
    w.flush(store)
    _train_log(store, "art-dpo-1", "dpo", rel=True, slope=0.0001)
    _train_log(store, "art-sdpo-1", "sdpo", rel=True, slope=-0.0001)
    _train_log(store, "art-contrastive-1", "contrastive", rel=True, slope=0.0)
    _train_log(store, "art-tailorpo-1", "tailorpo", rel=False, slope=0.0001)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return build_extras(tmp_path_factory.mktemp("extras") / "results" / "bench.duckdb")


N_BOOT = 400


@pytest.fixture(scope="module")
def doc(store):
    return assemble(store, n_boot=N_BOOT)


@pytest.fixture(scope="module")
def md(store, tmp_path_factory) -> tuple[Path, str]:
    """The Markdown report (training amortised over 20,000 images) and its folder of figures."""
    path, text = writer.write(store, "md", tmp_path_factory.mktemp("md") / "r.md", n_boot=N_BOOT, amortise=20_000)
    return path.parent / "r_files", text


@pytest.fixture(scope="module")
def html(store, tmp_path_factory) -> str:
    return writer.write(store, "html", tmp_path_factory.mktemp("html") / "r.html", n_boot=N_BOOT)[1]


@pytest.fixture(scope="module")
def report_json(store, tmp_path_factory) -> dict:
    return json.loads(writer.write(store, "json", tmp_path_factory.mktemp("json") / "r.json", n_boot=N_BOOT)[1])


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Store:
    """base and dpo, nothing else: no embeddings, checkpoints, training log nor published weights."""
    s = Store(tmp_path_factory.mktemp("bare") / "bench.duckdb")
    s.add_prompts(SUITE, [{"prompt_id": f"p{p:02d}", "prompt": f"prompt {p}", "category": None, "meta_json": None}
                          for p in PROMPTS])
    add_run(s, "base-1", "base", None, None, embed=False)
    add_run(s, "dpo-1", "dpo", lambda p, s_: True, lambda p, s_: True, embed=False)
    return s


CHECKPOINT_RUNS = {"dpo-1-step100", "dpo-1-step200", "sdpo-1-step100", "sdpo-1-step200"}


# -- 1a: checkpoint runs are no results ---------------------------------------------------------------------------


def test_checkpoint_runs_appear_in_no_table_ranking_grid_cost_or_histogram(store, doc, md):
    assert {r["run_id"] for r in doc.replicate_rows}.isdisjoint(CHECKPOINT_RUNS)
    assert {rid for r in doc.rows for rid in r["run_ids"]}.isdisjoint(CHECKPOINT_RUNS)
    assert all(e["run_id"] not in CHECKPOINT_RUNS for b in doc.ranking for e in b["entries"])
    assert all(set(t["cells"]).isdisjoint(CHECKPOINT_RUNS) for t in doc.categories)
    assert {c["run_id"] for c in doc.costs}.isdisjoint(CHECKPOINT_RUNS)
    assert {p["run_id"] for b in doc.frontier for p in b["points"]}.isdisjoint(CHECKPOINT_RUNS)
    assert {r["run_id"] for r in doc.diversity}.isdisjoint(CHECKPOINT_RUNS)
    assert all(set(h["counts"]).isdisjoint(CHECKPOINT_RUNS) for h in summary.histograms(store, doc.rows))
    assert CHECKPOINT_RUNS <= set(doc.provenance["runs"])  # listed where the curves' numbers come from
    chosen = grids.select(store, doc.rows, doc.labels)
    assert chosen and {c.run_id for g in chosen for c in g.cells}.isdisjoint(CHECKPOINT_RUNS)
    # dpo's own row is the whole suite, every seed, not diluted by its checkpoints' subset
    dpo = next(r for r in doc.rows if r["method"] == "dpo" and r["reward"] == "oracle")
    assert (dpo["n"], dpo["win_rate"]) == (36, 0.5)
    body = md[1].split("### Training dynamics")[0]
    assert "step100" not in body and "step200" not in body
    assert "dpo [" not in md[1] and "sdpo [" not in md[1]  # no second run of either to tell apart by config hash


# -- 1b, 1c: the curves and their flag ----------------------------------------------------------------------------


def _curve(points: list[dict], final: str, reward: str) -> list[tuple]:
    return [(p["step"], p["win_rate"], p["n"]) for p in points if p["final_run_id"] == final and p["reward"] == reward]


def test_curves_have_a_point_per_checkpoint_and_the_final_run_on_the_same_prompts(doc):
    assert _curve(doc.curves, "dpo-1", "oracle") == [(100, 1.0, 18), (200, 0.5, 18), (300, 0.0, 18)]
    assert _curve(doc.curves, "dpo-1", "tiny-pickscore") == [(100, pytest.approx(1 / 6), 18), (200, 0.5, 18),
                                                              (300, 1.0, 18)]
    assert _curve(doc.curves, "sdpo-1", "oracle") == [(100, pytest.approx(1 / 3), 18), (200, pytest.approx(2 / 3), 18),
                                                       (300, 1.0, 18)]
    last = [p for p in doc.curves if p["final_run_id"] == "dpo-1" and p["step"] == 300]
    assert {p["run_id"] for p in last} == {"dpo-1"} and all(p["n_prompts"] == 6 for p in last)
    for p in doc.curves:
        assert set(curves.POINT_KEYS) <= set(p) and p["ci_low"] <= p["win_rate"] <= p["ci_high"]
    rel = {(p["final_run_id"], p["reward"]): (p["reward_relation"], p["reward_role"]) for p in doc.curves}
    assert rel[("dpo-1", "tiny-pickscore")] == ("same-data", "preference")
    assert rel[("dpo-1", "oracle")] == (None, "gold") and rel[("sdpo-1", "fidelity")] == (None, "faithfulness")
    mid = next(p for p in doc.curves if p["final_run_id"] == "dpo-1" and p["step"] == 200 and p["reward"] == "oracle")
    assert mid["ci_low"] < 0.5 < mid["ci_high"]  # three prompts of six win: a prompt bootstrap, not a point


def test_proxy_rising_while_gold_falls_is_flagged_in_words_with_the_numbers(doc, report_json):
    by_run = {f["final_run_id"]: f for f in doc.curve_flags}
    dpo, sdpo = by_run["dpo-1"], by_run["sdpo-1"]
    assert dpo["flagged"] and not sdpo["flagged"]
    assert (dpo["proxy"]["reward"], dpo["held_out"]["reward"]) == ("tiny-pickscore", "oracle")  # gold first
    assert (dpo["held_out"]["first"], dpo["held_out"]["last"], dpo["held_out"]["half_width"]) == (1.0, 0.0, 0.0)
    assert (dpo["first_step"], dpo["last_step"]) == (100, 300)
    (flag,) = [f for f in report_json["curve_flags"] if f["final_run_id"] == "dpo-1"]
    assert flag["flagged"] is True and flag["method"] == "dpo"
    assert "proxy rises while held-out falls" in flag["text"]
    assert "tiny-pickscore (proxy: same-data) 16.7% → 100.0%" in flag["text"]
    assert "oracle (gold, held out) 100.0% → 0.0%" in flag["text"]
    (quiet,) = [f for f in report_json["curve_flags"] if f["final_run_id"] == "sdpo-1"]
    assert "proxy rises while held-out falls" not in quiet["text"] and "no proxy rising" in quiet["text"]
    assert {tuple(sorted(p)) for p in report_json["curves"]} == {tuple(sorted(curves.POINT_KEYS))}


def test_a_held_out_fall_within_the_last_points_interval_raises_no_flag():
    def point(reward, relation, role, step, rate, lo, hi):
        return {"suite": "s", "final_run_id": "f", "run_id": "f", "method": "dpo", "reward": reward,
                "reward_version": "v1", "reward_relation": relation, "reward_role": role, "step": step,
                "win_rate": rate, "ci_low": lo, "ci_high": hi, "n": 10, "n_prompts": 5}

    proxy = [point("pick", "same-data", "preference", 1, 0.5, 0.4, 0.6), point("pick", "same-data", "preference",
                                                                                2, 0.9, 0.8, 1.0)]
    small_fall = [point("gold", None, "gold", 1, 0.60, 0.5, 0.7), point("gold", None, "gold", 2, 0.55, 0.45, 0.65)]
    big_fall = [point("gold", None, "gold", 1, 0.60, 0.5, 0.7), point("gold", None, "gold", 2, 0.45, 0.40, 0.50)]
    assert not curves.flags(proxy + small_fall)[0]["flagged"]  # fell 5 points, half-width 10
    assert curves.flags(proxy + big_fall)[0]["flagged"]  # fell 15 points, half-width 5
    falling_proxy = [dict(p, win_rate=r) for p, r in zip(proxy, (0.9, 0.5))]
    assert not curves.flags(falling_proxy + big_fall)[0]["flagged"]


def test_the_curves_section_has_a_chart_the_flags_and_a_table_per_run(md, html):
    folder, text = md
    section = text.split("### Training dynamics: reward over training steps")[1].split("### Image grids")[0]
    assert "](r_files/curves-" in section and len(list(folder.glob("curves-*.png"))) == 1
    assert "⚠ dpo: proxy rises while held-out falls" in section
    assert "| 300 (final) |" in section and "| step | fidelity win % [95% CI] |" in section
    assert "tiny-pickscore ‡ win % [95% CI]" in section  # the proxy marked as in every table
    assert "<h3>Training dynamics: reward over training steps</h3>" in html and "curves-" in html
    assert "<li>⚠ dpo: proxy rises while held-out falls." in html


# -- 2: diversity -------------------------------------------------------------------------------------------------


def _div(doc, run_id: str, subset: str, metric: str) -> dict:
    (row,) = [r for r in doc.diversity if r["run_id"] == run_id and r["subset"] == subset and r["metric"] == metric]
    return row


def test_diversity_compares_each_run_with_base_on_all_and_on_faithful_samples(doc):
    assert {r["space"] for r in doc.diversity} == {"fidelity-features"}
    dpo = _div(doc, "dpo-1", "all", "vendi")
    assert dpo["mean"] == pytest.approx(1.0) and dpo["base_mean"] > 1.5 and dpo["n_prompts"] == 12
    assert dpo["diff_ci_high"] < 0  # dpo's seeds collapse onto one image per prompt
    assert _div(doc, "dpo-1", "all", "mean_pairwise_distance")["mean"] == pytest.approx(0.0, abs=1e-6)
    sdpo = _div(doc, "sdpo-1", "all", "vendi")
    assert sdpo["diff_ci_low"] < 0 < sdpo["diff_ci_high"]  # seeds as varied as base's: no difference shown
    base = _div(doc, "base-1", "all", "vendi")
    assert base["base_run_id"] is None and base["diff"] is None
    # faithful: dpo's seed 2 has fidelity 0, so two images a prompt remain (every image of base is faithful)
    faithful = _div(doc, "dpo-1", "faithful", "vendi")
    assert (faithful["n_prompts"], faithful["mean"]) == (12, pytest.approx(1.0))
    assert _div(doc, "base-1", "faithful", "vendi")["mean"] == pytest.approx(base["mean"])
    assert all(set(r) == set(report_diversity.ROW_KEYS) for r in doc.diversity)


def test_the_diversity_section_sits_beside_the_win_rates_and_says_when_nothing_is_stored(md, bare):
    suite = md[1].split("## Suite tiny-eval")[1]
    assert suite.index("### tiny-pickscore (v1)") < suite.index("### Diversity across seeds") \
        < suite.index("### By category")
    assert "#### fidelity-features (v1), all samples" in suite and "#### fidelity-features (v1), faithful samples" \
        in suite
    all_samples = suite.split("all samples")[1].split("faithful samples")[0]
    (row,) = [line for line in all_samples.splitlines() if line.startswith("| dpo |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "12" and cells[5] == "1"  # prompts, dpo's Vendi score
    assert report_diversity.build(bare, ["dpo-1"]) == []
    nothing = assemble(bare, n_boot=100)
    assert render_md.render(nothing).count("Diversity across seeds: no image embeddings are stored for this suite") \
        == 1
    assert "<p class=note>Diversity across seeds: no image embeddings are stored" in render_html.render(nothing)
    assert json.loads(render_data.render_json(nothing))["diversity"] == []


def test_embeddings_the_measures_refuse_are_left_out_with_a_warning(tmp_path: Path):
    s = Store(tmp_path / "bench.duckdb")
    s.add_prompts(SUITE, [{"prompt_id": f"p{p:02d}", "prompt": f"prompt {p}", "category": None, "meta_json": None}
                          for p in range(2)])
    add_run(s, "base-1", "base", None, None, prompts=range(2))
    s.add_embeddings([("base-1/tiny-eval/0/0", "zeros", "v1", np.zeros(8)), ("base-1/tiny-eval/0/1", "zeros", "v1",
                                                                               np.ones(8))])
    doc = assemble(s, n_boot=50)
    assert {r["space"] for r in doc.diversity} == {"fidelity-features"}  # the other space still measured
    (warning,) = [w for w in doc.warnings if "diversity" in w]
    assert "space zeros (v1)" in warning and "all zeros" in warning


def test_embeddings_are_read_for_the_runs_asked_with_their_fidelity(store):
    frame = data.embeddings(store, ["base-1", "dpo-1-step100"])
    assert set(frame["run_id"]) == {"base-1", "dpo-1-step100"} and len(frame) == 36 + 18
    assert frame["embedding"].iloc[0].shape == (8,)
    fidelity = dict(zip(zip(frame["run_id"], frame["seed"]), frame["fidelity"]))
    assert fidelity[("base-1", 2)] == 1.0 and fidelity[("dpo-1-step100", 2)] == 0.0


# -- 3: training curves -------------------------------------------------------------------------------------------


def test_training_curves_per_family_prefer_the_relative_errors(doc):
    by = {(c["run_id"], c["name"]): c for c in doc.training}
    assert {name for rid, name in by if rid == "dpo-1"} == {"loss", "implicit_acc", "rel_err_w", "rel_err_l"}
    assert {name for rid, name in by if rid == "tailorpo-1"} == {"loss", "implicit_acc", "err_w", "err_l"}
    dpo, sdpo = by[("dpo-1", "rel_err_w")], by[("sdpo-1", "rel_err_w")]
    assert dpo["values"][-1] > 0 > sdpo["values"][-1]  # the winner's error rises under DPO, not under SDPO
    assert len(dpo["steps"]) == 300 and dpo["width"] == 1
    fams = {fam: (metrics, {c["method"] for c in cs}) for fam, metrics, cs in trainlog.families(doc.training)}
    assert fams["Diffusion-DPO"] == (["loss", "implicit_acc", "rel_err_w", "rel_err_l"], {"dpo", "sdpo",
                                                                                         "contrastive"})
    assert fams["tailorpo"][0] == ["loss", "implicit_acc", "err_w", "err_l"]
    assert trainlog.family("dpo@dpo-sdxl") == "Diffusion-DPO" and trainlog.family("self_npo") == "self_npo"


def test_long_training_logs_are_averaged_in_sql(store):
    frame = data.train_log(store, ["dpo-1"], ["loss"], points=30)
    assert len(frame) == 30 and (frame["width"] == 10).all() and (frame["n"] == 10).all()
    assert frame["step"].iloc[0] == pytest.approx(5.5) and frame["value"].iloc[0] == pytest.approx(0.7 - 0.0055)


def test_training_curves_are_drawn_one_chart_per_family(md, report_json):
    folder, text = md
    section = text.split("## Training curves")[1].split("## ")[0]
    charts = [line for line in section.splitlines() if line.startswith("![")]
    assert len(charts) == 2 and "Diffusion-DPO (contrastive, dpo, sdpo)" in charts[0] and "tailorpo" in charts[1]
    assert len(list(folder.glob("training-*.png"))) == 2
    assert {c["name"] for c in report_json["training_curves"] if c["run_id"] == "sdpo-1"} >= {"rel_err_w", "rel_err_l"}


# -- 4: the compute-matched frontier ------------------------------------------------------------------------------


def test_frontier_costs_amortise_training_and_join_best_of_n_by_n(doc):
    (block,) = [b for b in doc.frontier if b["suite"] == SUITE]
    assert (block["basis"], block["reward"], block["amortise"]) == ("gold", "oracle", 10_000)
    points = {p["run_id"]: p for p in block["points"]}
    assert points["dpo-1"]["cost_s"] == pytest.approx(1000 / 10_000 + 1 / 36)
    assert points["best_of_n-4"]["cost_s"] == pytest.approx(4 / 36) and points["best_of_n-4"]["n"] == 4
    assert points["base-1"]["win_rate"] == 0.5 and points["base-1"]["ci_low"] is None
    assert block["best_of_n"] == ["best_of_n-2", "best_of_n-4", "best_of_n-8"]
    assert points["best_of_n-8"]["win_rate"] == pytest.approx(10 / 12)
    assert set(points).isdisjoint(CHECKPOINT_RUNS) and "published-1" not in points
    # contrastive's CI starts between best_of_n N=4 (42%) and N=8 (83%): it beats what costs as much or less;
    # dpo's (50%, from 25%) does not reach above N=4
    con = points["contrastive-1"]
    assert 5 / 12 < con["ci_low"] < 10 / 12 and points["dpo-1"]["ci_low"] < 5 / 12
    beats = {b["run_id"]: b["cheaper"] for b in block["beats"]}
    assert beats == {"sdpo-1": ["best_of_n-2", "best_of_n-4"], "contrastive-1": ["best_of_n-2", "best_of_n-4"]}
    assert block["cheapest"] == ["tailorpo-1"]  # 100 s of training: cheaper than every best_of_n point


def test_amortising_over_fewer_images_changes_who_beats_best_of_n(store, doc):
    costs = summary.costs(store, doc.replicate_rows)
    n_of = {"best_of_n-2": 2, "best_of_n-4": 4, "best_of_n-8": 8}
    (block,) = [b for b in frontier.build(doc.replicate_rows, costs, n_of, amortise=100) if b["suite"] == SUITE]
    assert {b["run_id"] for b in block["beats"]} == {"sdpo-1"}  # N=8 is now cheaper than contrastive, and better
    with pytest.raises(ValueError, match="amortise"):
        frontier.build(doc.replicate_rows, costs, n_of, amortise=0)


def test_the_frontier_chart_table_and_sentence(store, md, report_json, tmp_path: Path):
    section = md[1].split("## Suite tiny-eval")[1].split("### Compute-matched frontier")[1].split("### By category")[0]
    assert "](r_files/frontier-" in section and "train s / 20,000 (training amortised over 20,000 images)" in section
    assert "| best\\_of\\_n N=4 |" in section and "| best\\_of\\_n N=8 |" in section
    ranking = md[1].split("### tiny-eval")[1].split("## Suite")[0]
    assert "| best\\_of\\_n N=8 |" in ranking  # every table tells best_of_n runs apart by N
    assert "sdpo (" in section and "beat every best_of_n point of lower or equal cost" in section
    assert "Cheaper than every best_of_n point, so not compared: tailorpo." in section
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert rows["contrastive"].rstrip(" |").endswith("yes") and rows["dpo"].rstrip(" |").endswith("no")
    block = next(b for b in report_json["frontier"] if b["suite"] == SUITE)
    assert block["amortise"] == 10_000 and "best_of_n N=2" in {p["label"] for p in block["points"]}
    assert "contrastive" in block["text"] and "sdpo" in block["text"]
    with pytest.raises(ValueError, match="amortise"):
        writer.write(store, "md", tmp_path / "bad.md", amortise=-1)


def test_without_a_gold_reward_the_frontier_uses_the_preference_reward_most_runs_are_held_out_from(doc):
    hpd = next(b for b in doc.frontier if b["suite"] == "hpdv2")
    assert (hpd["basis"], hpd["reward"], hpd["best_of_n"]) == ("preference", "hpsv2", [])
    rows = [dict(r, reward_role="preference") for r in doc.replicate_rows if r["suite"] == SUITE]
    (block,) = frontier.build(rows, doc.costs, {})
    assert block["reward"] == "fidelity"  # held out by every run; tiny-pickscore is a proxy of most


# -- 5: published numbers beside ours -----------------------------------------------------------------------------


def test_a_published_run_is_set_beside_the_papers_number(doc, md):
    (compared,) = [e for e in doc.papers if e["status"] == papers.COMPARED]
    assert (compared["checkpoint"], compared["suite"], compared["reward"], compared["statistic"]) == (
        "dpo-sdxl", "hpdv2", "hpsv2", "mean")
    assert compared["ours"] == pytest.approx(0.2816) and compared["verdict"] == "within CI"
    reference = [e for e in doc.papers if e["status"] == papers.REFERENCE]
    assert {(e["reward"], e["statistic"]) for e in reference} == {("human:general-preference", "win_rate_vs_base"),
                                                                  ("implicit-reward", "preference_accuracy")}
    assert all(e["checkpoint"] == "dpo-sdxl" for e in doc.papers)  # nothing of dpo-sd15: no run of it
    section = md[1].split("## Published results beside ours")[1].split("## Cost")[0]
    assert "| mean | 28.16 | 28.16 [27.69, 28.69] | within CI |" in section
    assert "reference only (a human judgement" in section and "70" in section


HPS_MEAN = next(n for n in checkpoints.PAPER_NUMBERS if n.reward == "hpsv2")  # dpo-sdxl on hpdv2: 28.16


def _number(value: float, statistic: str = "mean") -> checkpoints.PaperNumber:
    return dataclasses.replace(HPS_MEAN, value=value, statistic=statistic)


def test_the_mark_flips_between_within_ci_and_differs(store, monkeypatch):
    monkeypatch.setattr(checkpoints, "PAPER_NUMBERS", (_number(28.16), _number(20.0)))
    doc = assemble(store, n_boot=N_BOOT)
    verdicts = [(e["paper_value"], e["verdict"]) for e in doc.papers]
    assert verdicts == [(28.16, "within CI"), (20.0, "differs")]
    (compared,) = [e for e in doc.papers if e["paper_value"] == 20.0]
    assert not compared["ci_low"] <= 0.2 <= compared["ci_high"]
    monkeypatch.setattr(checkpoints, "PAPER_NUMBERS", (_number(100.0, "win_rate_vs_base"),
                                                       _number(40.0, "win_rate_vs_base")))
    doc = assemble(store, n_boot=N_BOOT)
    data_ = json.loads(render_data.render_json(doc))
    assert [(e["paper_value"], e["ours"], e["verdict"]) for e in data_["paper_comparison"]] == [
        (100.0, 1.0, "within CI"), (40.0, 1.0, "differs")]  # every published image beats base's 0.27
    html = render_html.render(doc)
    assert "<h2>Published results beside ours</h2>" in html and "<td>differs</td>" in html
    assert '<a href="#papers">' in html


def test_a_number_the_store_has_no_row_for_is_listed_as_not_measured(store, monkeypatch):
    monkeypatch.setattr(checkpoints, "PAPER_NUMBERS", (dataclasses.replace(HPS_MEAN, suite="parti"),))
    doc = assemble(store, n_boot=N_BOOT)
    (entry,) = doc.papers
    assert (entry["status"], entry["ours"], entry["verdict"]) == (papers.NOT_MEASURED, None, None)
    assert "not measured, the store holds no row of its checkpoint on suite parti and reward hpsv2" in \
        render_md.render(doc)


def test_a_store_without_them_has_none_of_the_new_sections(bare):
    doc = assemble(bare, n_boot=100)
    assert doc.papers == [] and doc.curves == [] and doc.training == [] and doc.diversity == []
    text = render_md.render(doc)
    assert "## Published results" not in text and "## Training curves" not in text
    assert "Training dynamics" not in text and "Intermediate checkpoints" not in text


def test_config_facts_read_what_the_report_needs_and_nothing_else():
    facts = data.config_facts(json.dumps({"method_config": {"steps": 300, "n": True}, "prompt_ids": ["a"],
                                          "published_weights": {"checkpoint": None}}))
    assert facts == {"steps": 300, "n": None, "published": None, "prompt_ids": ["a"]}
    assert data.config_facts("not json") == {"steps": None, "n": None, "published": None, "prompt_ids": None}


def test_rows_are_unchanged_by_the_checkpoint_runs(store):
    rows = report_rows.build(store, n_boot=100)
    assert {r["run_id"] for r in rows} == {"base-1", "dpo-1", "sdpo-1", "contrastive-1", "tailorpo-1",
                                           "best_of_n-2", "best_of_n-4", "best_of_n-8", "published-1"}
