"""Pretrain the tiny world's base model from scratch: autoencoder, fidelity classifier, UNet + text encoder.

Deterministic for a preset (fixed step counts, seeded CPU generators, 2 threads), so the cache key
is the preset's hash. The result is a real StableDiffusionPipeline folder (model_index.json, unet/,
vae/, text_encoder/, tokenizer/, scheduler/) loaded by the same loader as SD1.5.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from bench.tiny import world
from bench.tiny.tokenizer import build_tokenizer
from metrics import fidelity

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Preset:
    """Everything that changes the pretrained model. Its hash names the cache folder."""

    name: str = "default"
    seed: int = 0
    images_per_caption: int = 48
    vae_channels: tuple[int, ...] = (16, 32, 32)  # 3 levels: scale factor 4, latent 8x8
    latent_channels: int = 4
    vae_steps: int = 2000
    vae_batch: int = 32
    vae_lr: float = 3e-3
    classifier_steps: int = 600
    classifier_batch: int = 64
    unet_channels: tuple[int, ...] = (32, 64, 64)  # latent 8x8 -> 4x4 -> 2x2
    unet_cross_attention: tuple[int, ...] = (1, 1, 0)  # per level: 1 = transformer block (self + text attention)
    unet_heads: int = 1  # one 32/64-wide head: as good as eight narrow ones here, and 24% cheaper
    text_hidden: int = 64
    unet_steps: int = 2500  # base fidelity 0.82/0.88/0.93/0.95 at 1500/2000/2500/3000 (tiny_world.py --curve)
    unet_batch: int = 64
    unet_lr: float = 3e-3
    min_snr_gamma: float = 5.0
    timesteps: str = "logit-normal"  # training timesteps: "logit-normal" (mid-noise, where shapes form) or "uniform"
    ema_decay: float = 0.995
    caption_dropout: float = 0.1  # empty caption, the pipeline's unconditional prompt
    # Derived data (bench/tiny/data.py): not part of the pipeline, but of the world's cache key.
    n_pairs: int = 2000  # tiny-pickapic pairs sampled from the base model
    pickscore_steps: int = 700


PRESETS = {
    "default": Preset(),
    # A smaller instance of the same world for the test suite: same code, minutes -> seconds.
    "micro": Preset(name="micro", images_per_caption=2, vae_channels=(8, 16, 16), vae_steps=30, classifier_steps=30,
                    unet_channels=(16, 32, 32), text_hidden=32, unet_steps=40, unet_batch=32,
                    n_pairs=48, pickscore_steps=30),
}


def _cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _batches(n: int, batch: int, steps: int, g: torch.Generator):
    """Indices of ``steps`` mini-batches, walking seeded permutations of range(n)."""
    perm, pos = torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=g), 0
        yield perm[pos:pos + batch]
        pos += batch


def _optimizer(params, lr: float, total: int, warmup: int):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=True)  # one kernel per step: ~8% of a denoiser step
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, total, warmup))
    return opt, sched


def build_vae(p: Preset):
    from diffusers import AutoencoderKL

    n = len(p.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=p.vae_channels, layers_per_block=1,
        latent_channels=p.latent_channels, norm_num_groups=min(p.vae_channels) // 2, sample_size=world.IMAGE_SIZE,
        mid_block_add_attention=False,
    )


def train_vae(p: Preset, images: torch.Tensor, progress: Progress):
    torch.manual_seed(p.seed)
    vae = build_vae(p)
    g = torch.Generator().manual_seed(p.seed + 1)
    opt, sched = _optimizer(vae.parameters(), p.vae_lr, p.vae_steps, 50)
    # Channels-last: oneDNN's full-resolution convolutions run ~10% faster in it (the denoiser's 8x8 ones
    # do not); the layout goes back to contiguous before saving.
    vae.to(memory_format=torch.channels_last).train()
    for step, idx in enumerate(_batches(len(images), p.vae_batch, p.vae_steps, g)):
        x = (images[idx] * 2 - 1).contiguous(memory_format=torch.channels_last)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        progress("autoencoder", step + 1, p.vae_steps)
    vae.to(memory_format=torch.contiguous_format).eval()
    sample = posterior_means(vae, images[:2048], chunk=512)  # scale latents to unit variance, as SD does
    vae.register_to_config(scaling_factor=float(1.0 / sample.std()))
    return vae


def posterior_means(vae, images: torch.Tensor, chunk: int) -> torch.Tensor:
    """The autoencoder's posterior means of (N, 3, H, W) images in [0, 1], ``chunk`` images per call."""
    with torch.no_grad():
        return torch.cat([vae.encode(images[i:i + chunk] * 2 - 1).latent_dist.mean
                          for i in range(0, len(images), chunk)])


