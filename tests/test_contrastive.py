"""Preference guidance (PGD / cPGD): the guidance rule by hand, its combination with CFG, SFT on one
image of each pair, the artifact layout, and the number of batched UNet calls per step."""

from __future__ import annotations

import pytest
import torch

from bench.registry import METHODS
import methods.contrastive as contrastive
from method_helpers import make_context, pair_data, short_config, train_method
from methods.contrastive import ContrastiveConfig, ContrastiveGuidance, contrastive_guidance, sft_errors
from methods.core import diffusion as D
from methods.core import pairs as P
from methods.core.training import load_trained_unet


def test_contrastive_guidance_hand_computed():
    base, pos, neg = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.0, 1.0]), torch.tensor([2.0, 1.0, 1.0])
    # base + 10·(pos − neg): 1 + 10 = 11; −2 − 10 = −12; 0.5 + 0 = 0.5
    assert contrastive_guidance(base, pos, neg, 10.0).tolist() == [11.0, -12.0, 0.5]
    assert torch.equal(contrastive_guidance(base, pos, neg, 0.0), base)
    # PGD: ε_neg = ε_base gives (1 − s)·ε_base + s·ε_DPO; s = 1 is the DPO model itself
    assert torch.equal(contrastive_guidance(base, pos, base, 1.0), pos)


def test_guidance_then_cfg_equals_cfg_of_base_plus_weighted_deltas():
    g_ = torch.Generator().manual_seed(0)
    bu, bc, pu, pc, nu, nc = (torch.randn(2, 4, 3, 3, generator=g_) for _ in range(6))
    s, g = 2.5, 7.0
    got = D.cfg(contrastive_guidance(bu, pu, nu, s), contrastive_guidance(bc, pc, nc, s), g)
    want = D.cfg(bu, bc, g) + s * ((1 - g) * (pu - nu) + g * (pc - nc))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_config_and_validation():
    assert METHODS.get("contrastive") is ContrastiveGuidance
    cfg = ContrastiveConfig()
    assert (cfg.variant, cfg.strength, cfg.keep_ties) == ("cpgd", 10.0, False)
    assert "strength" not in cfg.train_fields() and "variant" in cfg.train_fields()
    assert ContrastiveGuidance(cfg).requires() == [] == ContrastiveGuidance(ContrastiveConfig(variant="pgd")).requires()
    # scripts/train_sdxl_pgd.sh: PGD's DPO module at 1e-9 × 2048, ten times below dpo's launcher lr
    sdxl = ContrastiveConfig(**ContrastiveGuidance.defaults["sdxl"], variant="pgd")
    assert (sdxl.lr, sdxl.beta, sdxl.warmup_steps) == (2.048e-6, 5000.0, 200)
    assert sdxl.lr == METHODS.get("dpo").defaults["sdxl"]["lr"] / 10
    for values, message in [({"variant": "cfg"}, "available: cpgd, pgd"), ({"strength": -1.0}, "strength"),
                            ({"keep_ties": True}, "keep_ties")]:
        with pytest.raises(ValueError, match=message):
            ContrastiveGuidance(ContrastiveConfig(**values))
    for values in ContrastiveGuidance.defaults.values():
        ContrastiveGuidance(ContrastiveConfig(**values))


def test_sft_errors_use_one_image_and_no_reference(tiny_sd):
    data = pair_data(tiny_sd, n=3, ties=0)
    other = P.subset(data, torch.arange(3))
    other.latents_l = torch.randn_like(data.latents_l)  # the loser must not matter to θ₊
    sched = D.train_scheduler(tiny_sd)

    def err(side, batch, seed=0):
        with torch.no_grad():
            return sft_errors(side)(tiny_sd.unet, None, batch, sched, torch.Generator().manual_seed(seed))

    assert err("w", data).shape == (3,)
    assert torch.equal(err("w", data), err("w", other)) and not torch.equal(err("l", data), err("l", other))
    # the same noise and timestep per row for both modules (same seed): only the image differs
    swapped = P.subset(data, torch.arange(3))
    swapped.latents_w, swapped.latents_l = data.latents_l, data.latents_w
    assert torch.equal(err("l", data), err("w", swapped))


def test_train_writes_positive_and_negative(tiny_sd, tmp_path):
    method = ContrastiveGuidance(short_config(ContrastiveGuidance, steps=2))
    ctx, logs = make_context(tiny_sd, tmp_path, pairs=pair_data(tiny_sd, n=4, ties=1))
    method.train(ctx)
    assert (tmp_path / "positive" / "unet").is_dir() and (tmp_path / "negative" / "unet").is_dir()
    names = {k for _, v in logs for k in v}
    assert {"positive/loss", "negative/loss", "positive/grad_norm"} <= names
    assert not any("err_w" in k for k in names)  # SFT logs its own loss only
    pos = load_trained_unet(tiny_sd, tmp_path / "positive")
    neg = load_trained_unet(tiny_sd, tmp_path / "negative")
    diff = max((a - b).abs().max() for a, b in zip(pos.parameters(), neg.parameters()))
    assert diff > 0  # different images, different modules


