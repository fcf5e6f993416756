"""The one interface every alignment method implements.

A method differs from the others in at most three places (see DESIGN.md):

1. ``train(ctx)``: what it learns, written into ``ctx.out_dir`` (default: nothing to train);
2. which network predicts each classifier-free-guidance branch;
3. how the predictions of one step combine.

(2) and (3) are both expressed by ``denoiser(pipe, artifact)``, which returns the function the
shared sampling loop calls once per step: ``eps = denoise(x, t, cond, uncond)``.
Everything else (noise and timestep sampling, prompt encoding, cached latents, the sampling loop,
decoding, seeding, scoring) is shared and lives in ``methods.core.diffusion`` or in ``bench``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import torch

from methods.core.parallel import DataParallel


def sample_only(default: Any, **kwargs: Any) -> Any:
    """A config field that changes sampling but not training (kept out of the artifact hash)."""
    return field(default=default, metadata={"sample": True}, **kwargs)


@dataclass(frozen=True)
class MethodConfig:
    """Fields every method has. Subclasses add their own, with the paper's symbol in a comment."""

    guidance_scale: float = sample_only(7.5)  # g in the diffusers convention: eps_u + g (eps_c - eps_u)

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is outside its valid range."""
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")

    def train_fields(self) -> dict[str, Any]:
        """The fields that change what ``train`` produces (the artifact is keyed by these)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("sample")}


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: "Cond", uncond: "Cond") -> torch.Tensor: ...


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


@dataclass
class TrainContext:
    """Everything a method's ``train`` may use. Expensive parts are loaded only when asked for."""

    pipe: Any  # a diffusers StableDiffusionPipeline / StableDiffusionXLPipeline, on ``device``
    device: torch.device
    dtype: torch.dtype  # mixed-precision compute dtype; master weights stay float32
    out_dir: Path  # write the artifact here
    seed: int
    pairs: Callable[[], PairData]  # preference pairs (Pick-a-Pic layout), latents and embeds cached
    images: Callable[[], ImageData]  # captioned images, latents and embeds cached
    prompts: Callable[[], list[str]]  # training captions, for online methods
    reward: Callable[[], Callable[[list, list[str]], torch.Tensor]]  # in-the-loop reward model (PIL images, prompts)
    log: Callable[[int, dict[str, float]], None] = lambda step, values: None  # per-step training metrics
    progress: Callable[[int, int], None] = lambda done, total: None
    artifacts: Callable[[str], Path] = lambda method_id: Path()  # trained artifact of another method (stacking)
    dist: DataParallel = field(default_factory=DataParallel)  # how a step's rows split over processes


class Method:
    """Base class: no training, plain classifier-free guidance with the base UNet."""

    id: ClassVar[str]
    paper: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # Per-model defaults, each with its source; merged over Config's defaults (tiny, sd15, sdxl).
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    trains: ClassVar[bool] = False
    # Whether ``train`` reads the artifacts of ``requires()`` (else they matter only for sampling).
    trains_on_parents: ClassVar[bool] = False

    def __init__(self, cfg: MethodConfig):
        cfg.validate()
        self.cfg = cfg

    def requires(self) -> list[str]:
        """Ids of other methods whose trained artifacts this one needs (e.g. NPO stacked on DPO)."""
        return []

    def train(self, ctx: TrainContext) -> None:
        """Learn and write the artifact into ``ctx.out_dir``. Methods with ``trains = False`` keep this."""

    def denoiser(self, pipe: Any, artifact: Path | None, artifacts: Callable[[str], Path]) -> Denoiser:
        """Return the per-step noise prediction rule. Default: CFG with the pipeline's UNet."""
        from methods.core.diffusion import cfg_denoiser

        return cfg_denoiser(pipe.unet, pipe.unet, self.cfg.guidance_scale)
