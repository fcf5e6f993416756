"""TailorPO: the transition log-prob algebra and loss against hand-computed values, reward ranking,
TailorPO-G's move, the shared loop's rollout hook, training and sampling."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler

from bench.registry import METHODS
from method_helpers import make_context, short_config, toy_reward
from methods.core.diffusion import (cfg_denoiser, ddim_transition, ddim_x0, decode_latents, encode_prompts,
                                    encode_uncond, generate, sample_latents, unet_eps)
from methods.core.training import load_trained_unet
from methods.tailorpo import (TailorPO, TailorPOConfig, guidance_step, rank_pair, reward_fn, step_rewards,
                              tailorpo_loss, transition_logp_diff)


def test_logp_diff_hand_computed_and_matches_gaussian_log_probs():
    x_w, x_l = torch.tensor([[1.0, 0.0]]).view(1, 2, 1, 1), torch.zeros(1, 2, 1, 1)
    # per element ((x_l − μ)² − (x_w − μ)²)/(2σ²) with μ = 0, σ = 0.5: (0 − 1)/0.5 = −2 and 0; mean −1
    assert transition_logp_diff(x_w, x_l, torch.zeros(1, 2, 1, 1), torch.tensor(0.5)).item() == pytest.approx(-1.0)
    g = torch.Generator().manual_seed(0)
    x_w, x_l, mean = (torch.randn(3, 4, 2, 2, generator=g) for _ in range(3))
    normal = torch.distributions.Normal(mean, 0.7)
    expected = (normal.log_prob(x_w) - normal.log_prob(x_l)).mean(dim=(1, 2, 3))
    torch.testing.assert_close(transition_logp_diff(x_w, x_l, mean, torch.tensor(0.7)), expected)


def test_loss_hand_computed():
    one = lambda v: torch.tensor(v).view(1, 1, 1, 1)  # noqa: E731
    # σ = 1, x^w = 1, x^l = −1: d_θ(μ_θ = 0.5) = ((−1.5)² − 0.5²)/2 = 1, d_ref(μ_ref = 0) = (1 − 1)/2 = 0
    loss, z, acc = tailorpo_loss(one(1.0), one(-1.0), one(0.5), one(0.0), torch.tensor(1.0), beta=2.0)
    assert z.item() == pytest.approx(2.0) and loss.item() == pytest.approx(math.log(1 + math.exp(-2.0)))
    assert acc.item() == 1.0
    x = torch.randn(4, 4, 2, 2)
    loss, z, acc = tailorpo_loss(x, -x, x.flip(0), x.flip(0), torch.tensor(0.3), beta=10.0)
    assert loss.item() == pytest.approx(math.log(2)) and torch.all(z == 0) and acc.item() == 0  # policy = reference


def test_gradient_moves_the_policy_mean_towards_the_winner():
    g = torch.Generator().manual_seed(1)
    x_w, x_l, ref = (torch.randn(2, 4, 2, 2, generator=g) for _ in range(3))
    mean = torch.nn.Parameter(ref.clone())
    loss, _, _ = tailorpo_loss(x_w, x_l, mean, ref, torch.tensor(0.5), beta=10.0)
    loss.backward()
    step = -mean.grad  # gradient descent direction: ∝ (x^w − x^l)
    assert ((step * (x_w - x_l)).sum(dim=(1, 2, 3)) > 0).all()


def test_rank_pair_uses_the_scores():
    cands = torch.stack([torch.zeros(3, 1, 1, 1), torch.ones(3, 1, 1, 1)])  # candidate 1 = 0, candidate 2 = 1
    x_w, x_l, first = rank_pair(cands, torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5]]))
    assert x_w.flatten().tolist() == [0, 1, 0] and x_l.flatten().tolist() == [1, 0, 1]  # tie -> first
    assert first.tolist() == [True, False, True]


def test_guidance_step_hand_computed():
    grad = torch.tensor([3.0, 4.0]).view(1, 1, 1, 2)  # rms = √12.5
    moved = guidance_step(torch.zeros(1, 1, 1, 2), grad, torch.tensor(2.0), 0.5, torch.tensor([1.0]))
    torch.testing.assert_close(moved.flatten(), torch.tensor([3.0, 4.0]) / math.sqrt(12.5))  # 0.5·2·g/rms
    down = guidance_step(torch.zeros(1, 1, 1, 2), grad, torch.tensor(2.0), 0.5, torch.tensor([-1.0]))
    torch.testing.assert_close(down, -moved)
    # ‖Δx‖ = η·σ·√(C·H·W): a step in units of the transition noise, whatever the reward's scale
    big = guidance_step(torch.zeros(1, 4, 8, 8), 1000 * torch.randn(1, 4, 8, 8), torch.tensor(0.3), 0.5,
                        torch.tensor([1.0]))
    assert big.norm().item() == pytest.approx(0.5 * 0.3 * 16, rel=1e-5)


class BrightnessReward:
    """The bench interface (a Reward with score_tensor / score) around the helpers' brightness toy."""

    def score_tensor(self, images, prompts):
        return toy_reward(images, prompts)

    def score(self, images, prompts):
        return toy_reward(images, prompts).numpy()


