"""Self-NPO: the pure pieces against hand-computed values, the truncated teacher rollout, training, sampling."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench.registry import METHODS
from method_helpers import make_context, short_config
from methods.core.diffusion import (cfg, cfg_denoiser, ddim_eps, ddim_x0, encode_prompts, encode_uncond, generate,
                                    train_scheduler, unet_eps)
from methods.core.training import load_trained_unet
from methods.self_npo import (SelfNPO, SelfNPOConfig, ddim_grid, ema_update, forward_transition, mix_weights,
                              negative_guidance, pseudo_huber, student_timesteps, teacher_rollout)


def test_ddim_grid_is_the_codes_solver_grid():
    grid = ddim_grid(1000, 25)
    assert grid[:3].tolist() == [39, 79, 119] and grid[-1] == 999 and len(grid) == 25
    assert ddim_grid(1000, 1).tolist() == [999]


def test_ddim_x0_and_eps_hand_computed():
    abar, x, out = torch.tensor(0.64), torch.tensor([1.0]), torch.tensor([0.5])  # α = 0.8, σ = 0.6
    assert ddim_x0(out, x, abar, "epsilon").item() == pytest.approx((1 - 0.6 * 0.5) / 0.8)  # 0.875
    assert ddim_x0(out, x, abar, "v_prediction").item() == pytest.approx(0.8 * 1 - 0.6 * 0.5)  # 0.5
    assert ddim_eps(out, x, abar, "epsilon").item() == 0.5
    assert ddim_eps(out, x, abar, "v_prediction").item() == pytest.approx(0.8 * 0.5 + 0.6 * 1)  # 1.0
    with pytest.raises(ValueError, match="available: epsilon, v_prediction"):
        ddim_x0(out, x, abar, "sample")


def test_negative_guidance_hand_computed_and_commutes_with_x0():
    c, u = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0])
    assert torch.equal(negative_guidance(c, u, -1.0), u)  # SD1.5: the unconditional prediction
    assert negative_guidance(c, u, -5.0).tolist() == [11.0, -8.0]  # SDXL: c − 5(c − u) = 5u − 4c
    # guiding the ε outputs and then converting equals guiding the x̂0s (weights sum to 1)
    x, abar = torch.tensor([0.3, -1.2]), torch.tensor(0.5)
    torch.testing.assert_close(ddim_x0(negative_guidance(c, u, -5.0), x, abar, "epsilon"),
                               negative_guidance(ddim_x0(c, x, abar, "epsilon"), ddim_x0(u, x, abar, "epsilon"), -5.0))


def test_forward_transition_hand_computed():
    # ᾱ_t = 0.8 (σ²/α² = 0.25), ᾱ_s = 4/9 (σ²/α² = 1.25, α_s = 2/3): √(1.25 − 0.25) = 1
    x_t = torch.tensor([2 * math.sqrt(0.8)])  # x_t/α_t = 2
    x_s = forward_transition(x_t, torch.tensor(0.8), torch.tensor(4 / 9), torch.tensor([1.0]))
    assert x_s.item() == pytest.approx(2 / 3 * (2 + 1))


def test_forward_transition_keeps_the_marginal():
    """x_t ~ N(α_t x0, σ_t²)  ->  x_s ~ N(α_s x0, σ_s²)."""
    g = torch.Generator().manual_seed(0)
    n, x0 = 200_000, torch.tensor([1.5, -0.5])
    abar_t, abar_s = torch.tensor(0.9), torch.tensor(0.3)
    x_t = abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x_s = forward_transition(x_t, abar_t.double(), abar_s.double(), torch.randn(n, 2, generator=g, dtype=torch.float64))
    torch.testing.assert_close(x_s.mean(0), (abar_s.sqrt() * x0).double(), atol=0.01, rtol=0)
    torch.testing.assert_close(x_s.var(0), (1 - abar_s).double().expand(2), atol=0.01, rtol=0)


def test_pseudo_huber_hand_computed():
    pred, target = torch.tensor([0.0, 4.0]), torch.tensor([0.0, 0.0])
    assert pseudo_huber(pred, target, 3.0).item() == pytest.approx((0 + (5 - 3)) / 2)  # √(16 + 9) − 3 = 2
    # with the code's c = 0.001 it is L1 up to c: (√(1 + 1e-6) − 1e-3 + 0) / 2
    assert pseudo_huber(torch.tensor([1.0, 0.0]), torch.zeros(2), 0.001).item() == pytest.approx(
        (math.sqrt(1 + 1e-6) - 1e-3) / 2, rel=1e-6)


def test_student_timesteps_strictly_noisier():
    t = torch.tensor([0, 959, 998])
    assert student_timesteps(t, 1000, torch.zeros(3)).tolist() == [1, 960, 999]
    assert student_timesteps(t, 1000, torch.full((3,), 0.999999)).tolist() == [999, 999, 999]
    u = torch.rand(10_000, generator=torch.Generator().manual_seed(0))
    s = student_timesteps(torch.full((10_000,), 500), 1000, u)
    assert s.min() == 501 and s.max() == 999  # uniform on {t+1, …, 999}


def test_ema_and_weight_mixing():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before, source = [p.detach().clone() for p in a.parameters()], [p.detach().clone() for p in b.parameters()]
    ema_update(a, b, 0.9)
    for p, p0, s in zip(a.parameters(), before, source):
        torch.testing.assert_close(p.detach(), 0.9 * p0 + 0.1 * s)
    base = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([7])}
    trained = {"w": torch.tensor([3.0, 0.0]), "n": torch.tensor([9])}
    assert mix_weights(base, trained, 0.5)["w"].tolist() == [2.0, 1.0]
    assert torch.equal(mix_weights(base, trained, 1.0)["w"], trained["w"])
    assert mix_weights(base, trained, 0.5)["n"].tolist() == [7]  # non-float entries come from the base


def _world(pipe, b: int):
    sched = train_scheduler(pipe)
    abar = sched.alphas_cumprod.float()
    return abar, ddim_grid(1000, 25), encode_prompts(pipe, ["a cat", "a dog", "cat"][:b]), encode_uncond(pipe, b)


def test_teacher_rollout_matches_a_hand_loop_and_stops_at_zero(tiny_sd):
    abar, grid, cond, uncond = _world(tiny_sd, 2)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    k = torch.tensor([3, 0])  # rows start at t = 159 and t = 39
    x_t, t, x0 = teacher_rollout(tiny_sd.unet, x, k, cond, uncond, abar, grid, 2, -1.0, "epsilon")
    assert t.tolist() == [79, 0]  # 159 → 119 → 79;  39 → 0, then stays

    def hand(row: int, ts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        xr, u = x[row:row + 1], uncond.index(slice(row, row + 1))
        with torch.no_grad():
            for t_now, t_next in zip(ts, ts[1:] + [None]):
                eps = unet_eps(tiny_sd.unet, xr, torch.tensor([t_now]), u)
                x0r = (xr - (1 - abar[t_now]).sqrt() * eps) / abar[t_now].sqrt()
                if t_next is None:
                    return xr, x0r
                xr = abar[t_next].sqrt() * x0r + (1 - abar[t_next]).sqrt() * eps
        raise AssertionError

    for row, ts in [(0, [159, 119, 79]), (1, [39, 0, 0])]:
        x_hand, x0_hand = hand(row, ts)
        torch.testing.assert_close(x_t[row:row + 1], x_hand, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(x0[row:row + 1], x0_hand, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("w, rows_per_call", [(-1.0, 2), (-5.0, 4)])
def test_teacher_skips_the_conditional_forward_only_when_w_is_minus_one(tiny_sd, monkeypatch, w, rows_per_call):
    abar, grid, cond, uncond = _world(tiny_sd, 2)
    calls = []
    original = tiny_sd.unet.forward
    def forward(x, t, **kw):
        calls.append((x.shape[0], kw["encoder_hidden_states"]))
        return original(x, t, **kw)

    monkeypatch.setattr(tiny_sd.unet, "forward", forward)
    teacher_rollout(tiny_sd.unet, torch.randn(2, 4, 8, 8), torch.tensor([24, 10]), cond, uncond, abar, grid, 5, w,
                    "epsilon")
    assert len(calls) == 6 and all(n == rows_per_call for n, _ in calls)  # K + 1 = 6 teacher evaluations
    if w == -1.0:
        assert all(torch.equal(e, uncond.embeds) for _, e in calls)


@pytest.mark.parametrize("field, value, message", [
    ("teacher_steps", 0, "teacher_steps"), ("ema_decay", 1.0, "ema_decay"), ("huber_c", 0.0, "huber_c"),
    ("micro_batch", 99, "micro_batch"), ("optimizer", "sgd", "available: adamw, adamw8bit, adafactor"),
    ("neg_weight", -0.5, "neg_weight"), ("grid_steps", 0, "grid_steps"),
])
def test_validate_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        SelfNPO(replace(SelfNPOConfig(), **{field: value}))


def test_registry_and_defaults():
    assert METHODS.get("self_npo") is SelfNPO
    for values in SelfNPO.defaults.values():
        SelfNPO(SelfNPOConfig(**values))
    assert SelfNPO.defaults["sdxl"]["teacher_guidance"] == -5.0 and SelfNPO.defaults["sd15"]["teacher_guidance"] == -1.0
    assert "neg_weight" not in SelfNPOConfig().train_fields()  # sample-only: the artifact is shared


def _probe(pipe):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    return x, torch.tensor([900, 200]), encode_prompts(pipe, ["a cat", "a dog"]), encode_uncond(pipe, 2)


def test_train_reload_and_negative_branch(tiny_sd, tmp_path):
    base = {k: v.clone() for k, v in tiny_sd.unet.state_dict().items()}
    method = SelfNPO(short_config(SelfNPO, steps=3, micro_batch=1, guidance_scale=3.0))
    ctx, logs = make_context(tiny_sd, tmp_path)
    method.train(ctx)
    assert [s for s, _ in logs] == [1, 2, 3]
    assert {"loss", "grad_norm", "lr", "t_start", "t_target", "s"} <= set(logs[0][1])
    assert all(v["t_target"] < v["s"] for _, v in logs)  # the student always sees a noisier input
    assert all(torch.equal(v, base[k]) for k, v in tiny_sd.unet.state_dict().items())  # pipe.unet untouched
    trained = load_trained_unet(tiny_sd, tmp_path)
    x, t, c, u = _probe(tiny_sd)
    with torch.no_grad():
        eps = method.denoiser(tiny_sd, tmp_path, lambda _: Path())(x, t, c, u)
        # the trained model predicts ONLY the unconditional branch; the base keeps the conditional one
        hand = cfg(unet_eps(trained, x, t, u), unet_eps(tiny_sd.unet, x, t, c), 3.0)
        base_eps = cfg_denoiser(tiny_sd.unet, tiny_sd.unet, 3.0)(x, t, c, u)
        zero = SelfNPO(replace(method.cfg, neg_weight=0.0)).denoiser(tiny_sd, tmp_path, lambda _: Path())(x, t, c, u)
    torch.testing.assert_close(eps, hand, atol=1e-5, rtol=1e-4)
    assert (eps - base_eps).abs().max() > 1e-4
    torch.testing.assert_close(zero, base_eps, atol=1e-5, rtol=1e-4)  # β_mix = 0: the negative is the base
    den = method.denoiser(tiny_sd, tmp_path, lambda _: Path())
    first = generate(tiny_sd, den, ["a cat", "a dog"], [1, 2], steps=3)
    assert torch.equal(first, generate(tiny_sd, den, ["a cat", "a dog"], [1, 2], steps=3))
    with pytest.raises(ValueError, match="train it first"):
        method.denoiser(tiny_sd, None, lambda _: Path())


def test_training_is_deterministic_for_a_seed(tiny_sd, tmp_path):
    def run(seed: int, out: Path) -> list[float]:
        ctx, logs = make_context(tiny_sd, out)
        SelfNPO(short_config(SelfNPO, seed=seed, teacher_guidance=-5.0)).train(ctx)
        return [v["loss"] for _, v in logs] + [v["s"] for _, v in logs]

    assert run(0, tmp_path / "a") == run(0, tmp_path / "b") != run(1, tmp_path / "c")


def test_trains_on_the_sdxl_layout_with_guided_teacher(tiny_sdxl, tmp_path):
    ctx, logs = make_context(tiny_sdxl, tmp_path)
    # w = −5, added cond; AdamW for the recipe's 8-bit AdamW, whose package is optional
    SelfNPO(short_config(SelfNPO, model="sdxl", steps=2, micro_batch=0, lr=1e-3, optimizer="adamw")).train(ctx)
    assert [s for s, _ in logs] == [1, 2] and all(math.isfinite(v["loss"]) for _, v in logs)
    assert (tmp_path / "unet").is_dir()