def encode_latents(vae, images: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """The denoiser's training data: posterior means scaled by the autoencoder's scaling_factor."""
    return posterior_means(vae, images, chunk) * vae.config.scaling_factor


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with one std per image (N,), separable 5-tap kernel, replicate padding."""
    n, c, h, w = x.shape
    k = torch.arange(-2, 3, dtype=x.dtype)
    kern = torch.exp(-k[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, 5)
    y = F.pad(x.reshape(1, n * c, h, w), (2, 2, 2, 2), mode="replicate")
    y = F.conv2d(y, kern.view(n * c, 1, 5, 1), groups=n * c)
    y = F.conv2d(y, kern.view(n * c, 1, 1, 5), groups=n * c)
    return y.view(n, c, h, w)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur, pixel noise, brightness jitter and flips: the classifier must see past sampler artefacts."""
    n = x.shape[0]
    out = blur(x, 1.2 * torch.rand(n, generator=g))
    out = out * (0.9 + 0.2 * torch.rand(n, 1, 1, 1, generator=g))
    out = out + 0.08 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(out.shape, generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.clamp(0, 1)


def train_classifier(p: Preset, images: torch.Tensor, labels: torch.Tensor, progress: Progress):
    torch.manual_seed(p.seed + 2)
    net = fidelity.FidelityNet(len(world.SHAPES), len(world.COLOURS))
    g = torch.Generator().manual_seed(p.seed + 3)
    opt, sched = _optimizer(net.parameters(), 3e-3, p.classifier_steps, 50)
    net.train()
    for step, idx in enumerate(_batches(len(images), p.classifier_batch, p.classifier_steps, g)):
        s, c = net(augment(images[idx], g))
        loss = F.cross_entropy(s, labels[idx, 0]) + F.cross_entropy(c, labels[idx, 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        progress("fidelity classifier", step + 1, p.classifier_steps)
    return net.eval()


def caption_words() -> list[str]:
    return sorted({w for c in world.all_captions() for w in c.text.split()})


def build_unet_and_text_encoder(p: Preset, vocab_size: int, special: dict[str, int]):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(p.seed + 4)
    attn = p.unet_cross_attention
    # diffusers reads attention_head_dim as the number of heads (a misnomer it keeps for old configs).
    unet = UNet2DConditionModel(
        sample_size=world.IMAGE_SIZE // 2 ** (len(p.vae_channels) - 1), in_channels=p.latent_channels,
        out_channels=p.latent_channels, block_out_channels=p.unet_channels, layers_per_block=1,
        norm_num_groups=min(p.unet_channels) // 2, cross_attention_dim=p.text_hidden, attention_head_dim=p.unet_heads,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=p.text_hidden, intermediate_size=2 * p.text_hidden,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_TOKENS, **special))
    return unet, text_encoder


MAX_TOKENS = 16  # longest caption is 10 tokens with its start and end markers


def train_denoiser(p: Preset, latents: torch.Tensor, caption_ids: torch.Tensor, captions: list[str], tokenizer,
                   progress: Progress):
    """Joint UNet + text-encoder training on cached latents (row i shows ``captions[caption_ids[i]]``).

    Returns the EMA weights, which are what gets saved.
    """
    from diffusers import DDPMScheduler

    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    unet, text_encoder = build_unet_and_text_encoder(p, len(tokenizer), special)
    ema_unet, ema_text = build_unet_and_text_encoder(p, len(tokenizer), special)
    ema_unet.load_state_dict(unet.state_dict())
    ema_text.load_state_dict(text_encoder.state_dict())
    tokens = tokenizer(captions + [""], padding="max_length", max_length=MAX_TOKENS, truncation=True,
                       return_tensors="pt").input_ids
    empty = len(captions)
    sched = scheduler_config()
    noise_sched = DDPMScheduler(**sched)
    alphas = noise_sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=p.min_snr_gamma) / snr  # min-SNR-gamma weighting for eps-prediction

    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    opt, lr_sched = _optimizer(params, p.unet_lr, p.unet_steps, 100)
    g = torch.Generator().manual_seed(p.seed + 5)
    unet.train(), text_encoder.train()
    for step, idx in enumerate(_batches(len(latents), p.unet_batch, p.unet_steps, g)):
        x0 = latents[idx]
        cap = caption_ids[idx]
        drop = torch.rand(len(idx), generator=g) < p.caption_dropout
        cap = torch.where(drop, torch.full_like(cap, empty), cap)
        noise = torch.randn(x0.shape, generator=g)
        t = sample_timesteps(p.timesteps, len(idx), noise_sched.config.num_train_timesteps, g)
        xt = noise_sched.add_noise(x0, noise, t)
        enc = text_encoder(tokens[cap]).last_hidden_state
        pred = unet(xt, t, encoder_hidden_states=enc).sample
        loss = ((pred - noise).pow(2).mean(dim=(1, 2, 3)) * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        decay = min(p.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        progress("denoiser", step + 1, p.unet_steps)
    return ema_unet.eval(), ema_text.eval()


def sample_timesteps(kind: str, n: int, total: int, g: torch.Generator) -> torch.Tensor:
    """Training timesteps in [0, total). "logit-normal": t / total = sigmoid(N(0, 1)), the density SD3 trains
    with; at 8x8 latents it puts the steps where shapes form (base fidelity 0.825 against 0.777 with "uniform",
    denoiser-only runs of 3000 steps on one autoencoder of world v2)."""
    if kind == "uniform":
        return torch.randint(0, total, (n,), generator=g)
    if kind == "logit-normal":
        return (torch.sigmoid(torch.randn(n, generator=g)) * total).long().clamp(0, total - 1)
    raise ValueError(f"unknown timestep sampling {kind!r}; available: uniform, logit-normal")


def scheduler_config() -> dict:
    """SD1.5's noise schedule (scaled-linear betas, 1000 steps, epsilon prediction)."""
    return {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "prediction_type": "epsilon", "clip_sample": False}
