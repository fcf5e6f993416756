"""``bench prepare tiny``: find (or build) the tiny world's base model, rewards and data.

The default world is SHIPPED with the project (``bench/tiny/shipped/tiny-default-<hash>/``): the same
bytes on every machine, so every machine benchmarks against the same base model, preference pairs and
learned reward. Its manifest lists the sha256 of every file; it is verified before use, and a damaged
one is an error, never silently replaced by a local build (a build differs per machine: its weights
depend on the CPU's floating-point kernels). Its content fingerprint is part of every run's model
revision. ``bench prepare tiny --rebuild`` builds it from scratch beside the results
(``benchmarks/tiny_world.py --compare`` sets the two side by side).

A preset that is not shipped (``tiny-micro``, or a changed preset) is built on first use under
``<results>/models/tiny-<preset>-<hash>/`` where the hash covers the preset; a build that fails its
manifest check is rebuilt, never used. Building happens in a temporary folder renamed into place at
the end, so a killed build leaves nothing that looks finished. Data derived later (pairs, captioned
images, tiny-pickscore) is added to the manifest as it is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from bench import integrity
from bench.integrity import sha256_file
from bench.tiny import pretrain, world
from bench.tiny.files import WorldFiles
from metrics import fidelity

SHIPPED = Path(__file__).resolve().parent / "shipped"
Progress = Callable[[str, int, int], None]


class TinyWorldError(RuntimeError):
    pass


def preset(name: str) -> pretrain.Preset:
    if name not in pretrain.PRESETS:
        raise KeyError(f"unknown tiny preset {name!r}; available: {', '.join(pretrain.PRESETS)}")
    return pretrain.PRESETS[name]


# Bumped when code changes the weights a preset trains to, so older caches are never reused
# (v2: fused AdamW; v3: shapes tilt by at most 15 degrees instead of turning freely, channels-last autoencoder).
WORLD_VERSION = "world-v3"


def preset_hash(p: pretrain.Preset) -> str:
    blob = json.dumps(dataclasses.asdict(p), sort_keys=True) + "|" + WORLD_VERSION
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _folder_name(name: str) -> str:
    p = preset(name)
    return f"tiny-{p.name}-{preset_hash(p)}"


def shipped_dir(name: str) -> Path | None:
    """The shipped world of preset ``name``, or None when the project ships none for it."""
    folder = SHIPPED / _folder_name(name)
    return folder if WorldFiles(folder).manifest.is_file() else None


def built_dir(results_dir: Path, name: str = "default") -> Path:
    """Where a world built on this machine lives (a preset that is not shipped, or ``--rebuild``)."""
    return Path(results_dir) / "models" / _folder_name(name)


def world_dir(results_dir: Path, name: str = "default") -> Path:
    """The world runs use: the shipped one where there is one, else this results folder's build."""
    return shipped_dir(name) or built_dir(results_dir, name)


def content_id(folder: Path) -> str:
    """A fingerprint of a world's bytes: the hash of its manifest's file list (names and sha256)."""
    files = json.loads(WorldFiles(folder).manifest.read_text())["files"]
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]


def revision(name: str) -> str:
    """The model revision of a tiny preset: its hash, and the shipped world's content where it ships."""
    shipped = shipped_dir(name)
    base = f"tiny-{name}@{preset_hash(preset(name))}"
    return f"{base}:{content_id(shipped)}" if shipped else base


def world_files(results_dir: Path, name: str = "default") -> WorldFiles:
    """The files of preset ``name``'s world under ``results_dir`` (built or not)."""
    return WorldFiles(world_dir(results_dir, name))


def _files(folder: Path) -> list[Path]:
    manifest = WorldFiles(folder).manifest
    return sorted(f for f in folder.rglob("*") if f.is_file() and f != manifest)


def verify(folder: Path) -> str | None:
    """None when the folder is a complete, unmodified build; else what is wrong with it."""
    manifest = WorldFiles(folder).manifest
    if not manifest.is_file():
        return "no manifest (unfinished or foreign folder)"
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return "unreadable manifest"
    for rel, digest in listed.items():
        f = folder / rel
        if not f.is_file():
            return f"missing file {rel}"
        if sha256_file(f) != digest:
            return f"checksum mismatch in {rel}"
    return None


def ensure(results_dir: Path, name: str = "default", progress: Progress | None = None,
           log: Callable[[str], None] = print) -> Path:
    """The tiny world folder for preset ``name``: the shipped one, verified; else built first if missing or
    corrupted. Raises TinyWorldError naming the file when the shipped world is damaged."""
    shipped = shipped_dir(name)
    if shipped is not None:
        problem = verify(shipped)
        if problem is not None:
            raise TinyWorldError(f"the shipped tiny world {shipped} is damaged ({problem}): restore it "
                                 f"(git checkout -- {shipped}) or reinstall the project")
        return shipped
    folder = built_dir(results_dir, name)
    with _build_lock(folder, log):  # another run building this world: wait for it, then use its world
        if folder.exists():
            problem = verify(folder)
            if problem is None:
                return folder
            log(f"tiny world cache {folder} is corrupted ({problem}); rebuilding it")
            shutil.rmtree(folder)
        build(folder, preset(name), progress or (lambda *a: None), log)
    return folder


