"""Base models: aliases, where their weights are, and the one loader every scale goes through.

``tiny`` (and ``tiny-micro``, its test-size preset) are built by the project itself (bench/tiny);
``sd15`` and ``sdxl`` are Hugging Face repos read from the local cache only; any other value is a
local diffusers folder or a repo id already in the cache. Whatever the source, the pipeline is
loaded by ``DiffusionPipeline.from_pretrained(folder, local_files_only=True)``.

``--vae`` swaps the pipeline's autoencoder for another one in the diffusers AutoencoderKL layout:
``fp16-fix`` (madebyollin/sdxl-vae-fp16-fix, SDXL's VAE rescaled not to overflow in float16, which
the official SDXL training scripts take as ``--pretrained_vae_model_name_or_path``), a folder or a
repo id in the cache. It is part of the model's revision: runs with another VAE are other runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

TINY_PRESETS = {"tiny": "default", "tiny-micro": "micro"}
HUB_ALIASES = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
VAE_ALIASES = {"fp16-fix": "madebyollin/sdxl-vae-fp16-fix"}
VAE_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]
# Files a diffusers text-to-image folder must have (SD1.5 layout; SDXL adds the second encoder).
REQUIRED = ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json",
            "text_encoder/config.json", "tokenizer/tokenizer_config.json"]


class ModelError(ValueError):
    pass


PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # --precision -> torch dtype name


@dataclass(frozen=True)
class Family:
    """What differs between model families, in one record: default rewards and sampler, the reward online
    methods optimise in their training loop, and what ``--precision auto`` picks on a GPU."""

    name: str
    rewards: tuple[str, ...]  # evaluated when --rewards is not given
    sampler: dict[str, Any]  # SamplerConfig defaults
    loop_reward: str  # the in-loop reward of online methods (tailorpo); never the tiny world's oracle
    gpu_precision: str  # --precision auto on a GPU: what the official recipes train in

    def precision(self, precision: str, device: str) -> str:
        """``auto``: ``gpu_precision`` on a GPU, else fp32; anything else is checked against PRECISIONS."""
        if precision == "auto":
            return self.gpu_precision if device.startswith("cuda") else "fp32"
        if precision not in PRECISIONS:
            raise ModelError(f"--precision {precision}: unknown; available: auto, {', '.join(PRECISIONS)}")
        return precision


_REAL_REWARDS = ("pickscore", "hpsv21", "imagereward", "clip", "aesthetic")
FAMILIES = {
    "tiny": Family("tiny", ("oracle", "fidelity", "tiny-pickscore"), {"name": "ddim", "steps": 20, "batch": 256},
                   loop_reward="tiny-pickscore", gpu_precision="fp32"),
    # diffusers' default scheduler and steps
    "sd15": Family("sd15", _REAL_REWARDS, {"name": "pipeline", "steps": 50, "batch": 8},
                   loop_reward="pickscore", gpu_precision="bf16"),
    "sdxl": Family("sdxl", _REAL_REWARDS, {"name": "pipeline", "steps": 50, "batch": 4},
                   loop_reward="pickscore", gpu_precision="bf16"),
}


def auto_device(device: str) -> str:
    """``--device auto``: the first GPU when torch sees one, else the CPU; other names pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what the user typed (alias, folder or repo id)
    family: str  # a FAMILIES key: 'tiny', 'sd15' or 'sdxl'; selects each method's per-model defaults
    tiny_preset: str | None = None  # set for the tiny world, which is built on first use
    folder: Path | None = None  # the diffusers folder, once known
    repo_id: str | None = None
    vae: Path | None = None  # an AutoencoderKL folder replacing the pipeline's own (--vae)
    vae_name: str | None = None

    @property
    def defaults(self) -> Family:
        return FAMILIES[self.family]


def available() -> list[str]:
    return list(TINY_PRESETS) + list(HUB_ALIASES)


def _family(folder: Path) -> str:
    index = json.loads((folder / "model_index.json").read_text())
    return "sdxl" if "text_encoder_2" in index else "sd15"


def _missing_files(folder: Path) -> list[str]:
    need = list(REQUIRED)
    if (folder / "model_index.json").is_file() and _family(folder) == "sdxl":
        need += ["text_encoder_2/config.json", "tokenizer_2/tokenizer_config.json"]
    return [f for f in need if not (folder / f).is_file()]


def _missing_vae_files(folder: Path) -> list[str]:
    return [f for f in VAE_FILES if not (folder / f).is_file()]


