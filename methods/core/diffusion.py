"""Diffusion primitives shared by every method: one copy of each.

Prompt encoding, latent encoding and decoding, noise and timestep sampling for training, the
per-sample noise-prediction error, classifier-free guidance, and THE sampling loop. Methods only
change which network predicts each branch and how predictions combine (a ``Denoiser``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Sequence

import torch

from methods.core.types import Cond, Denoiser

if TYPE_CHECKING:  # diffusers takes seconds to import: only the functions that build a scheduler do
    from diffusers import DDPMScheduler

# ---------------------------------------------------------------------------------------------
# Prompts


def is_sdxl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def resolution(pipe: Any) -> int:
    """Native image side in pixels: the UNet's sample size times the VAE's downsampling factor."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def _time_ids(pipe: Any, n: int, device: torch.device) -> torch.Tensor:
    # SDXL micro-conditioning: (orig_h, orig_w, crop_top, crop_left, target_h, target_w).
    side = resolution(pipe)
    return torch.tensor([[side, side, 0, 0, side, side]], dtype=torch.float32, device=device).repeat(n, 1)


@torch.no_grad()
def encode_prompts(pipe: Any, prompts: Sequence[str], device: torch.device | str = "cpu") -> Cond:
    """Encode captions with the pipeline's own text encoder(s), exactly as its ``__call__`` would."""
    device = torch.device(device)
    if is_sdxl(pipe):
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=list(prompts), device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return Cond(embeds, {"text_embeds": pooled, "time_ids": _time_ids(pipe, len(prompts), device)})
    embeds, _ = pipe.encode_prompt(list(prompts), device, 1, False)
    return Cond(embeds)


@torch.no_grad()
def encode_uncond(pipe: Any, n: int, device: torch.device | str = "cpu") -> Cond:
    """The unconditional branch: the empty prompt (zeros for SDXL when its config says so)."""
    if is_sdxl(pipe) and pipe.config.get("force_zeros_for_empty_prompt", False):
        c = encode_prompts(pipe, [""], device)
        return Cond(torch.zeros_like(c.embeds), {"text_embeds": torch.zeros_like(c.added["text_embeds"]),
                                                 "time_ids": c.added["time_ids"]}).repeat(n)
    return encode_prompts(pipe, [""], device).repeat(n)


# ---------------------------------------------------------------------------------------------
# Latents


def _vae_shift(vae: Any) -> float:
    return float(getattr(vae.config, "shift_factor", None) or 0.0)


