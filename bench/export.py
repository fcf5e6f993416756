"""Export a trained run's artifact in the layout diffusers loads directly, with a model card stub.

The harness stores a trained method under ``checkpoints/<method>-<hash>/`` (``methods.core.training.save_unet``):
a full fine-tune as ``unet/`` (diffusers ``save_pretrained``), a LoRA as ``lora/pytorch_lora_weights.safetensors``
(diffusers keys), plus ``method_config.json`` and ``manifest.json`` (the sha256 of every file). The export
writes the same bytes where a diffusers user looks for them:

  full fine-tune  ``out/unet/``                         UNet2DConditionModel.from_pretrained(out, subfolder="unet")
  LoRA            ``out/pytorch_lora_weights.safetensors``  pipe.load_lora_weights(out)

A method with several trained modules (contrastive's ``positive/`` and ``negative/``) gets one such folder per
module. Diffusion-NPO and Self-NPO store their NEGATIVE model the same way (NPO: a LoRA from the base, or a full
UNet with ``lora_rank=0``; Self-NPO: a full UNet); ``bench.published.negative_unet`` reads the export back
and the card says it belongs in the unconditional branch of CFG. Besides the weights: ``README.md`` (base model,
method, config, the sha256 of each file), ``bench_export.json`` (the same, for programs) and ``manifest.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from bench import integrity
from bench.models import HUB_ALIASES

LORA = Path("lora") / "pytorch_lora_weights.safetensors"
LORA_OUT = "pytorch_lora_weights.safetensors"  # the weight name pipe.load_lora_weights(folder) looks for
NEGATIVE_METHODS = ("npo", "self_npo")  # their artifact is the unconditional-branch model
CONFIG = "method_config.json"
INFO = "bench_export.json"


class ExportError(ValueError):
    pass


def _modules(artifact: Path) -> dict[str, Path]:
    """The trained modules of an artifact folder: "" -> the folder itself, or one entry per sub-folder."""
    def is_module(folder: Path) -> bool:
        return (folder / "unet" / "config.json").is_file() or (folder / LORA).is_file()

    if is_module(artifact):
        return {"": artifact}
    subs = {d.name: d for d in sorted(artifact.iterdir()) if d.is_dir() and is_module(d)}
    if not subs:
        raise ExportError(f"{artifact}: nothing to export; expected unet/ or {LORA.as_posix()} (or sub-folders "
                          f"holding them). A method that trains nothing (pgd) has an empty artifact")
    return subs


def _copy_module(module: Path, target: Path) -> list[tuple[str, str]]:
    """Copy one module into ``target``; (source path, exported path) of each file, relative to their roots."""
    pairs = []
    if (module / "unet").is_dir():
        for f in sorted((module / "unet").iterdir()):
            if f.is_file():
                (target / "unet").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target / "unet" / f.name)
                pairs.append((f"unet/{f.name}", f"unet/{f.name}"))
    else:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(module / LORA, target / LORA_OUT)
        pairs.append((LORA.as_posix(), LORA_OUT))
    return pairs


def export(artifact: str | Path, out: str | Path, *, method: str, base_model: str,
           config: dict[str, Any] | None = None) -> Path:
    """Write ``artifact`` (a verified harness artifact folder) into the new folder ``out``; returns ``out``.

    ``base_model``: an alias (sd15, sdxl), a hub id or a folder name, as written into the card. ``config``
    defaults to the artifact's method_config.json.
    """
    artifact, out = Path(artifact), Path(out)
    if not artifact.is_dir():
        raise ExportError(f"{artifact}: no such artifact folder")
    problems = integrity.manifest_problems(artifact)
    if problems:
        raise ExportError(f"{artifact} does not match its manifest, so it is not exported: "
                          + "; ".join(f"{p}: {why}" for p, why in problems))
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; export into a new folder")
    if config is None:
        config = json.loads((artifact / CONFIG).read_text()) if (artifact / CONFIG).is_file() else {}
    listed = json.loads((artifact / integrity.MANIFEST).read_text())["files"]

    tmp = integrity.tmp_path(out)
    tmp.mkdir(parents=True)
    try:
        files = {}  # exported path -> (sha256, source path)
        for name, module in _modules(artifact).items():
            prefix = f"{name}/" if name else ""
            for src, dst in _copy_module(module, tmp / name if name else tmp):
                files[prefix + dst] = (listed[prefix + src], prefix + src)
        for rel, (digest, _) in files.items():  # the copies are the bytes the manifest vouches for
            if integrity.sha256_file(tmp / rel) != digest:
                raise ExportError(f"{artifact}: {rel} changed while it was copied")
        info = {"method": method, "role": "negative" if method in NEGATIVE_METHODS else "policy",
                "base_model": HUB_ALIASES.get(base_model, base_model), "config": config,
                "source_artifact": artifact.name, "files": {rel: d for rel, (d, _) in sorted(files.items())}}
        (tmp / INFO).write_text(json.dumps(info, indent=1, sort_keys=True, default=str) + "\n")
        (tmp / "README.md").write_text(model_card(info, {rel: src for rel, (_, src) in files.items()}))
        integrity.write_manifest(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _load_lines(module: str, files: list[str]) -> list[str]:
    where = f'folder + "/{module}"' if module else "folder"
    if any(f.endswith(LORA_OUT) for f in files):
        return [f"pipe.load_lora_weights({where})  # diffusers LoRA keys (unet.…lora.down/up.weight)"]
    sub = f'"{module}/unet"' if module else '"unet"'
    return [f"unet = UNet2DConditionModel.from_pretrained(folder, subfolder={sub})"]


def _module_of(rel: str) -> str:
    """The module an exported file belongs to: "" for a single-module export, else its first folder."""
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 and parts[0] != "unet" else ""


def model_card(info: dict[str, Any], sources: dict[str, str]) -> str:
    """README.md: YAML header for the hub, then base model, method, how to load, config, sha256 of each file."""
    method, base = info["method"], info["base_model"]
    modules: dict[str, list[str]] = {}
    for rel in info["files"]:
        modules.setdefault(_module_of(rel), []).append(rel)
    lines = ["---", f"base_model: {base}", "library_name: diffusers",
             "tags:", "- text-to-image", "- diffusion-pref-bench", f"- {method}", "---", "",
             f"# {method} on {base}", "",
             (f"Trained with diffusion-pref-bench (method `{method}`) from `{base}`; exported from the harness "
              f"artifact `{info['source_artifact']}`."), ""]
    if info["role"] == "negative":
        cfg = info["config"]
        mix = (f"merge weight m = {cfg['merge_weight']}" if "merge_weight" in cfg
               else f"δ weight β = {cfg['neg_weight']}" if "neg_weight" in cfg else "see the config")
        lines += [("**A negative model.** Use it only for the unconditional branch of classifier-free guidance "
                   "(Diffusion-NPO, Self-NPO): ε = ε_neg(x, ∅) + g·(ε_pos(x, c) − ε_neg(x, ∅)), with "
                   "θ_neg = m·θ_base + (1 − m)·θ_pos + β·δ and δ these weights minus the base "
                   f"({mix}). `bench.published.negative_unet(pipe, folder, ...)` builds it."), ""]
    lines += ["## Loading", "", "```python", "folder = \"<this folder or repo id>\""]
    for module, files in sorted(modules.items()):
        lines += _load_lines(module, files)
    lines += ["```", "", "## Config", "", "```json", json.dumps(info["config"], indent=1, sort_keys=True,
                                                                 default=str), "```", "",
              "## Files (sha256)", "", "| file | sha256 | harness artifact file |", "|---|---|---|"]
    lines += [f"| {rel} | {digest} | {sources[rel]} |" for rel, digest in sorted(info["files"].items())]
    return "\n".join(lines) + "\n"
