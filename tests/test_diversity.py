"""Diversity across seeds: the two measures against hand-computed values, the report rows built on them,
and the two embedders on real images (the shipped tiny world's classifier, a tiny CLIP in the official
layout). The claim everything here protects: a method that draws the same image for every seed scores
no diversity, and its base, whose images differ, scores some."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.report import diversity as report
from hf_cache import isolated, snapshot
from metrics.core import diversity as div

E = np.eye(3)


# -- the measures, by hand ---------------------------------------------------------------------------
def test_orthogonal_rows_are_as_diverse_as_they_are_many():
    assert div.vendi_score(E) == pytest.approx(3.0, abs=1e-12)
    assert div.mean_pairwise_distance(E) == pytest.approx(1.0, abs=1e-12)


def test_identical_rows_count_once_whatever_their_length():
    same = np.array([[0.3, -1.2, 2.0]] * 3) * np.array([[1.0], [2.0], [7.5]])  # one direction, three norms
    assert div.vendi_score(same) == pytest.approx(1.0, abs=1e-12)
    assert div.mean_pairwise_distance(same) == pytest.approx(0.0, abs=1e-12)


def test_two_rows_sixty_degrees_apart():
    two = np.array([[1.0, 0.0], [math.cos(math.pi / 3), math.sin(math.pi / 3)]])
    # cos = 1/2, so the distance is 1/2; K/2 = [[1/2, 1/4], [1/4, 1/2]] has eigenvalues 3/4 and 1/4, and
    # exp(−(3/4 ln 3/4 + 1/4 ln 1/4)) = (4/3)^(3/4) · 4^(1/4).
    assert div.mean_pairwise_distance(two) == pytest.approx(0.5, abs=1e-12)
    assert div.vendi_score(two) == pytest.approx((4 / 3) ** 0.75 * 4 ** 0.25, abs=1e-12)


def test_more_rows_than_dimensions_uses_the_small_kernel():
    four = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])  # two directions, twice each
    # K/4 has eigenvalues 1/2, 1/2 (and two zeros): exp(ln 2) = 2. Of the 6 pairs, the 4 across are at 90°.
    assert div.vendi_score(four) == pytest.approx(2.0, abs=1e-12)
    assert div.mean_pairwise_distance(four) == pytest.approx(4 / 6, abs=1e-12)


def test_one_row_and_bad_rows():
    assert div.mean_pairwise_distance(np.ones((1, 4))) == 0.0
    assert div.vendi_score(np.ones((1, 4))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="all zeros"):
        div.vendi_score(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        div.mean_pairwise_distance(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        div.vendi_score(np.ones(3))


def test_grouped_measures_equal_the_one_set_measures():
    rng = np.random.default_rng(0)
    sizes = [1, 2, 3, 3, 5, 5, 5, 8]
    codes = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    emb = rng.normal(size=(codes.size, 6)).astype(np.float32)
    emb[codes == 4] = emb[codes == 4][0]  # group 4: one image drawn five times
    got = div.diversity_by_group(emb, codes)
    np.testing.assert_array_equal(got["n"], sizes)
    for g in range(len(sizes)):
        assert got["mean_pairwise_distance"][g] == pytest.approx(div.mean_pairwise_distance(emb[codes == g]), abs=1e-12)
        assert got["vendi"][g] == pytest.approx(div.vendi_score(emb[codes == g]), abs=1e-12)
    assert got["mean_pairwise_distance"][4] == 0.0  # exactly: ½|x̂ − x̂|² of a row with itself
    assert got["vendi"][4] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="every code used"):
        div.diversity_by_group(emb[:3], np.array([0, 2, 2]))


# -- the report rows ---------------------------------------------------------------------------------
def frame(runs: dict[str, np.ndarray], suite: str = "tiny", faithful: dict[str, np.ndarray] | None = None):
    """The rows of several runs: each (prompts, seeds, d) array is one embedding per (prompt, seed)."""
    parts = []
    for run, emb in runs.items():
        p, s, _ = emb.shape
        part = pd.DataFrame({"run_id": run, "suite": suite, "prompt_id": np.repeat(np.arange(p), s),
                             "seed": np.tile(np.arange(s), p), "embedding": list(emb.reshape(p * s, -1))})
        if faithful is not None:
            part["faithful"] = faithful[run].reshape(-1)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def by_key(rows, **where):
    found = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, found)
    return found[0]


def test_a_method_that_draws_one_image_per_prompt_has_no_diversity_and_less_than_its_base():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(30, 4, 8))
    collapsed = np.repeat(rng.normal(size=(30, 1, 8)), 4, axis=1)
    rows = report.rows(frame({"b": base, "m": collapsed}), {"b": None, "m": "b"}, space="toy",
                       methods={"b": "base", "m": "npo"}, n_boot=300)
    assert len(rows) == 4 and all(set(r) == set(report.ROW_KEYS) for r in rows)
    for metric, none in (("mean_pairwise_distance", 0.0), ("vendi", 1.0)):
        m = by_key(rows, run_id="m", metric=metric)
        b = by_key(rows, run_id="b", metric=metric)
        assert m["mean"] == pytest.approx(none, abs=1e-12) and b["mean"] > none + 0.3
        assert m["base_mean"] == pytest.approx(b["mean"]) and m["method"] == "npo" and m["base_run_id"] == "b"
        assert m["diff"] == pytest.approx(m["mean"] - m["base_mean"])
        assert m["diff_ci_low"] <= m["diff"] <= m["diff_ci_high"] < 0  # clearly below base
        assert m["n_prompts"] == 30 and m["subset"] == "all" and m["space"] == "toy"
        assert b["diff"] is None and b["diff_ci_low"] is None and b["base_run_id"] is None


def test_identical_runs_differ_by_a_point_interval_at_zero():
    emb = np.random.default_rng(2).normal(size=(12, 3, 5)).astype(np.float32)
    rows = report.rows(frame({"b": emb, "m": emb.copy()}), {"b": None, "m": "b"}, space="toy", n_boot=200)
    for metric in report.METRICS:
        r = by_key(rows, run_id="m", metric=metric)
        assert (r["diff"], r["diff_ci_low"], r["diff_ci_high"]) == (0.0, 0.0, 0.0)


def test_the_faithful_subset_counts_prompts_with_two_faithful_images_in_both_runs():
    rng = np.random.default_rng(3)
    base, method = rng.normal(size=(3, 4, 6)), rng.normal(size=(3, 4, 6))
    method[0, :2] = method[0, 0]  # prompt 0: its two faithful images are one image
    ok = {"b": np.ones((3, 4), dtype=bool),
          "m": np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=bool)}  # prompt 1: one faithful image
    f = frame({"b": base, "m": method}, faithful=ok)
    rows = report.rows(f, {"b": None, "m": "b"}, space="toy", n_boot=100)
    assert len(rows) == 8
    r = by_key(rows, run_id="m", subset="faithful", metric="mean_pairwise_distance")
    assert r["n_prompts"] == 2  # prompts 0 and 2
    table = report.per_prompt(f, space="toy")
    faithful_m = table[(table.run_id == "m") & (table.subset == "faithful")].set_index("prompt_id")
    assert faithful_m.loc[0, "mean_pairwise_distance"] == 0.0 and list(faithful_m.n_images) == [2, 3]
    expect = div.mean_pairwise_distance(method[2, :3])
    assert faithful_m.loc[2, "mean_pairwise_distance"] == pytest.approx(expect, abs=1e-12)
    assert r["mean"] == pytest.approx(expect / 2, abs=1e-12)
    assert by_key(rows, run_id="m", subset="all", metric="vendi")["n_prompts"] == 3
    none = report.rows(frame({"b": base, "m": method}, faithful={"b": ok["b"], "m": ok["m"] & False}),
                       {"b": None, "m": "b"}, space="toy", n_boot=100)
    gone = by_key(none, run_id="m", subset="faithful", metric="vendi")
    assert gone["n_prompts"] == 0 and gone["mean"] is None and gone["diff"] is None


def test_what_the_rows_refuse():
    f = frame({"b": np.ones((2, 2, 3)), "m": np.ones((2, 2, 3))})
    with pytest.raises(ValueError, match=r"no entry for runs \['m'\]"):
        report.rows(f, {"b": None}, space="toy")
    with pytest.raises(ValueError, match="base run x, which has no embeddings"):
        report.rows(f, {"b": None, "m": "x"}, space="toy")
    with pytest.raises(ValueError, match="name the embedding space"):
        report.rows(f, {"b": None, "m": "b"})
    with pytest.raises(ValueError, match="appears twice"):
        report.rows(pd.concat([f, f.iloc[:1]]), {"b": None, "m": "b"}, space="toy")
    with pytest.raises(ValueError, match="differ in length"):
        report.per_prompt(f.assign(embedding=[np.ones(3)] * 7 + [np.ones(2)]), space="toy")


def test_a_hundred_thousand_embeddings_take_seconds():
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(2, 12_500, 4, 64)).astype(np.float32)  # 2 runs x 12,500 prompts x 4 seeds
    f = frame({"b": emb[0], "m": emb[1]}, faithful={r: rng.random((12_500, 4)) < 0.8 for r in "bm"})
    start = time.perf_counter()
    rows = report.rows(f, {"b": None, "m": "b"}, space="toy", n_boot=1000)
    elapsed = time.perf_counter() - start
    assert len(rows) == 8 and by_key(rows, run_id="m", subset="all", metric="vendi")["n_prompts"] == 12_500
    assert elapsed < 20, f"{elapsed:.1f} s for 10^5 embeddings"


# -- the embedders -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fidelity():
    from bench.tiny import prepare
    from bench.tiny.files import WorldFiles
    from metrics.fidelity import Fidelity

    return Fidelity(WorldFiles(prepare.shipped_dir("default")).reward("fidelity")).load()


def renders(caption_text: str, seeds: list[int]) -> list[Image.Image]:
    from bench.tiny import world

    cap = world.parse_caption(caption_text)
    return [Image.fromarray((world.render([cap], seed=s)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            for s in seeds]


def test_fidelity_features_are_what_the_classifier_decides_from(fidelity):
    embedder = div.embedder_for(fidelity)
    assert isinstance(embedder, div.FidelityFeatures) and embedder.version.endswith(fidelity.version)
    prompt = "a large red circle on a white background"
    images = renders(prompt, [0, 1, 2, 3, 4])
    emb = embedder.embed(images)
    assert emb.shape == (5, 64) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb, embedder.embed(images))  # deterministic
    np.testing.assert_allclose(emb[2:3], embedder.embed(images[2:3]), atol=1e-5)  # batch-independent
    with torch.no_grad():  # the two heads on these features give the fidelity score
        h = torch.from_numpy(emb)
        shape, colour = fidelity.net.shape_head(h).argmax(1), fidelity.net.colour_head(h).argmax(1)
    target = fidelity._target(prompt)
    expected = ((shape == target[0]) & (colour == target[1])).double().numpy()
    np.testing.assert_array_equal(expected, fidelity.score(images, [prompt] * 5))


def test_a_method_repeating_one_image_has_no_diversity_in_the_fidelity_space(fidelity):
    embedder = div.FidelityFeatures(fidelity)
    prompts = ["a large red circle on a white background", "a blue square on a gray background",
               "a small green triangle on a black background"]
    seeds = [0, 1, 2, 3]
    base = np.stack([embedder.embed(renders(p, [10 * i + s for s in seeds])) for i, p in enumerate(prompts)])
    same = np.stack([embedder.embed(renders(p, [10 * i] * 4)) for i, p in enumerate(prompts)])  # one image, 4 seeds
    rows = report.rows(frame({"base": base, "m": same}), {"base": None, "m": "base"}, space=embedder.id, n_boot=200)
    for metric, none in (("mean_pairwise_distance", 0.0), ("vendi", 1.0)):
        assert by_key(rows, run_id="m", metric=metric)["mean"] == pytest.approx(none, abs=1e-9)
        assert by_key(rows, run_id="base", metric=metric)["mean"] > none + 1e-3
        assert by_key(rows, run_id="m", metric=metric)["diff"] < 0


def test_clip_embeddings_are_the_image_side_of_the_clip_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from test_rewards_real import PROMPTS, images, save_tiny_clip
    from transformers import CLIPModel, CLIPTokenizer

    from metrics.clip import ClipScore

    hub = isolated(tmp_path, monkeypatch, "BENCH_WEIGHTS", "weights")
    folder = save_tiny_clip(tmp_path / "clip", seed=0)
    snapshot(hub["cache"], "openai/clip-vit-large-patch14", files=folder)
    reward = ClipScore(None).load()
    embedder = div.embedder_for(reward)
    assert isinstance(embedder, div.ClipImage)
    emb = embedder.embed(images())
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb, embedder.embed(images()))
    np.testing.assert_allclose(emb[1:], embedder.embed(images()[1:]), atol=1e-5)
    model = CLIPModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        txt = model.get_text_features(**CLIPTokenizer.from_pretrained(str(folder))(PROMPTS, padding=True,
                                                                                   return_tensors="pt")).pooler_output
    cos = torch.nn.functional.cosine_similarity(torch.from_numpy(emb), txt, dim=-1).numpy()
    np.testing.assert_allclose(reward.score(images(), PROMPTS), np.maximum(100 * cos, 0), atol=1e-3)


def test_embedders_refuse_other_rewards(fidelity):
    class Other:
        id = "pickscore"

    with pytest.raises(ValueError, match="available: clip, fidelity"):
        div.embedder_for(Other())
    with pytest.raises(ValueError, match="needs the loaded 'clip' reward"):
        div.ClipImage(fidelity)
    with pytest.raises(ValueError, match="no images"):
        div.FidelityFeatures(fidelity).embed([])