@torch.no_grad()
def encode_images(vae: Any, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> scaled latents. With a generator, one posterior sample; else the mean."""
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    z = dist.mean if generator is None else dist.mean + dist.std * torch.randn(
        dist.mean.shape, generator=generator, dtype=dist.mean.dtype).to(dist.mean.device)
    return (z - _vae_shift(vae)) * vae.config.scaling_factor


def vae_decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> (B, 3, H, W) float32 images in [0, 1] on the VAE's device, differentiable
    (for methods that back-propagate a reward into the latents)."""
    z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor + _vae_shift(vae)
    return (vae.decode(z).sample.float() / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> (B, 3, H, W) images in [0, 1], float32 on CPU."""
    return vae_decode(vae, latents).cpu()


def to_pil(images: torch.Tensor) -> list:
    from PIL import Image

    arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype("uint8")
    return [Image.fromarray(a) for a in arr]


# ---------------------------------------------------------------------------------------------
# Training noise


def train_scheduler(pipe: Any) -> DDPMScheduler:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def sample_noise_and_timesteps(
    latents: torch.Tensor, num_train_timesteps: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Gaussian noise and one uniform integer timestep per row of ``latents`` (CPU generator)."""
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    t = torch.randint(0, num_train_timesteps, (latents.shape[0],), generator=generator).to(latents.device)
    return noise, t


def unet_eps(unet: Any, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
    """One UNet call; returns the noise prediction."""
    kwargs = {"added_cond_kwargs": cond.added} if cond.added else {}
    return unet(x, t, encoder_hidden_states=cond.embeds, **kwargs).sample


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error over C, H, W, in float32."""
    return (pred.float() - target.float()).pow(2).mean(dim=list(range(1, pred.ndim)))


# ---------------------------------------------------------------------------------------------
# DDIM arithmetic (Song et al. 2021, eq. 12/16), for methods that take steps outside the sampling
# loop. ``abar`` = ᾱ of a noise level, a tensor broadcastable to ``x`` (e.g. (B, 1, 1, 1)).


def ddim_x0(model_out: torch.Tensor, x: torch.Tensor, abar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """x̂0 from a model output at x: (x − √(1−ᾱ)·ε̂)/√ᾱ for ε-prediction, √ᾱ·x − √(1−ᾱ)·v̂ for v."""
    if prediction_type == "epsilon":
        return (x - (1 - abar).sqrt() * model_out) / abar.sqrt()
    if prediction_type == "v_prediction":
        return abar.sqrt() * x - (1 - abar).sqrt() * model_out
    raise ValueError(f"prediction_type {prediction_type!r} not supported; available: epsilon, v_prediction")


def ddim_eps(model_out: torch.Tensor, x: torch.Tensor, abar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """ε̂ from a model output at x (the output itself for ε-prediction; √ᾱ·v̂ + √(1−ᾱ)·x for v)."""
    if prediction_type == "epsilon":
        return model_out
    if prediction_type == "v_prediction":
        return abar.sqrt() * model_out + (1 - abar).sqrt() * x
    raise ValueError(f"prediction_type {prediction_type!r} not supported; available: epsilon, v_prediction")


def ddim_transition(x0: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor,
                    eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the DDIM step t -> prev: x_prev = mean + std·z, z ~ N(0, I).

    std = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev);  mean = √ᾱ_prev·x̂0 + √(1−ᾱ_prev−std²)·ε̂
    (diffusers' DDIMScheduler.step without clipping; η = 0 is the deterministic DDIM step).
    """
    std = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
    return abar_prev.sqrt() * x0 + (1 - abar_prev - std**2).clamp(min=0).sqrt() * eps, std


# ---------------------------------------------------------------------------------------------
# Sampling


def cfg(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, g: float) -> torch.Tensor:
    """Classifier-free guidance in the diffusers convention: eps_u + g (eps_c - eps_u)."""
    return eps_uncond + g * (eps_cond - eps_uncond)


def unet_eps_both(unet: Any, x: torch.Tensor, t: torch.Tensor, cond: Cond, uncond: Cond
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_uncond, eps_cond) of one network from one batched call on the doubled batch [uncond; cond]."""
    t2 = torch.cat([t, t]) if t.ndim else t  # per-sample timesteps follow the doubled batch
    eps_u, eps_c = unet_eps(unet, torch.cat([x, x]), t2, Cond.cat([uncond, cond])).chunk(2)
    return eps_u, eps_c


def cfg_denoiser(unet_cond: Any, unet_uncond: Any, g: float) -> Denoiser:
    """CFG where each branch may come from its own network; one batched call when they are the same."""

    def denoise(x: torch.Tensor, t: torch.Tensor, cond: Cond, uncond: Cond) -> torch.Tensor:
        if g == 1.0:
            return unet_eps(unet_cond, x, t, cond)
        if unet_cond is unet_uncond:
            eps_u, eps_c = unet_eps_both(unet_cond, x, t, cond, uncond)
        else:
            eps_u, eps_c = unet_eps(unet_uncond, x, t, uncond), unet_eps(unet_cond, x, t, cond)
        return cfg(eps_u, eps_c, g)

    return denoise


def seed_for(*parts: object) -> int:
    """A stable 63-bit seed from the identity of one image (e.g. suite, prompt id, seed index)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def initial_noise(seeds: Sequence[int], shape: tuple[int, int, int]) -> torch.Tensor:
    """Per-image initial noise from its own CPU generator: independent of batch size and device."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


def latent_shape(pipe: Any) -> tuple[int, int, int]:
    side = int(pipe.unet.config.sample_size)
    return (int(pipe.unet.config.in_channels), side, side)


def sampling_scheduler(pipe: Any, name: str = "ddim") -> Any:
    """A fresh scheduler for sampling, from the pipeline's scheduler config."""
    from diffusers import DDIMScheduler

    if name == "ddim":
        return DDIMScheduler.from_config(pipe.scheduler.config)
    if name == "pipeline":
        return pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    raise ValueError(f"unknown sampler {name!r}; available: ddim, pipeline")


@torch.no_grad()
def sample_latents(
    pipe: Any, denoise: Denoiser, cond: Cond, uncond: Cond, noise: torch.Tensor, steps: int, scheduler: Any,
    stop_after: int | None = None, step_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """THE denoising loop: x_T = noise * init_sigma; for each t, x <- step(denoise(x, t), t, x).

    Hooks for online training (defaults: the full deterministic loop): ``stop_after`` = k returns x
    after k steps, i.e. the input of step ``scheduler.timesteps[k]``; ``step_kwargs`` go to
    ``scheduler.step`` (e.g. DDIM ``eta`` and a ``generator`` for stochastic transitions).
    """
    device = pipe.unet.device
    dtype = pipe.unet.dtype
    scheduler.set_timesteps(steps, device=device)
    x = noise.to(device, torch.float32) * scheduler.init_noise_sigma
    cond, uncond = cond.to(device, dtype), uncond.to(device, dtype)
    for i, t in enumerate(scheduler.timesteps):
        if i == stop_after:
            break
        x_in = scheduler.scale_model_input(x, t).to(dtype)
        eps = denoise(x_in, t.expand(x.shape[0]).to(device), cond, uncond)
        x = scheduler.step(eps.float(), t, x, **(step_kwargs or {})).prev_sample
    return x


def generate(
    pipe: Any, denoise: Denoiser, prompts: Sequence[str], seeds: Sequence[int], steps: int, sampler: str = "ddim",
) -> torch.Tensor:
    """Prompts and per-image seeds -> images (B, 3, H, W) in [0, 1] on CPU."""
    device = pipe.unet.device
    cond = encode_prompts(pipe, prompts, device)
    uncond = encode_uncond(pipe, len(prompts), device)
    noise = initial_noise(seeds, latent_shape(pipe))
    latents = sample_latents(pipe, denoise, cond, uncond, noise, steps, sampling_scheduler(pipe, sampler))
    return decode_latents(pipe.vae, latents)