def _count_calls(monkeypatch):
    calls = []
    real = D.unet_eps
    def counted(unet, x, t, cond):
        calls.append((unet, x.shape[0]))
        return real(unet, x, t, cond)

    monkeypatch.setattr(D, "unet_eps", counted)  # the calls of unet_eps_both
    monkeypatch.setattr(contrastive, "unet_eps", counted)  # the direct calls (guidance 1)
    return calls


def _probe(pipe):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    return x, torch.tensor([700, 40]), D.encode_prompts(pipe, ["a cat", "a dog"]), D.encode_uncond(pipe, 2)


@pytest.mark.parametrize("pipe_name", ["tiny_sd", "tiny_sdxl"])
def test_cpgd_step_is_three_batched_calls_and_matches_the_formula(pipe_name, request, tmp_path, monkeypatch):
    pipe = request.getfixturevalue(pipe_name)
    method = ContrastiveGuidance(short_config(ContrastiveGuidance, strength=3.0, guidance_scale=5.0))
    artifacts = train_method(method, pipe, tmp_path)
    calls = _count_calls(monkeypatch)
    den = method.denoiser(pipe, artifacts("contrastive"), artifacts)
    pos = load_trained_unet(pipe, tmp_path / "contrastive" / "positive")
    neg = load_trained_unet(pipe, tmp_path / "contrastive" / "negative")
    x, t, c, u = _probe(pipe)
    with torch.no_grad():
        got = den(x, t, c, u)
    assert [n for _, n in calls] == [4, 4, 4]  # base, θ₊, θ₋: each on [uncond; cond] in one call
    assert len({id(unet) for unet, _ in calls}) == 3
    with torch.no_grad():
        eps = {name: (D.unet_eps(m, x, t, u), D.unet_eps(m, x, t, c)) for name, m in
               [("base", pipe.unet), ("pos", pos), ("neg", neg)]}
    delta_u, delta_c = (eps["pos"][i] - eps["neg"][i] for i in (0, 1))
    want = D.cfg(*eps["base"], 5.0) + 3.0 * ((1 - 5.0) * delta_u + 5.0 * delta_c)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="train it first"):
        method.denoiser(pipe, None, artifacts)


def test_pgd_trains_a_dpo_module_and_guides_with_it_in_two_calls(tiny_sd, tmp_path, monkeypatch):
    method = ContrastiveGuidance(short_config(ContrastiveGuidance, variant="pgd", strength=2.0, guidance_scale=4.0))
    logs: list = []
    artifacts = train_method(method, tiny_sd, tmp_path, logs)  # stacks on nothing: its own DPO module
    assert (tmp_path / "contrastive" / "unet").is_dir() and not (tmp_path / "contrastive" / "positive").exists()
    assert {"implicit_acc", "err_w", "err_l"} <= set(logs[0][1])  # the DPO objective, not SFT
    assert logs[0][1]["loss"] == pytest.approx(0.6931, abs=1e-4)  # the module starts at the reference
    calls = _count_calls(monkeypatch)
    den = method.denoiser(tiny_sd, artifacts("contrastive"), artifacts)
    dpo = load_trained_unet(tiny_sd, artifacts("contrastive"))
    x, t, c, u = _probe(tiny_sd)
    with torch.no_grad():
        got = den(x, t, c, u)
    assert [n for _, n in calls] == [4, 4]
    with torch.no_grad():
        base = [D.unet_eps(tiny_sd.unet, x, t, v) for v in (u, c)]
        pgd = [b + 2.0 * (D.unet_eps(dpo, x, t, v) - b) for b, v in zip(base, (u, c))]
    torch.testing.assert_close(got, D.cfg(*pgd, 4.0), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"contrastive \(pgd\) samples with its DPO module: train it first"):
        method.denoiser(tiny_sd, None, artifacts)


def test_guidance_one_evaluates_only_the_conditional_rows(tiny_sd, tmp_path, monkeypatch):
    method = ContrastiveGuidance(short_config(ContrastiveGuidance, guidance_scale=1.0, strength=2.0))
    artifacts = train_method(method, tiny_sd, tmp_path)
    calls = _count_calls(monkeypatch)
    den = method.denoiser(tiny_sd, artifacts("contrastive"), artifacts)
    x, t, c, u = _probe(tiny_sd)
    with torch.no_grad():
        assert den(x, t, c, u).shape == x.shape
    assert [n for _, n in calls] == [2, 2, 2]
