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

    latents_w, latents_l: (N, C, h, w) scaled VAE posterior means of the winner and loser images;
    cond: encoded captions (N rows); label: (N,) 1.0 when the first image is preferred, 0.5 for a kept tie.

    The rest describe each image's posterior, for training that draws its latents as the official
    Diffusion-DPO code does (methods/core/pairs.py ``draw_latents``): std_w, std_l: (N, C, h, w) the
    posterior standard deviations, scaled alike; flipped_w, flipped_l, flipped_std_w, flipped_std_l:
    mean and standard deviation of the horizontally flipped image (an encoding of the flipped pixels:
    the VAE is not flip-equivariant). They are all None, or all set (bench/prefdata.py sets them), for
    latents with no image behind them (synthetic pairs in tests and benchmarks): such a latent is its own
    posterior (std 0) and its horizontal flip is the flipped latent.
    """

    latents_w: torch.Tensor
    latents_l: torch.Tensor
    cond: Cond
    label: torch.Tensor
    captions: list[str]
    std_w: torch.Tensor | None = None
    std_l: torch.Tensor | None = None
    flipped_w: torch.Tensor | None = None
    flipped_l: torch.Tensor | None = None
    flipped_std_w: torch.Tensor | None = None
    flipped_std_l: torch.Tensor | None = None

    def __post_init__(self) -> None:
        given = [name for name in POSTERIOR_FIELDS if getattr(self, name) is not None]
        if given and len(given) != len(POSTERIOR_FIELDS):
            missing = [name for name in POSTERIOR_FIELDS if name not in given]
            raise ValueError(f"PairData: the posterior fields come all together or not at all; "
                             f"{', '.join(given)} given without {', '.join(missing)}")

    def __len__(self) -> int:
        return self.latents_w.shape[0]

    @property
    def has_posterior(self) -> bool:
        return self.std_w is not None

    def image(self, side: str, flipped: bool, idx: torch.Tensor | slice = slice(None)
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(posterior mean, std or None) of the winner (``side`` "w") or loser ("l") image of pairs ``idx``,
        (B, C, h, w) each, or of its horizontal flip. Without a posterior: (the latent or its flip, None)."""
        if not self.has_posterior:
            mean = getattr(self, f"latents_{side}")[idx]
            return (mean.flip(-1) if flipped else mean), None
        prefix = "flipped_" if flipped else ""
        mean = getattr(self, f"flipped_{side}" if flipped else f"latents_{side}")
        return mean[idx], getattr(self, f"{prefix}std_{side}")[idx]

    def index(self, idx: torch.Tensor | slice) -> "PairData":
        """The pairs ``idx`` (every cached view of them)."""
        rows = idx.tolist() if isinstance(idx, torch.Tensor) else range(len(self))[idx]
        return PairData(self.latents_w[idx], self.latents_l[idx], self.cond.index(idx), self.label[idx],
                        [self.captions[i] for i in rows], **self._posterior(lambda v: v[idx]))

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "PairData":
        """Latents (and posterior) in ``dtype`` on ``device``; cond and label on ``device``."""
        move = lambda v: v.to(device, dtype)  # noqa: E731
        return PairData(move(self.latents_w), move(self.latents_l), self.cond.to(device), self.label.to(device),
                        self.captions, **self._posterior(move))

    def swapped(self, swap: torch.Tensor) -> "PairData":
        """Winner and loser exchanged in the rows where ``swap`` (N,) is True, in every cached view."""
        mask = swap.view(-1, *[1] * (self.latents_w.ndim - 1))  # (N, 1, 1, 1)
        out = {}
        for w_name in ("latents_w", *POSTERIOR_FIELDS[::2]):
            w, l = getattr(self, w_name), getattr(self, w_name[:-1] + "l")
            out[w_name], out[w_name[:-1] + "l"] = ((None, None) if w is None else
                                                   (torch.where(mask, l, w), torch.where(mask, w, l)))
        return PairData(cond=self.cond, label=self.label.clone(), captions=list(self.captions), **out)

    def _posterior(self, fn) -> dict[str, torch.Tensor | None]:
        return {name: None if getattr(self, name) is None else fn(getattr(self, name)) for name in POSTERIOR_FIELDS}


# Winner then loser of each: std, the flipped image's mean, the flipped image's std.
POSTERIOR_FIELDS = ("std_w", "std_l", "flipped_w", "flipped_l", "flipped_std_w", "flipped_std_l")


@dataclass
class ImageData:
    """Captioned images (no labels) with cached latents and embeddings, for methods that train without pairs."""

    latents: torch.Tensor
    cond: Cond
    captions: list[str]

    def __len__(self) -> int:
        return self.latents.shape[0]