def test_reward_fn_accepts_reward_objects_and_callables():
    r = BrightnessReward()
    assert reward_fn(r) == r.score_tensor and reward_fn(toy_reward) is toy_reward
    with pytest.raises(TypeError, match="score_tensor"):
        reward_fn(3)


def test_ddim_transition_is_diffusers_ddim_step(tiny_sd):
    sched = DDIMScheduler.from_config(tiny_sd.scheduler.config)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(2)
    x, eps, z = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    for t in [int(sched.timesteps[3]), int(sched.timesteps[-1])]:  # a middle step and the last (prev < 0)
        prev = t - 100
        a_t = sched.alphas_cumprod[t]
        a_prev = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
        mean, std = ddim_transition(ddim_x0(eps, x, a_t, "epsilon"), eps, a_t, a_prev, 1.0)
        expected = sched.step(eps, t, x, eta=1.0, variance_noise=z).prev_sample
        torch.testing.assert_close(mean + std * z, expected, atol=1e-5, rtol=1e-5)
        assert std > 0


def test_sample_latents_stop_and_step_hooks(tiny_sd):
    den = cfg_denoiser(tiny_sd.unet, tiny_sd.unet, 3.0)
    c, u = encode_prompts(tiny_sd, ["a cat"]), encode_uncond(tiny_sd, 1)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def run(**kw):
        return sample_latents(tiny_sd, den, c, u, noise, 4, DDIMScheduler.from_config(tiny_sd.scheduler.config), **kw)

    assert torch.equal(run(), run(stop_after=4)) and torch.equal(run(stop_after=0), noise)  # init sigma 1

    def noisy(seed: int) -> torch.Tensor:
        return run(stop_after=2, step_kwargs={"eta": 1.0, "generator": torch.Generator().manual_seed(seed)})

    assert torch.equal(noisy(0), noisy(0)) and not torch.equal(noisy(0), noisy(1))
    assert not torch.equal(noisy(0), run(stop_after=2))