def _download_hint(repo_id: str, files: str, option: str) -> str:
    return (f"on a machine with network access run:\n  hf download {repo_id} {files}\nthen copy the Hugging Face "
            f"cache (~/.cache/huggingface/hub) here, or pass the downloaded folder with {option} PATH")


def _cached(kind: str, name: str, repo_id: str, needed: str, missing: Callable[[Path], list[str]], hint: str) -> Path:
    """The snapshot of ``repo_id`` in the local Hugging Face cache, holding every file ``missing`` looks for."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise ModelError(f"{kind} {name!r} ({repo_id}) is not in the local Hugging Face cache; needed: {needed}; "
                         + hint) from None
    lacks = missing(folder)
    if lacks:
        raise ModelError(f"{kind} {repo_id} in the local cache lacks {', '.join(lacks)}; " + hint)
    return folder


def resolve(name: str, vae: str | None = None) -> ModelSpec:
    """Resolve a model name (and a replacement VAE); raise ModelError naming what is missing and how to fetch it."""
    spec = _resolve_model(name)
    if not vae:
        return spec
    if spec.tiny_preset:
        raise ModelError(f"--vae {vae}: the tiny world trains its own autoencoder; --vae applies to sd15, sdxl "
                         f"and diffusers folders")
    return dataclasses.replace(spec, vae=_resolve_vae(vae), vae_name=vae)


def _resolve_vae(name: str) -> Path:
    path = Path(name).expanduser()
    if path.exists():
        missing = _missing_vae_files(path)
        if missing:
            raise ModelError(f"--vae {name}: not a diffusers AutoencoderKL folder; missing {', '.join(missing)}")
        return path.resolve()
    if name.startswith(("/", ".", "~")):
        raise ModelError(f"--vae {name}: no such folder")
    repo_id = VAE_ALIASES.get(name, name)
    if "/" not in repo_id:
        raise ModelError(f"unknown VAE {name!r}; available: {', '.join(VAE_ALIASES)}, a folder, or a repo id "
                         f"already in the local Hugging Face cache")
    return _cached("VAE", name, repo_id, ", ".join(VAE_FILES), _missing_vae_files,
                   _download_hint(repo_id, " ".join(VAE_FILES), "--vae"))


def _resolve_model(name: str) -> ModelSpec:
    if name in TINY_PRESETS:
        return ModelSpec(name, "tiny", tiny_preset=TINY_PRESETS[name])
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"--model {name}: not a folder")
        missing = _missing_files(path)
        if missing:
            raise ModelError(f"--model {name}: not a diffusers text-to-image folder; missing {', '.join(missing)}")
        return ModelSpec(name, _family(path), folder=path.resolve())
    repo_id = HUB_ALIASES.get(name, name)
    if "/" not in repo_id:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(available())}, a local diffusers "
                         f"folder, or a Hugging Face repo id already in the local cache")
    folder = _cached("model", name, repo_id,
                     f"{', '.join(REQUIRED)} and the weights of unet/, vae/, text_encoder/", _missing_files,
                     _download_hint(repo_id, "--exclude '*.ckpt' '*.bin' '*non_ema*'", "--model"))
    return ModelSpec(name, _family(folder), folder=folder, repo_id=repo_id)


def revision(spec: ModelSpec) -> str:
    """What identifies the weights: the cache snapshot, or a hash of the folder's configs and weight sizes;
    with ``+vae=`` the same for a replacement VAE."""
    assert spec.folder is not None
    own = f"{spec.repo_id}@{spec.folder.name}" if spec.repo_id else f"{spec.name}@{_folder_hash(spec.folder)}"
    if spec.vae is None:
        return own
    in_cache = spec.vae.parent.name == "snapshots"  # <cache>/models--owner--name/snapshots/<commit>
    vae = (f"{VAE_ALIASES.get(spec.vae_name, spec.vae_name)}@{spec.vae.name}" if in_cache
           else f"{spec.vae_name}@{_folder_hash(spec.vae)}")
    return f"{own}+vae={vae}"


def _folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f"{f.relative_to(folder)}:{f.stat().st_size}".encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


def load_pipeline(folder: Path, device: str = "cpu", vae: Path | None = None, dtype: Any = None):
    """The single loader: every scale, tiny included, goes through ``from_pretrained``; ``vae``: an
    AutoencoderKL folder that replaces the pipeline's own; ``dtype``: the weights' dtype (default float32)."""
    import transformers
    from diffusers import AutoencoderKL, DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    # bench run shows its own progress: the libraries' loading bars would interleave with it.
    diffusers_logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    extra = {"vae": AutoencoderKL.from_pretrained(str(vae), local_files_only=True, dtype=dtype)} if vae else {}
    pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True, dtype=dtype, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
