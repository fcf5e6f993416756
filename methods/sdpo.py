"""Diffusion-SDPO: Safeguarded Direct Preference Optimization for Diffusion Models.

arXiv 2511.03317; official code AIDC-AI/Diffusion-SDPO (``train.py``, ``get_adaptive_lose_l_scale``).

Idea: the DPO gradient pushes the winner's error down and the loser's up; when the two gradients are
aligned, the loser term can drag the winner's error UP as well. Write the update as
d = −∇L_w + λ∇L_l. To first order the winner's loss changes by ⟨∇L_w, d⟩; asking for
⟨∇L_w, d⟩ ≤ −μ‖∇L_w‖² gives the closed form

    λ = min(1, (1 − μ)·‖∇L_w‖² / ⟨∇L_l, ∇L_w⟩)  if ⟨∇L_l, ∇L_w⟩ > 0,  else 1,

with the parameter gradients replaced by OUTPUT-space gradients (the paper's near-isometry
assumption J_wᵀJ_l ≈ I). ∇ of the MSE is ∝ e = ε_θ − target, so λ = (1 − μ)·‖e_w‖² / ⟨e_l, e_w⟩,
pooled over the whole micro-batch (all pairs, all C, H, W: one scalar per micro-batch, as the
official code), detached. It scales only the loser's gradient, straight through:
L_l' = sg(L_l) + λ·(L_l − sg(L_l)), so the DPO loss VALUE is unchanged. Everything else is
Diffusion-DPO (methods/core/dpo_loss.py): SF β, shared noise and t, ties removed, prompt dropout 0.2.

Config ↔ paper: ``mu`` = μ ∈ [0, 1] (``--winner_preserving_mu``; larger = more conservative, μ = 0
only keeps the winner's loss from rising to first order); ``beta`` = β_SF (``--beta_dpo``); the
other fields are Diffusion-DPO's. The per-step ``lambda`` (mean over micro-batches) goes to the train log.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.core.api import TrainContext
from methods.core.diffusion import latent_shape
from methods.core.dpo_loss import DPOConfig, dpo_loss
from methods.core.pairs import TINY_DATA, PairErrors, train_pairs
from methods.core.training import TrainedUNetMethod
from methods.core.types import PAIRS

LAMBDA_EPS = 1e-9  # official: λ = (1−μ)·num / (den + 1e-9), num and den on the gradients of the means


def safeguard_lambda(e_w: torch.Tensor, e_l: torch.Tensor, mu: float) -> torch.Tensor:
    """The safe loser scale λ () from the winner and loser output errors e = pred − target, (B, C, h, w).

    As ``get_adaptive_lose_l_scale``: g = ∂mean(e²)/∂pred = 2e/N over the whole half-batch;
    λ = (1−μ)·‖g_w‖² / (⟨g_l, g_w⟩ + 1e-9) when ⟨g_l, g_w⟩ > 0, else 1; clamped to [0, 1]; no grad.
    """
    e_w, e_l = e_w.detach().float(), e_l.detach().float()
    g_w, g_l = 2.0 * e_w / e_w.numel(), 2.0 * e_l / e_l.numel()  # (B, C, h, w) output-space gradients
    num = g_w.pow(2).sum()  # ‖g_w‖²
    den = (g_l * g_w).sum()  # ⟨g_l, g_w⟩
    lam = torch.where(den > 0, (1.0 - mu) * num / (den + LAMBDA_EPS), torch.ones_like(den))
    return lam.clamp(0.0, 1.0)


def sdpo_loss(
    model_err_w: torch.Tensor, model_err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor,
    beta_sf: float, lam: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss with the loser's gradient scaled by λ; errors (B,). Returns loss (), z (B,), accuracy ()."""
    scaled_l = model_err_l.detach() + lam * (model_err_l - model_err_l.detach())  # (B,) same value, λ·grad
    return dpo_loss(model_err_w, scaled_l, ref_err_w, ref_err_l, beta_sf)


@dataclass(frozen=True)
class SDPOConfig(DPOConfig):
    mu: float = 0.9  # μ, winner_preserving_mu (official sd15_diffusion_dpo.sh)

    def validate(self) -> None:
        if not 0.0 <= self.mu <= 1.0:
            raise ValueError(f"mu must be in [0, 1], got {self.mu}")
        super().validate()


class DiffusionSDPO(TrainedUNetMethod):
    id = "sdpo"
    paper = "https://arxiv.org/abs/2511.03317"
    Config = SDPOConfig
    defaults = {
        # tiny world: dpo's tiny values plus μ of the SD1.5 script, so that the two differ only by λ.
        "tiny": {"guidance_scale": 5.0, "beta": 5000.0, "mu": 0.9, "lr": 1e-5, "steps": 300, "batch_pairs": 16,
                 "warmup_steps": 30, "prompt_dropout": 0.2, **TINY_DATA},
        # scripts/train/sd15_diffusion_dpo.sh: β 5000, μ 0.9, lr 1e-8 × 2048 (scale_lr), bf16, AdamW,
        # 2000 steps, batch 8/GPU × accum 32 × 8 GPUs = 2048 pairs, constant_with_warmup 500.
        # Guidance: the eval scripts use "cfg 7.5" as ε_c + s(ε_c − ε_u), i.e. diffusers g = 8.5.
        # train.py (both models): each image flipped on its own (:818, :835), a posterior sample (:1085).
        "sd15": {"guidance_scale": 8.5, "beta": 5000.0, "mu": 0.9, "lr": 2.048e-5, "steps": 2000,
                 "batch_pairs": 2048, "micro_batch_pairs": 8, "warmup_steps": 500, "optimizer": "adamw",
                 "random_flip": "image", "latent_sample": True},
        # scripts/train/sdxl_diffusion_dpo.sh: β 5000, μ 0.6, lr 1e-9 × 2048 (scale_lr), Adafactor (forced)
        # and gradient checkpointing, 2000 steps, 2048 pairs, warmup 500; eval "cfg 7.5" = diffusers g 8.5.
        "sdxl": {"guidance_scale": 8.5, "beta": 5000.0, "mu": 0.6, "lr": 2.048e-6, "steps": 2000,
                 "batch_pairs": 2048, "micro_batch_pairs": 8, "warmup_steps": 500, "optimizer": "adafactor",
                 "gradient_checkpointing": True, "random_flip": "image", "latent_sample": True},
    }

    def needs(self) -> frozenset[str]:
        return frozenset({PAIRS})

    def train(self, ctx: TrainContext) -> None:
        c, h, w = latent_shape(ctx.pipe)
        beta_sf, mu = self.cfg.beta_sf(c * h * w), self.cfg.mu

        def loss_fn(e: PairErrors) -> tuple[torch.Tensor, dict[str, float]]:
            err_w, err_l = (e.model_pred - e.target).chunk(2)  # (B, C, h, w) each, winners first
            lam = safeguard_lambda(err_w, err_l, mu)
            loss, z, acc = sdpo_loss(e.model_err_w, e.model_err_l, e.ref_err_w, e.ref_err_l, beta_sf, lam)
            return loss, {"lambda": float(lam), "implicit_acc": float(acc), "ref_err_w": float(e.ref_err_w.mean()),
                          "ref_err_l": float(e.ref_err_l.mean())}

        train_pairs(ctx, self.cfg, loss_fn)


METHOD = DiffusionSDPO
