"""The one interface every alignment method implements.

A method differs from the others in at most three places (see DESIGN.md):

1. ``train(ctx)``: what it learns, written into ``ctx.out_dir`` (default: nothing to train);
2. which network predicts each classifier-free-guidance branch;
3. how the predictions of one step combine.

(2) and (3) are both expressed by ``denoiser(pipe, artifact)``, which returns the function the
shared sampling loop calls once per step: ``eps = denoise(x, t, cond, uncond)``.
Everything else (noise and timestep sampling, prompt encoding, cached latents, the sampling loop,
decoding, seeding, scoring) is shared and lives in ``methods.core.diffusion`` or in ``bench``.

A method also declares what the harness must prepare for it: ``needs()`` (which of the
``methods.core.types`` inputs ``train`` reads) and ``packages()`` (optional packages its settings use).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from methods.core.diffusion import cfg_denoiser
from methods.core.parallel import DataParallel
from methods.core.types import Cond, Denoiser, ImageData, PairData

# The shared types lived here before methods.core.types; old imports keep working.
__all__ = ["Cond", "Denoiser", "ImageData", "Method", "MethodConfig", "PairData", "TrainContext", "sample_only"]


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

    def packages(self) -> dict[str, str]:
        """Optional packages (not dependencies of the project) these settings use: package -> the setting."""
        return {}


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
    # The folder to save the model of this optimizer step into (an intermediate checkpoint), or None.
    snapshot: Callable[[int], Path | None] = lambda step: None
    dist: DataParallel = field(default_factory=DataParallel)  # how a step's rows split over processes


class Method:
    """Base class: no training, plain classifier-free guidance with the base UNet."""

    id: ClassVar[str]
    paper: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # Per-model defaults, each with its source; merged over Config's defaults (tiny, sd15, sdxl).
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    trains: ClassVar[bool] = False
    in_default_run: ClassVar[bool] = True  # `bench run` without --methods runs it
    # Whether ``train`` reads the artifacts of ``requires()`` (else they matter only for sampling).
    trains_on_parents: ClassVar[bool] = False

    def __init__(self, cfg: MethodConfig):
        cfg.validate()
        self.cfg = cfg

    def needs(self) -> frozenset[str]:
        """What ``train`` reads from its context: a subset of methods.core.types.NEEDS (default: nothing)."""
        return frozenset()

    def packages(self) -> dict[str, str]:
        """Optional packages this configuration needs, package -> the setting that needs it (from the config)."""
        return self.cfg.packages()

    def requires(self) -> list[str]:
        """Ids of other methods whose trained artifacts this one needs (e.g. NPO stacked on DPO)."""
        return []

    def train(self, ctx: TrainContext) -> None:
        """Learn and write the artifact into ``ctx.out_dir``. Methods with ``trains = False`` keep this."""

    def candidate_seeds(self, seed: int) -> list[int]:
        """The initial-noise seeds of the images drawn for the image of ``seed``; with more than one, the
        ``verifier`` keeps one (best-of-N). Default: the seed itself."""
        return [seed]

    def verifier(self, loop_reward: str) -> str | None:
        """The reward id that picks among ``candidates``; ``loop_reward`` is the model family's in-loop reward."""
        return None

    def denoiser(self, pipe: Any, artifact: Path | None, artifacts: Callable[[str], Path]) -> Denoiser:
        """Return the per-step noise prediction rule. Default: CFG with the pipeline's UNet."""
        return cfg_denoiser(pipe.unet, pipe.unet, self.cfg.guidance_scale)
