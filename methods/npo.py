"""Diffusion-NPO: Negative Preference Optimization for better preference-aligned generation.

Wang et al., arXiv 2505.11245 (ICLR 2025); official code G-U-N/Diffusion-NPO (``DPO-DPO-NPO/
train_sd15.py``, ``train_sdxl.py``, ``gen.py``, ``gen_xl.py``).

Idea: classifier-free guidance steers away from its unconditional prediction, so that prediction
should come from a model that knows what humans DISLIKE. Train a preference optimizer on pairs with
the labels flipped (here Diffusion-DPO, as a LoRA from the BASE model, reference = adapters off)
and use the result only in the unconditional branch; the positive model (the base, or an aligned
model such as dpo) keeps the conditional branch. Two separate UNet calls per step:

    ε = ε_neg(x_t, uncond) + g·(ε_pos(x_t, cond) − ε_neg(x_t, uncond))

The negative weights mix as in ``gen.py`` / ``gen_xl.py`` (paper: θ_neg = θ + α·η + β·δ):

    θ_neg = m·θ_base + (1 − m)·θ_pos + δ_npo,   δ_npo = θ_npo − θ_base,   m = ``merge_weight``

so with the default m = 0, θ_neg = θ_pos + δ_npo, and with the base as positive, θ_neg = θ_npo.

Config ↔ paper/code: ``beta`` = β_SF of the flipped DPO loss (``--beta_dpo``; SD1.5's 500 is in the
HF-1.5 convention z = −β·Δ, i.e. β_SF 1000); ``stack_on`` = the method whose trained UNet is θ_pos
("" = the base model); ``merge_weight`` = m (α = 1 − m, β = 1). Ties are KEPT by default, as in the
official code (it never filters label_0 == 0.5); a tie keeps its stored order (jpg_0 first), because
the official loader swaps only when label_0 == 1. No prompt dropout (the NPO scripts have none).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from methods.core.api import Denoiser, TrainContext, sample_only
from methods.core.diffusion import cfg_denoiser, latent_shape
from methods.core.dpo_loss import DPOConfig, dpo_loss
from methods.core.pairs import TINY_DATA, PairErrors, train_pairs
from methods.core.training import TrainedUNetMethod, load_trained_unet
from methods.core.types import PAIRS, PairData


def flip_pairs(data: PairData) -> PairData:
    """Swap winner and loser of every labelled pair (label 1); ties (0.5) keep their stored order.

    The result is what NPO's DPO sees as "winner first": the human-rejected image of each pair.
    """
    if not torch.all((data.label == 1.0) | (data.label == 0.5)):
        raise ValueError("pair labels must be 1.0 (first image preferred) or 0.5 (tie)")
    return data.swapped(data.label == 1.0)  # every cached view: means, posterior stds, flips


def negative_weights(base: dict[str, torch.Tensor], positive: dict[str, torch.Tensor],
                     npo: dict[str, torch.Tensor], merge_weight: float) -> dict[str, torch.Tensor]:
    """θ_neg = m·θ_base + (1 − m)·θ_pos + (θ_npo − θ_base), per state-dict entry, in float32.

    Non-floating entries are taken from ``base``; results keep each entry's dtype.
    """
    out = {}
    for key, b in base.items():
        if not b.is_floating_point():
            out[key] = b
            continue
        b32, p32, n32 = b.float(), positive[key].float(), npo[key].float()
        out[key] = (merge_weight * b32 + (1.0 - merge_weight) * p32 + (n32 - b32)).to(b.dtype)
    return out


@dataclass(frozen=True)
class NPOConfig(DPOConfig):
    beta: float = 1000.0  # β_SF; run_sd15.sh --beta_dpo=500 in the HF-1.5 convention (z = −β·Δ)
    lr: float = 5e-6  # run_sd15.sh / run_sdxl.sh, constant schedule
    warmup_steps: int = 0  # --lr_warmup_steps=0
    steps: int = 2000  # the released weights are the 2k-iteration checkpoints (max_train_steps 5000)
    batch_pairs: int = 64  # run_sd15.sh: 64/GPU × accum 1 (GPU count not stated)
    keep_ties: bool = True  # the official loader never drops label_0 == 0.5
    prompt_dropout: float = 0.0  # the NPO scripts have no caption dropout
    lora_rank: int = 8  # --rank=8, alpha = rank, to_q/k/v/out.0; 0 = a full negative fine-tune
    stack_on: str = sample_only("")  # θ_pos: "" = base, or a method id whose trained UNet is used (e.g. "dpo")
    merge_weight: float = sample_only(0.0)  # m in θ_neg = m·θ_base + (1 − m)·θ_pos + δ_npo (gen.py default)

    def validate(self) -> None:
        if self.stack_on == "npo":
            raise ValueError("stack_on must name another method, not 'npo' itself")
        if self.stack_on == "base":
            raise ValueError("stack_on='base': use stack_on='' for the base model")
        if not 0.0 <= self.merge_weight <= 1.0:
            raise ValueError(f"merge_weight must be in [0, 1], got {self.merge_weight}")
        super().validate()


class DiffusionNPO(TrainedUNetMethod):
    id = "npo"
    paper = "https://arxiv.org/abs/2505.11245"
    Config = NPOConfig
    defaults = {
        # tiny world: dpo's tiny recipe on flipped labels, as a FULL negative fine-tune. The rank-8 LoRA
        # (attention only, which the tiny UNet has at two levels) barely moved the unconditional branch:
        # oracle win 0.47-0.53 on tiny-train for lr 1e-4/3e-4, β 2500-10000, 300/600 steps, 64 pairs;
        # full fine-tune 0.70 / 0.64 (seeds 0 / 1), world v3, before the flip (TINY_DATA, methods/core/pairs.py).
        "tiny": {"guidance_scale": 5.0, "beta": 5000.0, "lr": 1e-5, "steps": 300, "batch_pairs": 16,
                 "warmup_steps": 30, "lora_rank": 0, **TINY_DATA},
        # DPO-DPO-NPO/run_sd15.sh: β 500 (HF-1.5 = β_SF 1000), lr 5e-6 constant, rank 8, batch 64,
        # fp16 + 8-bit AdamW, seed 0; gen.py: CFG 7.5, merge_weight 0. train_sd15.py flips each image on its
        # own (RandomHorizontalFlip per image, :671, :681) and samples the posterior (:811-814).
        "sd15": {"guidance_scale": 7.5, "beta": 1000.0, "lr": 5e-6, "steps": 2000, "batch_pairs": 64,
                 "micro_batch_pairs": 16, "warmup_steps": 0, "lora_rank": 8, "optimizer": "adamw8bit",
                 "random_flip": "image", "latent_sample": True},
        # DPO-DPO-NPO/run_sdxl.sh: β_SF 2000 (train_sdxl.py has the 0.5), lr 5e-6 constant, rank 8,
        # batch 30/GPU × accum 2, gradient checkpointing, 8-bit AdamW (--use_8bit_adam); gen_xl.sh: CFG 5.
        # train_sdxl.py flips the channel-stacked pair with one coin (:805) and samples the posterior (:952-955).
        "sdxl": {"guidance_scale": 5.0, "beta": 2000.0, "lr": 5e-6, "steps": 2000, "batch_pairs": 60,
                 "micro_batch_pairs": 30, "warmup_steps": 0, "lora_rank": 8, "optimizer": "adamw8bit",
                 "gradient_checkpointing": True, "random_flip": "pair", "latent_sample": True},
    }

    def needs(self) -> frozenset[str]:
        return frozenset({PAIRS})

    def requires(self) -> list[str]:
        return [self.cfg.stack_on] if self.cfg.stack_on else []

    def train(self, ctx: TrainContext) -> None:
        """The flipped-label DPO LoRA, from the base model whatever ``stack_on`` is (as official)."""
        c, h, w = latent_shape(ctx.pipe)
        beta_sf = self.cfg.beta_sf(c * h * w)

        def loss_fn(e: PairErrors) -> tuple[torch.Tensor, dict[str, float]]:
            loss, _, acc = dpo_loss(e.model_err_w, e.model_err_l, e.ref_err_w, e.ref_err_l, beta_sf)
            return loss, {"implicit_acc": float(acc)}  # accuracy on the FLIPPED labels

        train_pairs(replace(ctx, pairs=lambda: flip_pairs(ctx.pairs())), self.cfg, loss_fn)

    def denoiser(self, pipe: Any, artifact: Path | None, artifacts: Callable[[str], Path]) -> Denoiser:
        npo = self.trained_unet(pipe, artifact, "its trained negative model")  # θ_base + δ_npo, fused
        if not self.cfg.stack_on:
            return cfg_denoiser(pipe.unet, npo, self.cfg.guidance_scale)  # θ_neg = θ_npo exactly
        positive = load_trained_unet(pipe, artifacts(self.cfg.stack_on))
        negative = copy.deepcopy(pipe.unet)
        with torch.no_grad():
            negative.load_state_dict(negative_weights(pipe.unet.state_dict(), positive.state_dict(),
                                                      npo.state_dict(), self.cfg.merge_weight))
        del npo
        return cfg_denoiser(positive, negative.eval(), self.cfg.guidance_scale)


METHOD = DiffusionNPO