def rebuild(results_dir: Path, name: str = "default", progress: Progress | None = None,
            log: Callable[[str], None] = print) -> Path:
    """Build preset ``name`` from scratch into ``built_dir`` (replacing an earlier build); runs keep using
    the shipped world where there is one."""
    folder = built_dir(results_dir, name)
    with _build_lock(folder, log):
        shutil.rmtree(folder, ignore_errors=True)
        build(folder, preset(name), progress or (lambda *a: None), log)
    return folder


def _build_lock(folder: Path, log: Callable[[str], None]):
    """``<folder>.lock``, held while a world is checked or built there: the fixed ``.building`` folder is
    then only ever written by one process."""
    return integrity.lock(folder.with_name(folder.name + ".lock"),
                          lambda holder: log(f"waiting for {holder}, which is building the tiny world {folder}"))


def record(folder: Path, paths: list[Path]) -> None:
    """Add files written into a built world after its build (derived data) to its manifest, so that they
    are verified like the rest. Files already listed keep their recorded sha256; a folder without a
    manifest is not a world and is left alone."""
    manifest = WorldFiles(folder).manifest
    if not manifest.is_file():
        return  # not a world (a test's bare folder): nothing to keep in step
    info = json.loads(manifest.read_text())
    new = {str(f.relative_to(folder)): f for path in paths
           for f in (sorted(path.rglob("*")) if path.is_dir() else [path])
           if f.is_file() and str(f.relative_to(folder)) not in info["files"]}
    if not new:
        return
    info["files"].update({rel: sha256_file(f) for rel, f in new.items()})
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(manifest)


def build(folder: Path, p: pretrain.Preset, progress: Progress, log: Callable[[str], None]) -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = WorldFiles(tmp)
    times: dict[str, float] = {}
    start = time.perf_counter()

    caps = world.all_captions()
    images, idx = world.render_dataset(caps, p.images_per_caption, seed=p.seed)
    labels = torch.tensor([[world.SHAPES.index(caps[i].shape), list(world.COLOURS).index(caps[i].colour)] for i in idx])
    times["render_s"] = time.perf_counter() - start

    t = time.perf_counter()
    net = pretrain.train_classifier(p, images, labels, progress)
    accuracy = classifier_accuracy(net, p.seed + 7)
    fidelity.save(net, world.SHAPES, list(world.COLOURS), files.reward("fidelity"), validation_accuracy=accuracy)
    times["classifier_s"] = time.perf_counter() - t

    t = time.perf_counter()
    vae = pretrain.train_vae(p, images, progress)
    times["autoencoder_s"] = time.perf_counter() - t

    t = time.perf_counter()
    latents = pretrain.encode_latents(vae, images)
    tokenizer = pretrain.build_tokenizer(tmp / "tokenizer-src", pretrain.caption_words(), pretrain.MAX_TOKENS)
    unet, text_encoder = pretrain.train_denoiser(p, latents, torch.tensor(idx), [c.text for c in caps], tokenizer,
                                                 progress)
    times["denoiser_s"] = time.perf_counter() - t
    save_pipeline(files.pipeline, unet, vae, text_encoder, tokenizer)
    shutil.rmtree(tmp / "tokenizer-src")
    times["total_s"] = time.perf_counter() - start
    digests = {str(f.relative_to(tmp)): sha256_file(f) for f in _files(tmp)}
    info = {"preset": dataclasses.asdict(p), "classifier_accuracy": accuracy, "times": times, "files": digests,
            "versions": {"torch": torch.__version__}}
    files.manifest.write_text(json.dumps(info, indent=1))
    tmp.rename(folder)
    log(f"tiny world ready in {times['total_s'] / 60:.1f} min at {folder} (classifier accuracy {accuracy:.3f})")


def classifier_accuracy(net, seed: int, per_caption: int = 10) -> float:
    """Both labels right, on fresh renders of every caption (never seen in training)."""
    caps = world.all_captions()
    images, idx = world.render_dataset(caps, per_caption, seed=seed)
    shape, colour = fidelity.predict(net, images)
    want_s = torch.tensor([world.SHAPES.index(caps[i].shape) for i in idx])
    want_c = torch.tensor([list(world.COLOURS).index(caps[i].colour) for i in idx])
    return float(((shape == want_s) & (colour == want_c)).float().mean())


def save_pipeline(folder: Path, unet, vae, text_encoder, tokenizer) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(**pretrain.scheduler_config(), set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
