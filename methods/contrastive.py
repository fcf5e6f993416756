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
single-module form ε′ = ε_base + s·(ε_DPO − ε_base) with a Diffusion-DPO UNet that it trains itself
(``scripts/train_sdxl_pgd.sh``: the DPO objective at the PGD recipe's lr 1e-9 × 2048 = 2.048e-6, ten times
below the Salesforce launchers' that the ``dpo`` method uses). Cost per step: cPGD 3 batched UNet
calls, PGD 2 (base: 1).

Config ↔ paper/code: ``strength`` = s (``pgd_scale`` / ``cpgd_scale``; user-chosen, sampling only),
``guidance_scale`` = g (diffusers convention), ``beta`` = β_SF of PGD's DPO module (``--beta_dpo``;
cPGD's SFT has no β). Both modules train with the same seed, so they see
the same captions, noise and timesteps and differ only in the images. Not ported: the shipped SDXL
pipeline always replaces ε_base by 0.9·ε(x, t) + 0.1·ε(x, 500) (a leftover experiment, methods.md §6.2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from methods.core.api import Denoiser, Method, TrainContext, sample_only
from methods.core.diffusion import (cfg, latent_shape, per_sample_mse, sample_noise_and_timesteps, unet_eps,
                                    unet_eps_both)
from methods.core.dpo_loss import DPOConfig, dpo_loss
from methods.core.pairs import TINY_DATA, PairErrors, noisy_and_target, train_pairs
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


def _sub(folder: Path | None, name: str) -> Path | None:
    """A module's part of an intermediate checkpoint (positive/ or negative/ within the step's folder)."""
    return None if folder is None else folder / name


@dataclass(frozen=True)
class ContrastiveConfig(DPOConfig):
    variant: str = "cpgd"  # cpgd: SFT modules θ₊/θ₋; pgd: a DPO module it trains (beta: train_sdxl_pgd.sh 5000)
    strength: float = sample_only(10.0)  # s; scripts/infer_sdxl_{pgd,cpgd}.sh PGD_SCALE=10
    lr: float = 2.048e-6  # train_sdxl_{cpgd,pgd}.sh: 1e-9 × scale_lr (8 × accum 256 = 2048 on one GPU)
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
    trains = True  # cpgd trains θ₊ and θ₋ (positive/, negative/); pgd its DPO module (unet/)
    defaults = {
        # tiny world: dpo's tiny schedule. strength: s = 10 (the paper's SDXL value) cost 0.07 fidelity,
        # s = 5 and s = 3 kept it within 0.02 with nearly the same oracle gain (tiny-train and tiny-eval).
        # PGD's DPO module then is dpo's tiny run (β 5000). Flip kept, posterior mean: TINY_DATA (core/pairs.py).
        "tiny": {"guidance_scale": 5.0, "strength": 5.0, "lr": 1e-5, "steps": 300, "batch_pairs": 16,
                 "warmup_steps": 30, "prompt_dropout": 0.2, "optimizer": "adamw", "gradient_checkpointing": False,
                 **TINY_DATA},
        # No SD1.5 script ships; the SDXL recipe below with the Salesforce SD1.5 optimizer (AdamW) and
        # guidance 7.5. The paper's SD1.5 strength is not published: s = 10 is the SDXL value.
        "sd15": {"guidance_scale": 7.5, "strength": 10.0, "lr": 2.048e-6, "steps": 2000, "batch_pairs": 2048,
                 "micro_batch_pairs": 16, "warmup_steps": 200, "optimizer": "adamw",
                 "gradient_checkpointing": False, "beta": 5000.0, "random_flip": "image", "latent_sample": True},
        # scripts/train_sdxl_cpgd.sh: SFT win/lose, lr 1e-9 × 2048, batch 8 × accum 256, 2000 steps,
        # warmup 200, Adafactor + checkpointing, dropout 0.2; infer_sdxl_cpgd.sh: g 7.5, s 10.
        # scripts/train_sdxl_pgd.sh: the same for PGD's DPO module, with --beta_dpo 5000.
        # train.py: each image flipped on its own (:777, :794, :861), a posterior sample (:1050).
        "sdxl": {"guidance_scale": 7.5, "strength": 10.0, "lr": 2.048e-6, "steps": 2000, "batch_pairs": 2048,
                 "micro_batch_pairs": 8, "warmup_steps": 200, "optimizer": "adafactor",
                 "gradient_checkpointing": True, "beta": 5000.0, "random_flip": "image", "latent_sample": True},
    }

    def needs(self) -> frozenset[str]:
        return frozenset({PAIRS})

    def train(self, ctx: TrainContext) -> None:
        """cPGD: θ₊ by SFT on the winners into out_dir/positive, θ₋ on the losers into out_dir/negative.
        PGD: one Diffusion-DPO UNet into out_dir (train_sdxl_pgd.sh runs the DPO train.py at its own lr)."""
        if self.cfg.variant == "pgd":
            c, h, w = latent_shape(ctx.pipe)
            beta_sf = self.cfg.beta_sf(c * h * w)

            def loss_dpo(e: PairErrors) -> tuple[torch.Tensor, dict[str, float]]:
                loss, _, acc = dpo_loss(e.model_err_w, e.model_err_l, e.ref_err_w, e.ref_err_l, beta_sf)
                return loss, {"implicit_acc": float(acc)}

            train_pairs(ctx, self.cfg, loss_dpo)
            return

        def loss_fn(err: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            return err.mean(), {}  # F.mse_loss(pred, target).mean() over the images of the batch

        for i, (name, side) in enumerate((("positive", "w"), ("negative", "l"))):
            sub = replace(ctx, out_dir=Path(ctx.out_dir) / name,
                          snapshot=lambda step, name=name: _sub(ctx.snapshot(step), name),
                          log=lambda step, v, name=name: ctx.log(step, {f"{name}/{k}": x for k, x in v.items()}),
                          progress=lambda done, total, i=i: ctx.progress(i * total + done, 2 * total))
            train_pairs(sub, self.cfg, loss_fn, errors_fn=sft_errors(side))

    def denoiser(self, pipe: Any, artifact: Path | None, artifacts: Callable[[str], Path]) -> Denoiser:
        if artifact is None:
            what = "its DPO module" if self.cfg.variant == "pgd" else "θ₊ and θ₋"
            raise ValueError(f"contrastive ({self.cfg.variant}) samples with {what}: train it first (artifact is None)")
        if self.cfg.variant == "pgd":
            pos, neg = load_trained_unet(pipe, artifact), pipe.unet
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
