"""The Diffusion-DPO objective and its config, shared by the methods built on it (dpo, sdpo, npo).

Wallace et al., arXiv 2311.12908. For a pair (c, x^w, x^l), one timestep t and one noise ε shared by
both images:

    Δ = [err_θ(x^w) − err_ref(x^w)] − [err_θ(x^l) − err_ref(x^l)],  err = mean_{C,H,W} (ε_θ(x_t, t, c) − ε)²
    z = −(β/2)·Δ,   L = mean(−log σ(z))

``beta`` is β in the Salesforce (SF) convention above; the paper pseudocode and diffusers' SD1.5
script differ by constants, and ``beta_convention`` converts on load (methods.md §0.1):
    "sf":    z = −0.5·β·Δ                       (official SD1.5/SDXL full fine-tunes)
    "hf15":  z = −β·Δ            → β_SF = 2·β    (diffusers train_diffusion_dpo.py, NPO train_sd15.py)
    "paper": z = −β·Δ_sum over C·H·W → β_SF = 2·β·C·H·W (C·H·W of the model's latents)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.core.pairs import PairTrainConfig

CONVENTIONS = ("sf", "hf15", "paper")


def convert_beta(value: float, convention: str, chw: int | None = None) -> float:
    """β given in ``convention`` -> β in the SF convention (z = −β_SF/2·Δ with Δ of per-sample means)."""
    if convention == "sf":
        return float(value)
    if convention == "hf15":  # z = −β_HF·Δ
        return 2.0 * value
    if convention == "paper":  # z = −β_sum·Δ_sum, Δ_sum = C·H·W·Δ
        if not chw:
            raise ValueError("beta_convention 'paper' needs C·H·W of the latents (known once the model is)")
        return 2.0 * value * chw
    raise ValueError(f"unknown beta_convention {convention!r}; available: {', '.join(CONVENTIONS)}")


def dpo_loss(
    model_err_w: torch.Tensor, model_err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor,
    beta_sf: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each error is (B,) per-sample MSE over C, H, W. Returns loss (), z (B,), implicit accuracy ()."""
    model_diff = model_err_w - model_err_l  # (B,)
    ref_diff = ref_err_w - ref_err_l  # (B,)
    z = -0.5 * beta_sf * (model_diff - ref_diff)  # (B,) "inside_term" in train.py
    loss = -F.logsigmoid(z).mean()  # mean outside the log-sigmoid (diffusers #6702)
    return loss, z, (z > 0).float().mean()


@dataclass(frozen=True)
class DPOConfig(PairTrainConfig):
    beta: float = 5000.0  # β in the SF convention, z = −β/2·Δ (official launchers)
    beta_convention: str = "sf"  # the convention ``beta`` is given in: sf | hf15 | paper

    def __post_init__(self) -> None:
        # Store β in the SF convention so that equal objectives hash equal; "paper" needs C·H·W of
        # the model's latents and is converted in train().
        if self.beta_convention == "hf15":
            object.__setattr__(self, "beta", convert_beta(self.beta, "hf15"))
            object.__setattr__(self, "beta_convention", "sf")

    def validate(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.beta_convention not in CONVENTIONS:
            raise ValueError(f"unknown beta_convention {self.beta_convention!r}; available: {', '.join(CONVENTIONS)}")
        super().validate()

    def beta_sf(self, chw: int | None) -> float:
        return convert_beta(self.beta, self.beta_convention, chw)
