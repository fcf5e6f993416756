"""Preference alignment as classifier-free guidance: PGD and contrastive PGD (cPGD).

"Rethinking Preference Alignment for Diffusion Models with Classifier-Free Guidance", arXiv 2602.18799;
official code UGVly/PreferenceGuidanceDiffusion (``train.py --sft --sft_mode {win,lose}``,
``pgd_diffusers/pipeline_stable_diffusion_xl_pgd.py``).

Idea: treat preference like a condition and guide towards it at sampling time instead of baking it
into the weights. cPGD (``variant="cpgd"``, default) fine-tunes two modules by plain SFT (ε-MSE,
uniform t, no reference, no β): θ₊ on the preferred image of each pair, θ₋ on the rejected one (ties
removed). At every step, on BOTH CFG rows (uncond and cond),

    ε′ = ε_base + s·(ε₊ − ε₋),   then ordinary CFG  ε = ε′_u + g·(ε′_c − ε′_u)

so the total is CFG(base) + s·[(1 − g)·Δ_u + g·Δ_c] with Δ = ε₊ − ε₋. PGD (``variant="pgd"``) is the
single-module form ε′ = ε_base + s·(ε_DPO − ε_base) with the trained ``dpo`` method's UNet; it
trains nothing itself. Cost per step: cPGD 3 batched UNet calls, PGD 2 (base: 1).

Config ↔ paper/code: ``strength`` = s (``pgd_scale`` / ``cpgd_scale``; user-chosen, sampling only),
``guidance_scale`` = g (diffusers convention). Both modules train with the same seed, so they see
the same captions, noise and timesteps and differ only in the images. Not ported: the shipped SDXL
pipeline always replaces ε_base by 0.9·ε(x, t) + 0.1·ε(x, 500) (a leftover experiment, methods.md §6.2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from methods.core.api import Denoiser, Method, TrainContext, sample_only
from methods.core.diffusion import cfg, per_sample_mse, sample_noise_and_timesteps, unet_eps, unet_eps_both
from methods.core.pairs import PairTrainConfig, noisy_and_target, train_pairs
from methods.core.training import load_trained_unet
from methods.core.types import PAIRS, PairData

VARIANTS = ("cpgd", "pgd")


def contrastive_guidance(eps_base: torch.Tensor, eps_pos: torch.Tensor, eps_neg: torch.Tensor,
                         s: float) -> torch.Tensor:
    """ε′ = ε_base + s·(ε₊ − ε₋); all (B, C, h, w). PGD passes ε_neg = ε_base."""
    return eps_base + s * (eps_pos - eps_neg)


def sft_errors(side: str) -> Callable[..., torch.Tensor]:
    """An ``errors_fn`` for train_pairs: (B,) ε-MSE of the ``side`` ("w" or "l") image of each pair."""

    def errors(unet: Any, ref: Any, batch: PairData, scheduler: Any, generator: torch.Generator) -> torch.Tensor:
        latents = batch.latents_w if side == "w" else batch.latents_l  # (B, C, h, w)
        noise, t = sample_noise_and_timesteps(latents, scheduler.config.num_train_timesteps, generator)
        x_t, target = noisy_and_target(scheduler, latents, noise, t)
        return per_sample_mse(unet_eps(unet, x_t, t, batch.cond), target)  # no reference: plain SFT

    return errors


@dataclass(frozen=True)
class ContrastiveConfig(PairTrainConfig):
    variant: str = "cpgd"  # cpgd: SFT modules θ₊/θ₋; pgd: guide with the trained dpo UNet
    strength: float = sample_only(10.0)  # s; scripts/infer_sdxl_{pgd,cpgd}.sh PGD_SCALE=10
    lr: float = 2.048e-6  # train_sdxl_cpgd.sh: 1e-9 × scale_lr (8 × accum 256 = 2048 on one GPU)
    batch_pairs: int = 2048  # images per step, one from each pair: 8/GPU × accum 256
    warmup_steps: int = 200  # constant_with_warmup 200
    optimizer: str = "adafactor"  # forced for SDXL in train.py, with gradient checkpointing
    gradient_checkpointing: bool = True

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; available: {', '.join(VARIANTS)}")
        if not self.strength >= 0:
            raise ValueError(f"strength must be >= 0, got {self.strength}")
        if self.keep_ties:
            raise ValueError("keep_ties must be False: a tie has no preferred image to train θ₊ on")
        super().validate()


class ContrastiveGuidance(Method):
    id = "contrastive"
    paper = "https://arxiv.org/abs/2602.18799"
    Config = ContrastiveConfig
    trains = True  # cpgd trains θ₊ and θ₋; pgd writes an empty artifact and uses dpo's
    defaults = {
        # tiny world: dpo's tiny schedule. strength: s = 10 (the paper's SDXL value) cost 0.07 fidelity,
        # s = 5 and s = 3 kept it within 0.02 with nearly the same oracle gain (tiny-train and tiny-eval).
        "tiny": {"guidance_scale": 5.0, "strength": 5.0, "lr": 1e-5, "steps": 300, "batch_pairs": 16,
                 "warmup_steps": 30, "prompt_dropout": 0.2, "optimizer": "adamw", "gradient_checkpointing": False},
        # No SD1.5 script ships; the SDXL recipe below with the Salesforce SD1.5 optimizer (AdamW) and
        # guidance 7.5. The paper's SD1.5 strength is not published: s = 10 is the SDXL value.
        "sd15": {"guidance_scale": 7.5, "strength": 10.0, "lr": 2.048e-6, "steps": 2000, "batch_pairs": 2048,
                 "micro_batch_pairs": 16, "warmup_steps": 200, "optimizer": "adamw",
                 "gradient_checkpointing": False},
        # scripts/train_sdxl_cpgd.sh: SFT win/lose, lr 1e-9 × 2048, batch 8 × accum 256, 2000 steps,
        # warmup 200, Adafactor + checkpointing, dropout 0.2; infer_sdxl_cpgd.sh: g 7.5, s 10.
        "sdxl": {"guidance_scale": 7.5, "strength": 10.0, "lr": 2.048e-6, "steps": 2000, "batch_pairs": 2048,
                 "micro_batch_pairs": 8, "warmup_steps": 200, "optimizer": "adafactor",
                 "gradient_checkpointing": True},
    }

    def needs(self) -> frozenset[str]:
        return frozenset({PAIRS}) if self.cfg.variant == "cpgd" else frozenset()

    def packages(self) -> dict[str, str]:
        return super().packages() if self.cfg.variant == "cpgd" else {}  # pgd trains nothing

    def requires(self) -> list[str]:
        return ["dpo"] if self.cfg.variant == "pgd" else []

    def train(self, ctx: TrainContext) -> None:
        """cPGD: θ₊ by SFT on the winners into out_dir/positive, θ₋ on the losers into out_dir/negative."""
        if self.cfg.variant == "pgd":
            return  # the module is the trained dpo UNet

        def loss_fn(err: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            return err.mean(), {}  # F.mse_loss(pred, target).mean() over the images of the batch

        for i, (name, side) in enumerate((("positive", "w"), ("negative", "l"))):
            sub = replace(ctx, out_dir=Path(ctx.out_dir) / name,
                          log=lambda step, v, name=name: ctx.log(step, {f"{name}/{k}": x for k, x in v.items()}),
                          progress=lambda done, total, i=i: ctx.progress(i * total + done, 2 * total))
            train_pairs(sub, self.cfg, loss_fn, errors_fn=sft_errors(side))

    def denoiser(self, pipe: Any, artifact: Path | None, artifacts: Callable[[str], Path]) -> Denoiser:
        if self.cfg.variant == "pgd":
            pos, neg = load_trained_unet(pipe, artifacts("dpo")), pipe.unet
        elif artifact is None:
            raise ValueError("contrastive (cpgd) samples with θ₊ and θ₋: train it first (artifact is None)")
        else:
            pos, neg = load_trained_unet(pipe, Path(artifact) / "positive"), load_trained_unet(
                pipe, Path(artifact) / "negative")
        base, s, g = pipe.unet, self.cfg.strength, self.cfg.guidance_scale

        def both(unet: Any, x: torch.Tensor, t: torch.Tensor, cond: Any, uncond: Any) -> torch.Tensor:
            # (2B, ...) [uncond; cond] rows from one batched call; only the cond rows when g = 1
            return unet_eps(unet, x, t, cond) if g == 1.0 else torch.cat(unet_eps_both(unet, x, t, cond, uncond))

        def denoise(x: torch.Tensor, t: torch.Tensor, cond: Any, uncond: Any) -> torch.Tensor:
            eps_base = both(base, x, t, cond, uncond)
            eps_pos = both(pos, x, t, cond, uncond)
            eps_neg = eps_base if neg is base else both(neg, x, t, cond, uncond)  # PGD: ε₋ = ε_base
            eps = contrastive_guidance(eps_base, eps_pos, eps_neg, s)
            return eps if g == 1.0 else cfg(*eps.chunk(2), g)

        return denoise


METHOD = ContrastiveGuidance
