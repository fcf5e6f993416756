"""Published weights into a loaded diffusers pipeline: find them on this machine, say how they are laid out,
and give back the UNet to sample with (plus, for Diffusion-NPO / Self-NPO, the negative UNet).

Where weights come from (never the network): a local folder or file; a ``bench.checkpoints`` entry or its
name, looked up in ``$BENCH_WEIGHTS/<repo>/`` (what ``checkpoints.fetch_command`` writes) and then in the
Hugging Face cache (the project's one lookup, ``metrics.core.weights``); any other hub repo id, read from the
Hugging Face cache with ``huggingface_hub.snapshot_download(local_files_only=True)``. What is missing raises
``PublishedWeightsError`` naming the files and the ``hf download`` command.

Layouts ``detect`` tells apart:

  unet-folder      ``unet/config.json`` + weights (diffusers ``save_pretrained``)
  unet-root        ``config.json`` of a UNet2DConditionModel + weights at the top of the folder
  pipeline         ``model_index.json``: only ``unet/`` is used (text encoders and VAE stay the base's)
  unet-state-dict  one .safetensors file holding a whole UNet in diffusers key names
  lora             one .safetensors LoRA; key layout diffusers (``unet.…lora.down/up.weight`` or
                   ``…lora_A/B.weight``), peft (``base_model.model.….lora_A.weight`` with adapter_config.json
                   beside it for rank and alpha) or kohya (``lora_unet_…lora_down.weight`` + ``.alpha``)

Every UNet returned is a new module on the pipeline UNet's device and dtype; the pipeline is not changed.
A LoRA is loaded with diffusers' own converters (``lora_state_dict`` for kohya keys, ``load_lora_adapter``)
into a copy of the pipeline's UNet and fused, as ``methods.core.training.load_trained_unet`` does.

``fingerprint`` is the sha256 over the weight files actually read (sorted relative paths with the sha256
of each file): other files, another run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import checkpoints
from bench.integrity import sha256_file
from metrics.core import weights as hubfiles

LAYOUTS = ("unet-folder", "unet-root", "pipeline", "unet-state-dict", "lora")
FULL = ("unet-folder", "unet-root", "pipeline", "unet-state-dict")  # a whole UNet, as opposed to a LoRA delta
UNET_CLASS = "UNet2DConditionModel"
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                "diffusion_pytorch_model.bin")  # what diffusers reads, in its order of preference (no variants)
LORA_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors", "lora/pytorch_lora_weights.safetensors")
PEFT_PREFIX = "base_model.model."
ADAPTER = "published"  # the adapter name the LoRA is loaded under before it is fused
# Config fields that fix a UNet's tensor shapes and conditioning: another value, another base model.
ARCHITECTURE = ("in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types",
                "layers_per_block", "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim",
                "addition_embed_type", "projection_class_embeddings_input_dim")


class PublishedWeightsError(ValueError):
    """Weights that are missing or cannot be used; ``missing`` names the files, ``command`` fetches them."""

    def __init__(self, message: str, missing: tuple[str, ...] = (), command: str = ""):
        super().__init__(message + (f"\nfetch them with:\n  {command}" if command else ""))
        self.missing, self.command = tuple(missing), command


@dataclass(frozen=True)
class Weights:
    """Weights found on disk: their layout and exactly the files that loading them reads."""

    layout: str  # one of LAYOUTS
    root: Path  # relative paths (fingerprint) are taken from here
    files: tuple[Path, ...]  # the files read, absolute, sorted
    unet_dir: Path | None = None  # the diffusers UNet folder (unet-folder, unet-root, pipeline)
    lora_layout: str | None = None  # one of checkpoints.LORA_LAYOUTS (layout "lora")

    def relative(self) -> list[str]:
        return sorted(f.relative_to(self.root).as_posix() for f in self.files)


# ---------------------------------------------------------------------------------------------------
# Layouts


def lora_key_layout(keys: list[str]) -> str | None:
    """The key layout of a LoRA state dict (diffusers, peft or kohya), or None if it is not a LoRA."""
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys):
        return "kohya"
    if any(k.startswith(PEFT_PREFIX) and (".lora_A." in k or ".lora_B." in k) for k in keys):
        return "peft"
    if any(re.search(r"(\.|_)lora\.(down|up)\.weight$|\.lora_[AB]\.weight$", k) for k in keys):
        return "diffusers"
    return None


def _is_unet_state_dict(keys: list[str]) -> bool:
    return "conv_in.weight" in keys and "time_embedding.linear_1.weight" in keys


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError) as e:  # a truncated download, or not a safetensors file at all
        raise PublishedWeightsError(f"{path}: not a readable .safetensors file ({e})") from None


def _unet_weight_files(folder: Path) -> list[Path]:
    """config.json and the weight file(s) diffusers reads from a UNet folder."""
    if not (folder / "config.json").is_file():
        raise PublishedWeightsError(f"{folder}: no config.json, so not a diffusers UNet folder",
                                    missing=(str(folder / "config.json"),))
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            files = [folder / "config.json", folder / name]
            if name.endswith(".index.json"):
                shards = sorted(set(json.loads((folder / name).read_text())["weight_map"].values()))
                absent = [s for s in shards if not (folder / s).is_file()]
                if absent:
                    raise PublishedWeightsError(f"{folder}: shards missing", missing=tuple(str(folder / s)
                                                                                           for s in absent))
                files += [folder / s for s in shards]
            return files
    present = sorted(p.name for p in folder.iterdir())
    raise PublishedWeightsError(f"{folder}: no UNet weights; expected one of {', '.join(WEIGHT_NAMES)} "
                                f"(variants such as .fp16 are not read); found {', '.join(present) or 'nothing'}",
                                missing=(str(folder / WEIGHT_NAMES[0]),))


def _is_unet_config(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("_class_name") == UNET_CLASS
    except (OSError, ValueError, AttributeError):
        return False


def _detect_file(path: Path) -> Weights:
    if path.suffix != ".safetensors":
        raise PublishedWeightsError(f"{path}: only .safetensors weight files are read (a pickled {path.suffix} "
                                    f"file can run code when loaded); convert it first")
    keys = _safetensors_keys(path)
    layout = lora_key_layout(keys)
    if layout == "peft":
        config = path.parent / "adapter_config.json"
        if not config.is_file():
            raise PublishedWeightsError(f"{path}: a peft LoRA needs the adapter_config.json saved with it (its "
                                        f"rank and lora_alpha set the LoRA's scale)", missing=(str(config),))
        return Weights("lora", path.parent, (config, path), lora_layout="peft")
    if layout is not None:
        return Weights("lora", path.parent, (path,), lora_layout=layout)
    if _is_unet_state_dict(keys):
        return Weights("unet-state-dict", path.parent, (path,))
    raise PublishedWeightsError(f"{path}: neither a LoRA (diffusers, peft or kohya keys) nor a whole UNet state "
                                f"dict; its first keys: {', '.join(keys[:5])}")


def detect(path: str | Path) -> Weights:
    """The layout of a local folder or file, and the files that loading it reads (nothing is loaded)."""
    path = Path(path).expanduser()
    if path.is_file():
        return _detect_file(path)
    if not path.is_dir():
        raise PublishedWeightsError(f"{path}: no such file or folder", missing=(str(path),))
    if (path / "model_index.json").is_file():
        files = _unet_weight_files(path / "unet")
        return Weights("pipeline", path, tuple(sorted(files)), unet_dir=path / "unet")
    if (path / "unet" / "config.json").is_file():
        return Weights("unet-folder", path, tuple(sorted(_unet_weight_files(path / "unet"))), unet_dir=path / "unet")
    if _is_unet_config(path / "config.json"):
        return Weights("unet-root", path, tuple(sorted(_unet_weight_files(path))), unet_dir=path)
    for name in LORA_FILES:
        if (path / name).is_file():
            found = _detect_file(path / name)
            return Weights(found.layout, path, found.files, lora_layout=found.lora_layout)
    raise PublishedWeightsError(f"{path}: no weights in a known layout; looked for model_index.json (pipeline), "
                                f"unet/config.json, a UNet config.json, or {', '.join(LORA_FILES)}")


# ---------------------------------------------------------------------------------------------------
# Finding weights


_EXPECTED = {"unet-folder": ("unet-folder",), "unet-root": ("unet-root",), "pipeline": ("pipeline",),
             "lora": ("lora",)}


def _locate_entry(entry: checkpoints.Checkpoint) -> Weights:
    folder = hubfiles.find(entry.source)
    if folder is None:
        missing = tuple(hubfiles.missing(entry.source))
        raise PublishedWeightsError(
            f"checkpoint {entry.name} ({entry.repo}) is not on this machine; missing {', '.join(missing)} (looked "
            f"in {hubfiles.local_root() / entry.repo} and the Hugging Face cache {hubfiles.hf_cache()})",
            missing=missing, command=checkpoints.fetch_command(entry))
    if entry.format in ("lora", "npo-negative"):
        matches = sorted(p for f in entry.files for p in folder.glob(f) if p.is_file())
        if len(matches) != 1:
            raise PublishedWeightsError(f"checkpoint {entry.name}: {entry.files[0]} matches {len(matches)} files in "
                                        f"{folder} ({', '.join(p.name for p in matches)}); pass the one to use as a "
                                        f"path")
        weights = detect(matches[0])
    else:
        weights = detect(folder)
    expected = _EXPECTED.get(entry.format) or (("lora",) if entry.lora_layout else FULL)
    if weights.layout not in expected or (entry.lora_layout and weights.lora_layout != entry.lora_layout):
        found = weights.layout + (f" ({weights.lora_layout} keys)" if weights.lora_layout else "")
        raise PublishedWeightsError(f"checkpoint {entry.name}: the catalogue says {entry.format}"
                                    f"{f' ({entry.lora_layout} keys)' if entry.lora_layout else ''}, but the files in "
                                    f"{folder} are {found}")
    return weights


def locate(source: Weights | checkpoints.Checkpoint | str | Path) -> Weights:
    """Weights from a ``Weights``, a catalogue entry or name, a local path, or a hub repo id in the HF cache."""
    if isinstance(source, Weights):
        return source
    if isinstance(source, checkpoints.Checkpoint):
        return _locate_entry(source)
    text = str(source)
    if text in checkpoints.CATALOGUE:
        return _locate_entry(checkpoints.CATALOGUE[text])
    path = Path(text).expanduser()
    if path.exists() or text.startswith(("/", ".", "~")):
        return detect(path)
    if text.count("/") != 1:
        names = ", ".join(checkpoints.CATALOGUE)
        raise PublishedWeightsError(f"{text!r} is neither a local path, a catalogue name ({names}) nor a hub repo id "
                                    f"(owner/name)", missing=(text,))
    local = hubfiles.local_root() / text
    if local.is_dir():
        return detect(local)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(text, cache_dir=hubfiles.hf_cache(), local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):  # not in the cache
        raise PublishedWeightsError(
            f"{text} is neither a local path, a catalogue name ({', '.join(checkpoints.CATALOGUE)}), nor a repo in "
            f"{local} or the Hugging Face cache {hubfiles.hf_cache()}", missing=(text,),
            command=f"hf download {text} --local-dir '{local}'") from None
    return detect(folder)


# ---------------------------------------------------------------------------------------------------
# Fingerprint

_SHA_MEMO: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: hash a file once a process


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(path)
    return _SHA_MEMO[key]


def fingerprint(source: Weights | checkpoints.Checkpoint | str | Path) -> str:
    """sha256 over the sorted ``<relative path> <sha256 of the file>`` lines of the files loading reads."""
    weights = locate(source)
    lines = sorted(f"{f.relative_to(weights.root).as_posix()} {_file_sha256(f)}\n" for f in weights.files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Loading


def _check_architecture(found: dict, pipe_unet: Any, where: Path) -> None:
    ours = dict(pipe_unet.config)
    differ = [f"{k} {found.get(k)!r} vs {ours.get(k)!r}" for k in ARCHITECTURE
              if k in found and not _same(found.get(k), ours.get(k))]
    if differ:
        raise PublishedWeightsError(f"{where}: this UNet does not fit the pipeline's (another base model?): "
                                    + "; ".join(differ))


def _same(a: Any, b: Any) -> bool:
    """Equal config values; a number equals a per-block list repeating it (configs write either)."""
    a, b = (list(v) if isinstance(v, (list, tuple)) else v for v in (a, b))
    if isinstance(a, list) != isinstance(b, list):
        one, many = (b, a) if isinstance(a, list) else (a, b)
        return all(x == one for x in many)
    return a == b


def _full_unet(pipe: Any, weights: Weights) -> Any:
    device, dtype = pipe.unet.device, pipe.unet.dtype
    if weights.layout == "unet-state-dict":
        from safetensors.torch import load_file

        state = load_file(str(weights.files[0]))
        unet = copy.deepcopy(pipe.unet)
        try:
            unet.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()},
                                 strict=True)
        except RuntimeError as e:
            raise PublishedWeightsError(f"{weights.files[0]}: its tensors do not fit the pipeline's UNet ({e})") \
                from None
        return unet.eval()
    assert weights.unet_dir is not None
    _check_architecture(json.loads((weights.unet_dir / "config.json").read_text()), pipe.unet, weights.unet_dir)
    safetensors = not any(f.name.endswith(".bin") for f in weights.files)
    unet = type(pipe.unet).from_pretrained(weights.unet_dir, dtype=dtype, use_safetensors=safetensors,
                                           local_files_only=True)
    return unet.to(device).eval()


def _lora_file(weights: Weights) -> Path:
    return next(f for f in weights.files if f.suffix == ".safetensors")


def _lora_state(pipe: Any, weights: Weights) -> tuple[dict, dict | None, dict | None, str | None]:
    """(state dict, network alphas, LoraConfig fields, key prefix) for ``load_lora_adapter``, converted by
    diffusers where the keys are not its own (kohya); text-encoder LoRAs are refused."""
    from safetensors.torch import load_file

    path = _lora_file(weights)
    state = load_file(str(path))
    layout = weights.lora_layout
    te = [k for k in state if k.startswith(("text_encoder", "lora_te"))]
    if te:
        raise PublishedWeightsError(f"{path}: the LoRA also changes the text encoder ({te[0]}, …); only UNet LoRAs "
                                    f"are loaded, and dropping part of one would sample what its authors did not")
    if layout == "kohya":
        # diffusers' converter renames kohya keys and returns their alphas; it needs the UNet config for SDXL.
        converted, alphas = type(pipe).lora_state_dict(dict(state), unet_config=pipe.unet.config)
        return converted, alphas, None, "unet"
    if layout == "peft":
        config = json.loads(next(f for f in weights.files if f.suffix == ".json").read_text())
        from peft import LoraConfig

        fields = set(LoraConfig.__dataclass_fields__)
        meta = {k: v for k, v in config.items() if k in fields and k not in ("peft_type", "task_type")}
        return {k.removeprefix(PEFT_PREFIX): v for k, v in state.items()}, None, meta, None
    prefix = "unet" if any(k.startswith("unet.") for k in state) else None
    return state, None, None, prefix


def _load_adapter(unet: Any, weights: Weights, state: dict, alphas: dict | None, meta: dict | None,
                  prefix: str | None) -> None:
    if weights.lora_layout == "diffusers":
        # From the file, so that diffusers also reads the LoRA config (rank, alpha) stored in its metadata.
        unet.load_lora_adapter(str(_lora_file(weights)), prefix=prefix, adapter_name=ADAPTER)
    else:
        unet.load_lora_adapter(state, prefix=prefix, network_alphas=alphas, metadata=meta, adapter_name=ADAPTER)


def _lora_layers(state: dict) -> int:
    """How many LoRA layers (down/A matrices) a state dict holds."""
    return sum(1 for k in state if re.search(r"(lora_A|lora\.down|lora_down)\.weight$", k))


def _lora_unet(pipe: Any, weights: Weights) -> Any:
    """A copy of the pipeline's UNet with the LoRA fused in (at scale 1: the LoRA's own alpha / rank)."""
    if getattr(pipe.unet, "peft_config", None):
        raise PublishedWeightsError("the pipeline's UNet already holds LoRA adapters; load published weights into "
                                    "a pipeline without any")
    state, alphas, meta, prefix = _lora_state(pipe, weights)
    expected = _lora_layers({k: v for k, v in state.items() if prefix is None or k.startswith(prefix + ".")})
    unet = copy.deepcopy(pipe.unet)
    path = _lora_file(weights)
    try:
        _load_adapter(unet, weights, state, alphas, meta, prefix)
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        raise PublishedWeightsError(f"{path}: diffusers could not load this {weights.lora_layout} LoRA into the "
                                    f"pipeline's UNet ({e})") from None
    loaded = sum(1 for m in unet.modules() if ADAPTER in getattr(m, "lora_A", {}))
    if loaded != expected:
        raise PublishedWeightsError(f"{path}: {expected - loaded} of its {expected} LoRA layers name modules this UNet "
                                    f"does not have (a LoRA for another base model?)")
    unet.fuse_lora(adapter_names=[ADAPTER])  # merged: sampling costs what the base model costs
    unet.unload_lora()
    return unet.eval()


def load_unet(pipe: Any, source: Weights | checkpoints.Checkpoint | str | Path) -> Any:
    """The UNet to sample with: whole published UNets loaded as they are, a LoRA fused into a copy of the
    pipeline's UNet. A new module on the pipeline UNet's device and dtype."""
    weights = locate(source)
    if weights.layout == "lora":
        return _lora_unet(pipe, weights)
    return _full_unet(pipe, weights)


def negative_unet(pipe: Any, negative: Weights | checkpoints.Checkpoint | str | Path, positive: Any = None,
                  merge_weight: float = 0.0, delta_scale: float = 1.0) -> Any:
    """The UNet of the unconditional CFG branch (Diffusion-NPO, Self-NPO):

        θ_neg = m·θ_base + (1 − m)·θ_pos + s·δ,   δ: the LoRA delta, or θ_negative − θ_base (full weights)

    with θ_base the pipeline's UNet, θ_pos the ``positive`` UNet module (None: the base), m = ``merge_weight``
    and s = ``delta_scale``. This is G-U-N/Diffusion-NPO's gen.py (mix_models(base, positive, m), then
    load_lora_weights + fuse_lora at scale 1) and gen_xl.py (npo + (1 − m)·(θ_pos − θ_base)); gen.sh and
    gen_xl.sh use m = 0. Self-NPO's θ_base + β·δ is s = β with the base as positive.
    """
    if not 0.0 <= merge_weight <= 1.0:
        raise ValueError(f"merge_weight must be in [0, 1], got {merge_weight}")
    if delta_scale < 0:
        raise ValueError(f"delta_scale must be >= 0, got {delta_scale}")
    import torch

    from methods.npo import negative_weights
    from methods.self_npo import mix_weights

    weights = locate(negative)
    npo = _lora_unet(pipe, weights) if weights.layout == "lora" else _full_unet(pipe, weights)  # θ_base + δ
    if positive is None and delta_scale == 1.0:
        return npo  # m·θ_base + (1 − m)·θ_base + δ = θ_npo for every m
    base = pipe.unet.state_dict()
    scaled = mix_weights(base, npo.state_dict(), delta_scale)  # θ_base + s·δ
    pos = base if positive is None else positive.state_dict()
    with torch.no_grad():
        npo.load_state_dict(negative_weights(base, pos, scaled, merge_weight))
    return npo.eval()