def _candidates(pipe, t_prev: int):
    b = 3
    cond, uncond = encode_prompts(pipe, ["a cat", "a dog", "cat"]), encode_uncond(pipe, b)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    a_prev = sched.alphas_cumprod[t_prev] if t_prev >= 0 else sched.final_alpha_cumprod
    cands = torch.randn(2, b, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    return cands, a_prev, cond, uncond


def _brightness(pipe, x, t_prev, a_prev, cond, uncond, g):
    """Independent computation of each candidate's decoded-x̂0 brightness."""
    cond, uncond = cond.repeat(x.shape[0] // len(cond)), uncond.repeat(x.shape[0] // len(uncond))
    with torch.no_grad():
        if t_prev < 0:
            x0 = x
        else:
            eps_u, eps_c = unet_eps(pipe.unet, x, torch.full((x.shape[0],), t_prev), uncond), \
                unet_eps(pipe.unet, x, torch.full((x.shape[0],), t_prev), cond)
            x0 = ddim_x0(eps_u + g * (eps_c - eps_u), x, a_prev, "epsilon")
        return decode_latents(pipe.vae, x0).mean(dim=(1, 2, 3))


@pytest.mark.parametrize("t_prev", [400, -99])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ranking_uses_the_step_wise_reward(tiny_sd, t_prev, sign):
    """A reward preferring brighter (sign −1: darker) x̂0 makes the brighter (darker) candidate the winner."""
    cands, a_prev, cond, uncond = _candidates(tiny_sd, t_prev)
    method = TailorPO(TailorPOConfig(train_guidance_scale=3.0))
    reward = lambda images, prompts: sign * toy_reward(images, prompts)  # noqa: E731
    x_w, x_l, logs = method._pair(tiny_sd.unet, tiny_sd.vae, reward, cands, torch.tensor(0.5), t_prev, a_prev, cond,
                                  uncond, ["a cat", "a dog", "cat"], "epsilon")
    w, l = (_brightness(tiny_sd, x, t_prev, a_prev, cond, uncond, 3.0) for x in (x_w, x_l))
    assert (sign * (w - l) > 0).all() and logs["reward_gap"] > 0
    both = _brightness(tiny_sd, cands.flatten(0, 1), t_prev, a_prev, cond, uncond, 3.0).view(2, 3)
    assert not (both[0] > both[1]).all() and not (both[1] > both[0]).all()  # the winner is not always one slot


def test_step_rewards_gradient_and_guidance_widen_the_gap(tiny_sd):
    cands, a_prev, cond, uncond = _candidates(tiny_sd, 400)
    c2, u2 = cond.repeat(2), uncond.repeat(2)  # Cond.repeat stacks [cond; cond] like _pair's Cond.cat
    x = cands.flatten(0, 1)
    r, grad = step_rewards(tiny_sd.unet, tiny_sd.vae, toy_reward, x, 400, a_prev, c2, u2, 3.0, ["p"] * 6, "epsilon",
                           with_grad=True)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    r2, _ = step_rewards(tiny_sd.unet, tiny_sd.vae, toy_reward, x + 1e-2 * grad / grad.norm(), 400, a_prev, c2, u2,
                         3.0, ["p"] * 6, "epsilon")
    assert r2.sum() > r.sum()  # a small step up the gradient raises the reward
    method = TailorPO(TailorPOConfig(train_guidance_scale=3.0, gradient_guidance=True, guidance_eta=0.05))
    _, _, logs = method._pair(tiny_sd.unet, tiny_sd.vae, toy_reward, cands, torch.tensor(0.5), 400, a_prev, cond,
                              uncond, ["a cat", "a dog", "cat"], "epsilon")
    assert logs["reward_gap"] > logs["reward_gap_unguided"] > 0


@pytest.mark.parametrize("field, value, message", [
    ("lora_rank", 0, "lora_rank"), ("eta", 0.0, "eta"), ("rollout_steps", 0, "rollout_steps"),
    ("beta", 0.0, "beta"), ("guidance_eta", -1.0, "guidance_eta"), ("batch_size", 0, "batch_size"),
])
def test_validate_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        TailorPO(replace(TailorPOConfig(), **{field: value}))


def test_registry_and_defaults():
    assert METHODS.get("tailorpo") is TailorPO
    for values in TailorPO.defaults.values():
        TailorPO(TailorPOConfig(**values))


def _probe(pipe):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    return x, torch.tensor([900, 200]), encode_prompts(pipe, ["a cat", "a dog"]), encode_uncond(pipe, 2)


@pytest.mark.parametrize("guided", [False, True])
def test_train_reload_and_sample(tiny_sd, tmp_path, guided):
    base = {k: v.clone() for k, v in tiny_sd.unet.state_dict().items()}
    method = TailorPO(short_config(TailorPO, steps=3, rollout_steps=4, gradient_guidance=guided, guidance_scale=3.0))
    ctx, logs = make_context(tiny_sd, tmp_path)
    method.train(replace(ctx, reward=lambda: BrightnessReward()))  # the bench hands a Reward object
    assert [s for s, _ in logs] == [1, 2, 3]
    assert {"loss", "implicit_acc", "reward_w", "reward_l", "reward_gap", "t", "grad_norm", "lr"} <= set(logs[0][1])
    assert ("reward_gap_unguided" in logs[0][1]) == guided
    assert logs[0][1]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # the LoRA policy starts at the reference
    assert all(v["reward_gap"] >= 0 for _, v in logs)
    assert all(torch.equal(v, base[k]) for k, v in tiny_sd.unet.state_dict().items())  # pipe.unet untouched
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    trained = load_trained_unet(tiny_sd, tmp_path)
    x, t, c, u = _probe(tiny_sd)
    den = method.denoiser(tiny_sd, tmp_path, lambda _: Path())
    with torch.no_grad():
        torch.testing.assert_close(den(x, t, c, u), cfg_denoiser(trained, trained, 3.0)(x, t, c, u))
        assert (den(x, t, c, u) - cfg_denoiser(tiny_sd.unet, tiny_sd.unet, 3.0)(x, t, c, u)).abs().max() > 1e-6
    first = generate(tiny_sd, den, ["a cat", "a dog"], [1, 2], steps=3)
    assert torch.equal(first, generate(tiny_sd, den, ["a cat", "a dog"], [1, 2], steps=3))
    with pytest.raises(ValueError, match="train it first"):
        method.denoiser(tiny_sd, None, lambda _: Path())


def test_training_is_deterministic_for_a_seed(tiny_sd, tmp_path):
    def run(seed: int, out: Path) -> list[float]:
        ctx, logs = make_context(tiny_sd, out)
        TailorPO(short_config(TailorPO, seed=seed, rollout_steps=4)).train(ctx)
        return [v[k] for _, v in logs for k in ("loss", "t", "reward_w")]

    assert run(0, tmp_path / "a") == run(0, tmp_path / "b") != run(1, tmp_path / "c")


def test_sdxl_layout_never_draws_a_deterministic_last_step(tiny_sdxl, tmp_path):
    """The tiny SDXL's scheduler config implies set_alpha_to_one: its last DDIM step has σ = 0."""
    assert float(DDIMScheduler.from_config(tiny_sdxl.scheduler.config).final_alpha_cumprod) == 1.0
    ctx, logs = make_context(tiny_sdxl, tmp_path)
    TailorPO(short_config(TailorPO, steps=3, rollout_steps=2)).train(ctx)  # timesteps 501, 1
    assert [v["t"] for _, v in logs] == [501.0] * 3 and all(math.isfinite(v["loss"]) for _, v in logs)
    with pytest.raises(ValueError, match="rollout_steps must be >= 2"):
        TailorPO(short_config(TailorPO, rollout_steps=1)).train(ctx)
