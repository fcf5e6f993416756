"""Diffusion-NPO: flipped pairs and weight mixing by hand; training from the base on flipped pairs
(ties kept); sampling with the negative weights in the unconditional branch only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.registry import METHODS
from method_helpers import make_context, pair_data, short_config, train_method
import methods.npo as npo_module
from methods.core.diffusion import cfg, encode_prompts, encode_uncond, unet_eps
from methods.core.training import load_trained_unet
from methods.core.types import POSTERIOR_FIELDS, Cond, PairData
from methods.npo import DiffusionNPO, NPOConfig, flip_pairs, negative_weights


def test_flip_pairs_swaps_labelled_pairs_and_keeps_ties(tiny_sd):
    data = pair_data(tiny_sd, n=3, ties=0)
    data.label[1] = 0.5
    flipped = flip_pairs(data)
    for i in (0, 2):  # labelled: the human loser now comes first
        assert torch.equal(flipped.latents_w[i], data.latents_l[i])
        assert torch.equal(flipped.latents_l[i], data.latents_w[i])
    assert torch.equal(flipped.latents_w[1], data.latents_w[1])  # tie: stored order (jpg_0 first), as official
    assert torch.equal(flipped.latents_l[1], data.latents_l[1])
    assert flipped.label.tolist() == [1.0, 0.5, 1.0] and flipped.captions == data.captions
    assert torch.equal(flip_pairs(flipped).latents_w, data.latents_w)  # an involution
    data.label[0] = 0.0
    with pytest.raises(ValueError, match="1.0 .* or 0.5"):
        flip_pairs(data)


def test_flip_pairs_swaps_every_cached_view():
    """The posterior std and the flipped image's encoding move with their image (bench/prefdata.py caches them)."""
    g = torch.Generator().manual_seed(0)
    views = {name: torch.randn(2, 1, 2, 2, generator=g) for name in ("latents_w", "latents_l", *POSTERIOR_FIELDS)}
    data = PairData(cond=Cond(torch.zeros(2, 1, 1)), label=torch.tensor([1.0, 0.5]), captions=["a", "b"], **views)
    flipped = flip_pairs(data)
    for w_name in ("latents_w", "std_w", "flipped_w", "flipped_std_w"):
        l_name = w_name[:-1] + "l"
        assert torch.equal(getattr(flipped, w_name)[0], views[l_name][0]), w_name  # labelled: swapped
        assert torch.equal(getattr(flipped, l_name)[0], views[w_name][0]), l_name
        assert torch.equal(getattr(flipped, w_name)[1], views[w_name][1]), w_name  # tie: as stored


def test_real_defaults_follow_the_official_scripts():
    sd15, sdxl = (NPOConfig(**DiffusionNPO.defaults[m]) for m in ("sd15", "sdxl"))
    assert sd15.optimizer == sdxl.optimizer == "adamw8bit"  # run_sd15.sh, run_sdxl.sh: --use_8bit_adam
    assert DiffusionNPO(sdxl).packages() == {"bitsandbytes": "optimizer 'adamw8bit'"}
    # train_sd15.py flips each image on its own, train_sdxl.py the stacked pair; both sample the posterior
    assert (sd15.random_flip, sdxl.random_flip, sd15.latent_sample, sdxl.latent_sample) == ("image", "pair", True, True)


def test_negative_weights_hand_computed():
    base = {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor([7])}
    pos = {"w": torch.tensor([3.0, 6.0]), "steps": torch.tensor([9])}
    npo = {"w": torch.tensor([1.5, 2.0]), "steps": torch.tensor([8])}  # δ = [0.5, 0]
    # m = 0.25: 0.25·[1, 2] + 0.75·[3, 6] + [0.5, 0] = [3.0, 5.0]
    mixed = negative_weights(base, pos, npo, 0.25)
    assert mixed["w"].tolist() == [3.0, 5.0] and mixed["steps"].tolist() == [7]  # integers: the base's
    assert negative_weights(base, pos, npo, 0.0)["w"].tolist() == [3.5, 6.0]  # θ_pos + δ (gen.py default)
    assert negative_weights(base, pos, npo, 1.0)["w"].tolist() == [1.5, 2.0]  # θ_base + δ = θ_npo
    assert negative_weights(base, base, npo, 0.4)["w"].tolist() == [1.5, 2.0]  # base as positive: θ_npo
    half = negative_weights({"w": base["w"].half()}, {"w": pos["w"].half()}, {"w": npo["w"].half()}, 0.0)
    assert half["w"].dtype == torch.float16


