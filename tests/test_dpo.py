"""Diffusion-DPO: the loss against hand-computed values, β conventions, pair sharing, training."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench.registry import METHODS
from methods.core import pairs as P
from methods.core.api import TrainContext
from methods.core.diffusion import encode_prompts, per_sample_mse, train_scheduler, unet_eps
from methods.core.training import load_trained_unet
from methods.core.types import PairData
from methods.dpo import DiffusionDPO, DPOConfig, convert_beta, dpo_loss


def test_dpo_loss_hand_computed():
    mw, ml = torch.tensor([0.1002, 0.30]), torch.tensor([0.1000, 0.31])
    rw, rl = torch.tensor([0.1000, 0.30]), torch.tensor([0.1000, 0.3098])
    loss, z, acc = dpo_loss(mw, ml, rw, rl, beta_sf=5000.0)
    # pair 1: Δ = (0.1002 − 0.1) − 0 = 2e-4 → z = −2500·2e-4 = −0.5
    # pair 2: Δ = (0.30 − 0.31) − (0.30 − 0.3098) = −0.01 + 0.0098 = −2e-4 → z = +0.5
    z_hand = [-0.5, 0.5]
    loss_hand = (math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(-0.5))) / 2
    torch.testing.assert_close(z, torch.tensor(z_hand), atol=1e-4, rtol=0)
    assert float(loss) == pytest.approx(loss_hand, abs=1e-4)
    assert float(acc) == 0.5


def test_dpo_loss_is_ln2_when_policy_equals_reference():
    e = torch.rand(4)
    loss, z, acc = dpo_loss(e, e.flip(0), e, e.flip(0), 5000.0)
    assert float(loss) == pytest.approx(math.log(2)) and torch.all(z == 0) and float(acc) == 0


def test_beta_conventions():
    assert convert_beta(5000, "sf") == 5000
    assert convert_beta(2500, "hf15") == 5000  # diffusers SD1.5 default is β_SF = 5000
    chw = 4 * 64 * 64  # SD1.5 at 512 px
    assert convert_beta(0.5 * 5000 / chw, "paper", chw) == pytest.approx(5000)
    with pytest.raises(ValueError, match="C·H·W"):
        convert_beta(1.0, "paper")
    cfg = DPOConfig(beta=2500, beta_convention="hf15")  # stored in SF on load
    assert (cfg.beta, cfg.beta_convention) == (5000, "sf")
    assert cfg.train_fields() == DPOConfig(beta=5000).train_fields()
    paper = DPOConfig(beta=0.5 * 5000 / 256, beta_convention="paper")
    assert paper.beta_sf(4 * 8 * 8) == pytest.approx(5000)


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "beta must be > 0"), ("beta_convention", "hf", "available: sf, hf15, paper"),
    ("prompt_dropout", 1.0, "prompt_dropout"), ("steps", 0, "steps must be >= 1"),
    ("micro_batch_pairs", 9, "micro_batch_pairs"), ("optimizer", "sgd", "available: adamw, adamw8bit, adafactor"),
    ("lora_rank", -1, "lora_rank"), ("guidance_scale", -1.0, "guidance_scale"),
])
def test_validate_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        DiffusionDPO(replace(DPOConfig(batch_pairs=8), **{field: value}))


def test_registry_and_defaults():
    assert METHODS.get("dpo") is DiffusionDPO
    for model, values in DiffusionDPO.defaults.items():
        DPOConfig(**values).validate()  # every default names a real field with a valid value


def test_gradient_step_favours_the_winner():
    """On a toy whose 'prediction' is the parameter itself, one SGD step lowers err_w − err_l."""
    torch.manual_seed(0)
    target = torch.randn(2, 4, 2, 2)
    pred = torch.nn.Parameter(target + torch.randn(2, 4, 2, 2))
    ref_w, ref_l = per_sample_mse(pred.detach(), target).chunk(2)

    def gap():
        e_w, e_l = per_sample_mse(pred, target).chunk(2)
        return e_w, e_l

    before = float(torch.sub(*gap()).detach())
    loss, _, _ = dpo_loss(*gap(), ref_w, ref_l, beta_sf=10.0)
    loss.backward()
    with torch.no_grad():
        pred -= 0.1 * pred.grad
    assert float(torch.sub(*gap()).detach()) < before


def _pair_data(pipe, n: int = 6, seed: int = 0) -> PairData:
    g = torch.Generator().manual_seed(seed)
    captions = ["a photo of a cat", "a dog", "cat"] * (n // 3)
    return PairData(torch.randn(n, 4, 8, 8, generator=g), torch.randn(n, 4, 8, 8, generator=g),
                    encode_prompts(pipe, captions), torch.ones(n), captions)


def test_pair_shares_noise_and_timestep_and_reference_runs_first(tiny_sd, monkeypatch):
    scheduler = train_scheduler(tiny_sd)
    seen = {}

    def add_noise(x, noise, t):
        seen["noise"], seen["t"] = noise, t
        return type(scheduler).add_noise(scheduler, x, noise, t)

    calls = []
    monkeypatch.setattr(scheduler, "add_noise", add_noise)
    original = tiny_sd.unet.forward
    monkeypatch.setattr(tiny_sd.unet, "forward",
                        lambda x, t, **k: calls.append((torch.is_grad_enabled(), t)) or original(x, t, **k))
    batch = P.subset(_pair_data(tiny_sd), torch.arange(3))
    errors = P.pair_errors(tiny_sd.unet, tiny_sd.unet, batch, scheduler, torch.Generator().manual_seed(0))
    noise, t = seen["noise"], seen["t"]
    assert noise.shape[0] == 6 and torch.equal(noise[:3], noise[3:]) and torch.equal(t[:3], t[3:])
    assert torch.equal(errors.target, noise)
    assert [grad for grad, _ in calls] == [False, True]  # reference (no grad) first, then the policy
    assert all(torch.equal(ts, t) for _, ts in calls)
    # policy == reference here, so the DPO logit is exactly zero
    assert torch.equal(errors.model_err_w, errors.ref_err_w) and torch.equal(errors.model_err_l, errors.ref_err_l)


def test_prompt_dropout_and_batches_are_deterministic(tiny_sd):
    data = _pair_data(tiny_sd)
    empty = encode_prompts(tiny_sd, [""])
    dropped = P.prompt_dropout(data.cond, empty, 0.5, torch.Generator().manual_seed(1))
    rows = [torch.equal(dropped.embeds[i], empty.embeds[0]) for i in range(len(data))]
    assert 0 < sum(rows) < len(data)
    assert all(torch.equal(dropped.embeds[i], data.cond.embeds[i]) for i, r in enumerate(rows) if not r)

    def ids(seed):
        it = P.pair_batches(data, 4, torch.Generator().manual_seed(seed))
        return [tuple(data.latents_w[next(it), 0, 0, 0].tolist()) for _ in range(3)]

    assert ids(0) == ids(0) != ids(1)
    draws, every = sum(ids(0), ()), sorted(data.latents_w[:, 0, 0, 0].tolist())
    assert sorted(draws[:6]) == every == sorted(draws[6:])  # 12 draws: two whole shuffled epochs of 6


def _ctx(pipe, data: PairData, out_dir: Path, logs: list) -> TrainContext:
    def unused():
        raise AssertionError("dpo trains on pairs only")

    return TrainContext(pipe=pipe, device=torch.device("cpu"), dtype=torch.float32, out_dir=out_dir, seed=0,
                        pairs=lambda: data, images=unused, prompts=unused, reward=unused,
                        log=lambda step, values: logs.append((step, values)))


def _predict(unet, pipe):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        return unet_eps(unet, x, torch.tensor([10, 900]), encode_prompts(pipe, ["a cat", "a dog"]))


TRAIN = dict(steps=3, batch_pairs=4, lr=1e-3, warmup_steps=1, prompt_dropout=0.5, seed=0)


@pytest.mark.parametrize("lora_rank, micro", [(0, 0), (2, 2)])
def test_train_changes_unet_and_reloads(tiny_sd, tmp_path, lora_rank, micro):
    cfg = DPOConfig(**TRAIN, lora_rank=lora_rank, micro_batch_pairs=micro)
    base = {k: v.clone() for k, v in tiny_sd.unet.state_dict().items()}
    logs: list = []
    trained = P.train_pairs(_ctx(tiny_sd, _pair_data(tiny_sd), tmp_path, logs), cfg,
                            lambda e: (dpo_loss(e.model_err_w, e.model_err_l, e.ref_err_w, e.ref_err_l, 5000.0)[0], {}))
    assert [s for s, _ in logs] == [1, 2, 3]
    assert {"loss", "err_w", "err_l", "grad_norm", "lr"} <= set(logs[0][1])
    assert logs[0][1]["lr"] == 0.0 and logs[1][1]["lr"] == pytest.approx(1e-3)  # diffusers warmup: step 0 has lr 0
    assert all(torch.equal(v, base[k]) for k, v in tiny_sd.unet.state_dict().items())  # pipe.unet untouched
    assert (tmp_path / ("lora" if lora_rank else "unet")).is_dir()

    loaded = load_trained_unet(tiny_sd, tmp_path)
    assert loaded is not tiny_sd.unet and not hasattr(tiny_sd.unet, "peft_config")
    torch.testing.assert_close(_predict(loaded, tiny_sd), _predict(trained, tiny_sd), atol=1e-5, rtol=1e-4)
    assert (_predict(loaded, tiny_sd) - _predict(tiny_sd.unet, tiny_sd)).abs().max() > 1e-4


def test_method_train_and_denoise(tiny_sd, tmp_path):
    method = DiffusionDPO(DPOConfig(**{**TRAIN, "steps": 2}, guidance_scale=3.0))
    logs: list = []
    method.train(_ctx(tiny_sd, _pair_data(tiny_sd), tmp_path, logs))
    assert {"loss", "implicit_acc", "err_w", "err_l"} <= set(logs[-1][1])
    assert logs[0][1]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy starts at the reference
    den = method.denoiser(tiny_sd, tmp_path, lambda _: Path())
    x = torch.randn(1, 4, 8, 8)
    c, u = encode_prompts(tiny_sd, ["a cat"]), encode_prompts(tiny_sd, [""])
    with torch.no_grad():
        assert torch.isfinite(den(x, torch.tensor([500]), c, u)).all()
    with pytest.raises(ValueError, match="train it first"):
        method.denoiser(tiny_sd, None, lambda _: Path())
    with pytest.raises(FileNotFoundError, match="expected unet/ or lora/"):
        load_trained_unet(tiny_sd, tmp_path / "nothing")


def test_ties_dropped_unless_kept(tiny_sd):
    data = _pair_data(tiny_sd)
    data.label[:2] = 0.5
    assert len(P.drop_ties(data)) == 4 and torch.all(P.drop_ties(data).label == 1)


def test_training_is_deterministic_for_a_seed(tiny_sd, tmp_path):
    def run(seed: int, out: Path) -> list[float]:
        logs: list = []
        cfg = DPOConfig(**{**TRAIN, "seed": seed}, lora_rank=2)
        P.train_pairs(_ctx(tiny_sd, _pair_data(tiny_sd), out, logs), cfg,
                      lambda e: (dpo_loss(e.model_err_w, e.model_err_l, e.ref_err_w, e.ref_err_l, 5000.0)[0], {}))
        return [v["loss"] for _, v in logs] + [v["err_w"] for _, v in logs]

    assert run(0, tmp_path / "a") == run(0, tmp_path / "b") != run(1, tmp_path / "c")
