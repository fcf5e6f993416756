"""The shared diffusion primitives (methods/core/diffusion.py) on the tiny SD and SDXL pipelines."""

from __future__ import annotations

import pytest
import torch

from methods.core import diffusion as D
from methods.core.types import Cond


@pytest.fixture(params=["sd", "sdxl"])
def pipe(request, tiny_sd, tiny_sdxl):
    return tiny_sd if request.param == "sd" else tiny_sdxl


def test_encode_prompts_sd_shapes(tiny_sd):
    c = D.encode_prompts(tiny_sd, ["a photo of a cat", "a dog"])
    assert c.embeds.shape == (2, 77, 16) and c.added == {}
    assert not torch.allclose(c.embeds[0], c.embeds[1])  # different captions, different embeddings


def test_encode_prompts_sdxl_added_cond(tiny_sdxl):
    c = D.encode_prompts(tiny_sdxl, ["a photo of a cat", "a dog", "x"])
    assert c.embeds.shape == (3, 77, 32)  # both encoders' penultimate states, concatenated
    assert c.added["text_embeds"].shape == (3, 16)
    # micro-conditioning: original size, crop top-left, target size, at the native 16 px
    assert c.added["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]] * 3


def test_encode_uncond(tiny_sd, tiny_sdxl):
    u = D.encode_uncond(tiny_sd, 3)
    assert torch.equal(u.embeds, D.encode_prompts(tiny_sd, [""] * 3).embeds)
    ux = D.encode_uncond(tiny_sdxl, 2)  # SDXL's config forces zeros for the empty prompt
    assert tiny_sdxl.config.force_zeros_for_empty_prompt
    assert ux.embeds.abs().sum() == 0 and ux.added["text_embeds"].abs().sum() == 0
    assert ux.added["time_ids"].shape == (2, 6)


def test_cfg_formula_hand_computed():
    eps_u, eps_c = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 1.0, 0.5])
    # eps_u + g (eps_c - eps_u) with g = 7.5: 1 + 7.5*2 = 16; -2 + 7.5*3 = 20.5; 0.5 + 0 = 0.5
    assert D.cfg(eps_u, eps_c, 7.5).tolist() == [16.0, 20.5, 0.5]
    assert torch.equal(D.cfg(eps_u, eps_c, 1.0), eps_c)
    assert torch.equal(D.cfg(eps_u, eps_c, 0.0), eps_u)


def test_cfg_denoiser_two_networks_matches_batched(tiny_sd):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500, 20])
    c, u = D.encode_prompts(tiny_sd, ["a cat", "a dog"]), D.encode_uncond(tiny_sd, 2)
    with torch.no_grad():
        batched = D.cfg_denoiser(tiny_sd.unet, tiny_sd.unet, 3.0)(x, t, c, u)
        eps_u, eps_c = D.unet_eps(tiny_sd.unet, x, t, u), D.unet_eps(tiny_sd.unet, x, t, c)
    torch.testing.assert_close(batched, eps_u + 3.0 * (eps_c - eps_u), atol=1e-5, rtol=1e-5)


def test_generate_deterministic_and_batch_independent(pipe):
    den = D.cfg_denoiser(pipe.unet, pipe.unet, 5.0)
    seeds = [11, 22, 33]
    prompts = ["a photo of a cat", "a dog", "cat dog"]
    batch = D.generate(pipe, den, prompts, seeds, steps=4)
    assert batch.shape == (3, 3, 16, 16) and batch.min() >= 0 and batch.max() <= 1
    again = D.generate(pipe, den, prompts, seeds, steps=4)
    assert torch.equal(batch, again)
    alone = D.generate(pipe, den, prompts[1:2], seeds[1:2], steps=4)
    torch.testing.assert_close(alone[0], batch[1], atol=1e-5, rtol=0)
    other_seed = D.generate(pipe, den, prompts[1:2], [23], steps=4)
    assert (other_seed[0] - batch[1]).abs().max() > 1e-3


def test_generate_with_pipeline_scheduler(tiny_sdxl):
    den = D.cfg_denoiser(tiny_sdxl.unet, tiny_sdxl.unet, 5.0)
    img = D.generate(tiny_sdxl, den, ["a cat"], [0], steps=3, sampler="pipeline")  # Euler
    assert img.shape == (1, 3, 16, 16) and torch.isfinite(img).all()
    with pytest.raises(ValueError, match="available: ddim, pipeline"):
        D.sampling_scheduler(tiny_sdxl, "dpm")


def test_encode_decode_shapes(pipe):
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    z = D.encode_images(pipe.vae, pixels)
    assert z.shape == (2, *D.latent_shape(pipe)) == (2, 4, 8, 8)
    assert torch.equal(z, D.encode_images(pipe.vae, pixels))  # posterior mean: deterministic
    z_s = D.encode_images(pipe.vae, pixels, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(z, z_s)
    img = D.decode_latents(pipe.vae, z)
    assert img.shape == (2, 3, 16, 16) and img.min() >= 0 and img.max() <= 1
    assert [im.size for im in D.to_pil(img)] == [(16, 16), (16, 16)]
    assert D.resolution(pipe) == 16


def test_training_noise_deterministic_and_mse():
    lat = torch.zeros(5, 4, 8, 8)
    n1, t1 = D.sample_noise_and_timesteps(lat, 1000, torch.Generator().manual_seed(3))
    n2, t2 = D.sample_noise_and_timesteps(lat, 1000, torch.Generator().manual_seed(3))
    assert torch.equal(n1, n2) and torch.equal(t1, t2) and t1.shape == (5,)
    assert 0 <= int(t1.min()) and int(t1.max()) < 1000
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])
    assert D.per_sample_mse(pred, target).tolist() == [1.0, 1.0]  # (1+1+1+1)/4, (4+0+0+0)/4


def test_seeds_and_initial_noise():
    assert D.seed_for("parti", 3, 0) == D.seed_for("parti", 3, 0) != D.seed_for("parti", 3, 1)
    both = D.initial_noise([5, 6], (4, 8, 8))
    assert torch.equal(both[1], D.initial_noise([6], (4, 8, 8))[0])


def test_cond_helpers():
    c = Cond(torch.arange(6.0).reshape(2, 3, 1), {"text_embeds": torch.tensor([[1.0], [2.0]])})
    r = c.repeat(2)
    assert len(r) == 4 and r.added["text_embeds"].flatten().tolist() == [1, 2, 1, 2]
    cat = Cond.cat([c, c.index(slice(0, 1))])
    assert len(cat) == 3 and torch.equal(cat.embeds[2], c.embeds[0])


def test_generate_matches_diffusers_pipeline(pipe):
    """THE sampling loop with plain CFG reproduces the pipeline's own __call__ on the same noise."""
    seeds, prompts = [1, 2], ["a cat", "a dog"]
    ours = D.generate(pipe, D.cfg_denoiser(pipe.unet, pipe.unet, 5.0), prompts, seeds, steps=4, sampler="pipeline")
    noise = D.initial_noise(seeds, D.latent_shape(pipe))
    theirs = pipe(prompts, latents=noise, num_inference_steps=4, guidance_scale=5.0, output_type="pt",
                  height=16, width=16).images
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