def test_config_conventions_and_validation():
    assert METHODS.get("npo") is DiffusionNPO
    assert NPOConfig(beta=500, beta_convention="hf15").beta == NPOConfig().beta == 1000  # run_sd15.sh
    cfg = NPOConfig()
    assert (cfg.lora_rank, cfg.keep_ties, cfg.lr, cfg.warmup_steps, cfg.prompt_dropout) == (8, True, 5e-6, 0, 0.0)
    # stack_on and merge_weight only change sampling: the NPO LoRA is the same whatever the positive model
    assert NPOConfig(stack_on="dpo", merge_weight=0.5).train_fields() == cfg.train_fields()
    assert DiffusionNPO(cfg).requires() == [] and DiffusionNPO(NPOConfig(stack_on="dpo")).requires() == ["dpo"]
    for values, message in [({"stack_on": "npo"}, "not 'npo' itself"), ({"stack_on": "base"}, "stack_on=''"),
                            ({"merge_weight": 1.5}, "merge_weight"), ({"beta": 0.0}, "beta must be > 0")]:
        with pytest.raises(ValueError, match=message):
            DiffusionNPO(NPOConfig(**values))
    for values in DiffusionNPO.defaults.values():
        DiffusionNPO(NPOConfig(**values))


def test_train_sees_flipped_pairs_with_ties_from_the_base(tiny_sd, tmp_path, monkeypatch):
    seen = {}
    real = npo_module.train_pairs

    def spy(ctx, cfg, loss_fn, **kw):
        seen["data"], seen["unet"] = ctx.pairs(), ctx.pipe.unet
        return real(ctx, cfg, loss_fn, **kw)

    monkeypatch.setattr(npo_module, "train_pairs", spy)
    data = pair_data(tiny_sd, n=4, ties=1)
    ctx, logs = make_context(tiny_sd, tmp_path, pairs=data)  # its artifacts() raises: nothing stacked is read
    DiffusionNPO(short_config(DiffusionNPO, stack_on="dpo", lora_rank=8)).train(ctx)
    got = seen["data"]
    assert torch.equal(got.latents_w[:3], data.latents_l[:3]) and torch.equal(got.latents_w[3], data.latents_w[3])
    assert seen["unet"] is tiny_sd.unet  # from the base model
    assert logs[0][1]["loss"] == pytest.approx(0.6931, abs=1e-4)  # LoRA B = 0: the policy starts at the reference
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()


def _probe(pipe):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    return x, torch.tensor([800, 50]), encode_prompts(pipe, ["a cat", "a dog"]), encode_uncond(pipe, 2)


def test_negative_model_only_in_the_unconditional_branch(tiny_sd, tmp_path):
    method = DiffusionNPO(short_config(DiffusionNPO, guidance_scale=4.0))
    artifacts = train_method(method, tiny_sd, tmp_path)
    npo = load_trained_unet(tiny_sd, artifacts("npo"))
    x, t, c, u = _probe(tiny_sd)
    with torch.no_grad():
        got = method.denoiser(tiny_sd, artifacts("npo"), artifacts)(x, t, c, u)
        want = cfg(unet_eps(npo, x, t, u), unet_eps(tiny_sd.unet, x, t, c), 4.0)
        plain = cfg(unet_eps(tiny_sd.unet, x, t, u), unet_eps(tiny_sd.unet, x, t, c), 4.0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-4  # the trained negative changes the guidance
    with pytest.raises(ValueError, match="train it first"):
        method.denoiser(tiny_sd, None, artifacts)


@pytest.mark.parametrize("merge_weight", [0.0, 0.5])
def test_stacked_on_dpo(tiny_sd, tmp_path, merge_weight):
    method = DiffusionNPO(short_config(DiffusionNPO, stack_on="dpo", merge_weight=merge_weight, guidance_scale=3.0))
    artifacts = train_method(method, tiny_sd, tmp_path)  # trains dpo first, then the NPO LoRA
    assert artifacts("dpo") == Path(tmp_path) / "dpo"
    dpo, npo = load_trained_unet(tiny_sd, artifacts("dpo")), load_trained_unet(tiny_sd, artifacts("npo"))
    base = tiny_sd.unet.state_dict()
    neg = load_trained_unet(tiny_sd, artifacts("npo"))  # a module to hold θ_neg, built by hand
    neg.load_state_dict({k: merge_weight * base[k] + (1 - merge_weight) * dpo.state_dict()[k] + npo.state_dict()[k]
                         - base[k] for k in base})
    x, t, c, u = _probe(tiny_sd)
    with torch.no_grad():
        got = method.denoiser(tiny_sd, artifacts("npo"), artifacts)(x, t, c, u)
        want = cfg(unet_eps(neg, x, t, u), unet_eps(dpo, x, t, c), 3.0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
