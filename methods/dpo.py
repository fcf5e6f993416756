"""Diffusion-DPO: Diffusion Model Alignment Using Direct Preference Optimization.

Wallace et al., arXiv 2311.12908; official code SalesforceAIResearch/DiffusionDPO (``train.py``).

Idea: DPO's implicit reward for a diffusion model is the drop in denoising error relative to a
frozen reference. For a pair (c, x^w, x^l), one timestep t and one noise ε shared by both images:

    Δ = [err_θ(x^w) − err_ref(x^w)] − [err_θ(x^l) − err_ref(x^l)],  err = mean_{C,H,W} (ε_θ(x_t, t, c) − ε)²
    z = −(β/2)·Δ,   L = mean(−log σ(z))

so the policy learns to denoise the preferred image better than the reference does, and the other
one worse. Implicit accuracy = fraction of pairs with z > 0.

Config ↔ paper: ``beta`` = β in the Salesforce (SF) convention above (paper pseudocode and diffusers'
SD1.5 script differ by constants; ``beta_convention`` converts on load, methods.md §0.1):
    "sf":    z = −0.5·β·Δ                       (official SD1.5/SDXL full fine-tunes)
    "hf15":  z = −β·Δ            → β_SF = 2·β    (diffusers train_diffusion_dpo.py)
    "paper": z = −β·Δ_sum over C·H·W → β_SF = 2·β·C·H·W (C·H·W of the model's latents)
``prompt_dropout`` = ``proportion_empty_prompts``; ``lora_rank`` = 0 is the official full fine-tune,
> 0 the diffusers LoRA variant (reference = the same UNet with adapters disabled); ``random_flip`` and
``latent_sample`` = the data augmentation of each use of a pair in train.py (a horizontal flip per
image, a VAE posterior sample; methods/core/pairs.py ``draw_latents``).
"""

from __future__ import annotations

import torch

from methods.core.api import TrainContext
from methods.core.diffusion import latent_shape
# The objective and its config live in methods.core (sdpo and npo build on them); re-exported here.
from methods.core.dpo_loss import CONVENTIONS, DPOConfig, convert_beta, dpo_loss
from methods.core.pairs import TINY_DATA, PairErrors, train_pairs
from methods.core.training import TrainedUNetMethod
from methods.core.types import PAIRS

__all__ = ["CONVENTIONS", "DPOConfig", "DiffusionDPO", "METHOD", "convert_beta", "dpo_loss"]


class DiffusionDPO(TrainedUNetMethod):
    id = "dpo"
    paper = "https://arxiv.org/abs/2311.12908"
    Config = DPOConfig
    defaults = {
        # tiny world: the official β and warmup; lr, steps and batch sized for a 2-core CPU run (~2 min).
        # Untuned: the first setting tried moved the oracle (benchmarks/run_default.py).
        # Flip kept, posterior mean instead of samples: TINY_DATA (methods/core/pairs.py says why).
        "tiny": {"guidance_scale": 5.0, "beta": 5000.0, "lr": 1e-5, "steps": 300, "batch_pairs": 16,
                 "warmup_steps": 30, "prompt_dropout": 0.2, **TINY_DATA},
        # launchers/sd15.sh: β 5000, lr 1e-8 × 2048, AdamW, 2000 steps, 2048 pairs, warmup 500;
        # guidance 7.5 from quick_samples.ipynb; micro-batch is a memory choice, not the paper's.
        # train.py (both models): each image flipped on its own (:760, :777), a posterior sample (:1028).
        "sd15": {"guidance_scale": 7.5, "beta": 5000.0, "lr": 2.048e-5, "steps": 2000, "batch_pairs": 2048,
                 "micro_batch_pairs": 16, "warmup_steps": 500, "optimizer": "adamw", "random_flip": "image",
                 "latent_sample": True},
        # launchers/sdxl.sh: same but Adafactor, warmup 200, gradient checkpointing forced;
        # guidance 5 from quick_samples.ipynb.
        "sdxl": {"guidance_scale": 5.0, "beta": 5000.0, "lr": 2.048e-5, "steps": 2000, "batch_pairs": 2048,
                 "micro_batch_pairs": 4, "warmup_steps": 200, "optimizer": "adafactor",
                 "gradient_checkpointing": True, "random_flip": "image", "latent_sample": True},
    }

    def needs(self) -> frozenset[str]:
        return frozenset({PAIRS})

    def train(self, ctx: TrainContext) -> None:
        c, h, w = latent_shape(ctx.pipe)
        beta_sf = self.cfg.beta_sf(c * h * w)

        def loss_fn(e: PairErrors) -> tuple[torch.Tensor, dict[str, float]]:
            loss, z, acc = dpo_loss(e.model_err_w, e.model_err_l, e.ref_err_w, e.ref_err_l, beta_sf)
            return loss, {"implicit_acc": float(acc), "ref_err_w": float(e.ref_err_w.mean()),
                          "ref_err_l": float(e.ref_err_l.mean())}

        train_pairs(ctx, self.cfg, loss_fn)


METHOD = DiffusionDPO
