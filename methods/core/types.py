"""The types every part of ``methods/`` shares: encoded prompts, training data, the per-step noise rule.

Also the names of what a method can need to train (``Method.needs``); each is the ``TrainContext``
field that provides it, so the harness prepares only what the planned methods ask for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

PAIRS = "pairs"  # preference pairs, latents and embeddings cached (ctx.pairs)
IMAGES = "images"  # captioned images without labels (ctx.images)
PROMPTS = "prompts"  # training captions, for online methods (ctx.prompts)
REWARD = "reward"  # a reward model in the training loop (ctx.reward)
NEEDS = frozenset({PAIRS, IMAGES, PROMPTS, REWARD})


@dataclass
class Cond:
    """Encoded prompts for one batch: what the UNet needs besides the latents and the timestep.

    ``embeds`` is (B, L, D). For SDXL ``added`` holds ``text_embeds`` (pooled, (B, D2)) and
    ``time_ids`` ((B, 6)); for SD1.5-layout models it is empty.
    """

    embeds: torch.Tensor
    added: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def index(self, idx: torch.Tensor | slice) -> "Cond":
        return Cond(self.embeds[idx], {k: v[idx] for k, v in self.added.items()})

    def repeat(self, n: int) -> "Cond":
        return Cond(self.embeds.repeat(n, 1, 1), {k: v.repeat(n, 1) for k, v in self.added.items()})

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Cond":
        def move(v: torch.Tensor) -> torch.Tensor:
            return v.to(device=device, dtype=dtype if v.is_floating_point() and dtype else v.dtype)

        return Cond(move(self.embeds), {k: move(v) for k, v in self.added.items()})

    @staticmethod
    def cat(conds: list["Cond"]) -> "Cond":
        keys = conds[0].added.keys()
        return Cond(torch.cat([c.embeds for c in conds]), {k: torch.cat([c.added[k] for c in conds]) for k in keys})


class Denoiser(Protocol):
    """The per-step noise prediction rule the shared sampling loop calls: eps = denoise(x, t, cond, uncond)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, uncond: Cond) -> torch.Tensor: ...


@dataclass
class PairData:
    """Preference pairs with cached latents and text embeddings (winner first, ties removed or kept).

    latents_w, latents_l: (N, C, h, w) scaled VAE latents; cond: encoded captions (N rows);
    label: (N,) 1.0 when the first image is preferred, 0.5 for a kept tie.
    """

    latents_w: torch.Tensor
    latents_l: torch.Tensor
    cond: Cond
    label: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return self.latents_w.shape[0]


@dataclass
class ImageData:
    """Captioned images (no labels) with cached latents and embeddings, for methods that train without pairs."""

    latents: torch.Tensor
    cond: Cond
    captions: list[str]

    def __len__(self) -> int:
        return self.latents.shape[0]
