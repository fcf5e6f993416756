"""Measure the tiny world: preparation time, base fidelity, room to align, annotator agreement.

    python benchmarks/tiny_world.py                        # the default preset, built here (cached under /tmp)
    python benchmarks/tiny_world.py --world compare        # the shipped world beside one built here
    python benchmarks/tiny_world.py --set unet_steps=2000  # a variant of it (its own cache folder)
    python benchmarks/tiny_world.py --set timesteps=uniform  # uniform training timesteps, for comparison
    python benchmarks/tiny_world.py --preset micro --seeds 4
    python benchmarks/tiny_world.py --curve 1500,2000,2500  # also: fidelity against preparation minutes

Builds the world cold (unless its folder already exists under --results; ``--world shipped`` measures the
shipped world instead, ``--world compare`` both, side by side), then samples the base
model on every ``tiny-eval`` prompt with ``--seeds`` seeds through the same sampler as ``bench run``
and prints one table. Definitions (issue 2):

- fidelity: share of base images whose shape and colour the classifier reads as the caption's;
- headroom: per (prompt, k), the oracle-best of seeds [0, 8) beats the independent seed 8 + k
  by at least half the within-prompt oracle std (pooled over prompts); "gated" picks the best among
  fidelity-correct samples only (a prompt with none counts as a failure);
- agreement: the annotator's non-tied labels that follow the oracle order on tiny-pickapic.

``--curve`` retrains the world's denoiser for each listed step count on the world's own autoencoder,
classifier and tokenizer (what a whole build of that variant trains, since those stages do not depend
on the denoiser's steps) and prints fidelity against the preparation minutes that variant would take.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import models, suites
from bench.tiny import data, prepare, pretrain, world
from bench.tiny.files import WorldFiles
from methods.core import diffusion
from metrics import fidelity, oracle, tiny_pickscore


def _override(p: pretrain.Preset, assignments: list[str]) -> pretrain.Preset:
    kinds = {f.name for f in dataclasses.fields(p)}
    changes = {}
    for a in assignments:
        key, value = a.split("=", 1)
        assert key in kinds, f"unknown preset field {key!r}; fields: {', '.join(sorted(kinds))}"
        current = getattr(p, key)
        if isinstance(current, tuple):
            changes[key] = tuple(int(v) for v in value.split(","))
        else:
            changes[key] = type(current)(value)
    return dataclasses.replace(p, **changes, name=p.name + ("-variant" if changes else ""))


def build(results: Path, p: pretrain.Preset) -> WorldFiles:
    """A world built on this machine (cold, unless its folder already exists under ``results``)."""
    files = WorldFiles(results / "models" / f"tiny-{p.name}-{prepare.preset_hash(p)}")
    if not files.folder.exists():
        prepare.build(files.folder, p, lambda *a: None, print)
    return files


def shipped(p: pretrain.Preset) -> WorldFiles:
    folder = prepare.SHIPPED / f"tiny-{p.name}-{prepare.preset_hash(p)}"
    if not folder.is_dir():
        raise SystemExit(f"the project ships no world for preset {p.name!r} (hash {prepare.preset_hash(p)})")
    return WorldFiles(folder)


def open_world(files: WorldFiles, p: pretrain.Preset) -> tuple[Any, dict[str, float]]:
    """The world's loaded pipeline and the seconds each preparation stage took (its derived data first)."""
    times: dict[str, float] = {}
    manifest = json.loads(files.manifest.read_text())
    times.update(manifest["times"])
    pipe = models.load_pipeline(files.pipeline)
    data.ensure_pickscore(files, pipe, p.n_pairs, p.pickscore_steps)  # and tiny-pickapic before it
    # Each stage records its own seconds, so a re-run on a built world reports the first build's times.
    times["pairs_s"] = _pair_stats(files)["seconds"]
    times["pickscore_s"] = _pickscore_meta(files)["train_s"]
    return pipe, times


def sample_eval(pipe: Any, seeds: int) -> tuple[torch.Tensor, list[str]]:
    """Base images for every tiny-eval prompt and seeds 0..seeds-1, ordered (prompt, seed), seeded as
    ``bench run`` seeds them, with the base method's sampler (bench/tiny/data.py)."""
    suite = suites.load("tiny-eval")
    keys = [(p, s) for p in suite.prompts for s in range(seeds)]
    images = data.sample_base(pipe, [p.text for p, _ in keys],
                              [diffusion.seed_for(suite.name, p.prompt_id, s) for p, s in keys])
    return images, [p.text for p in suite.prompts]


def faithful(scorer: fidelity.Fidelity, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
    s, c = fidelity.predict(scorer.net, images)
    want = torch.tensor([scorer._target(t) for t in captions])
    return ((s == want[:, 0]) & (c == want[:, 1])).float()


def headroom(u: torch.Tensor, ok: torch.Tensor, n_best: int = 8) -> dict[str, float]:
    """u, ok: (prompts, seeds) oracle utilities and fidelity flags; seeds >= n_best are independent."""
    half_std = 0.5 * u.std(dim=1).mean()
    best = u[:, :n_best].max(dim=1).values
    gated = torch.where(ok[:, :n_best] > 0, u[:, :n_best], torch.tensor(-1.0)).max(dim=1).values
    indep = u[:, n_best:]
    return {"within_prompt_std": float(2 * half_std),
            "best_of_8_wins": float((best[:, None] - indep >= half_std).float().mean()),
            "gated_best_of_8_wins": float((gated[:, None] - indep >= half_std).float().mean())}


def vae_fidelity(pipe: Any, scorer: fidelity.Fidelity, per_caption: int = 4) -> float:
    _, evals = world.split_captions()
    images, idx = world.render_dataset(evals, per_caption, seed=99)
    with torch.no_grad():
        rec = diffusion.decode_latents(pipe.vae, diffusion.encode_images(pipe.vae, images * 2 - 1))
    return float(faithful(scorer, rec, [evals[i].text for i in idx]).mean())


def fidelity_curve(pipe: Any, p: pretrain.Preset, steps: list[int], scorer: fidelity.Fidelity, seeds: int,
                   times: dict[str, float]) -> list[tuple[int, float, float, float]]:
    """(denoiser steps, denoiser s, estimated preparation min, base fidelity) per step count; the preset's
    own count reads its world's measured times."""
    caps = world.all_captions()
    images, idx = world.render_dataset(caps, p.images_per_caption, seed=p.seed)
    latents = pretrain.encode_latents(pipe.vae, images)
    others = times["total_s"] - times["denoiser_s"] + times["pairs_s"] + times["pickscore_s"]
    rows = []
    for n in sorted(set(steps) | {p.unet_steps}):
        if n == p.unet_steps:
            variant, seconds = pipe, times["denoiser_s"]
        else:
            t = time.perf_counter()
            unet, text = pretrain.train_denoiser(dataclasses.replace(p, unet_steps=n), latents, torch.tensor(idx),
                                                 [c.text for c in caps], pipe.tokenizer, lambda *a: None)
            seconds = time.perf_counter() - t
            with tempfile.TemporaryDirectory() as tmp:  # saved and reloaded, as a built world is
                prepare.save_pipeline(Path(tmp), unet, pipe.vae, text, pipe.tokenizer)
                variant = models.load_pipeline(Path(tmp))
        samples, prompts = sample_eval(variant, seeds)
        ok = faithful(scorer, samples, [t for t in prompts for _ in range(seeds)])
        rows.append((n, seconds, (others + seconds) / 60, float(ok.mean())))
    return rows


def _pair_stats(files: WorldFiles) -> dict:
    return json.loads(files.pair_stats.read_text())


def _pickscore_meta(files: WorldFiles) -> dict:
    return json.loads((files.reward("tiny-pickscore") / tiny_pickscore.VOCAB).read_text())


def measure(files: WorldFiles, p: pretrain.Preset, seeds: int) -> tuple[dict[str, str], Any, Any, dict]:
    """One world's table rows, and its pipeline, fidelity scorer and preparation times (for --curve)."""
    pipe, times = open_world(files, p)
    scorer = fidelity.Fidelity(files.reward("fidelity")).load()
    t = time.perf_counter()
    images, prompts = sample_eval(pipe, seeds)
    sample_s = time.perf_counter() - t
    captions = [t for t in prompts for _ in range(seeds)]
    ok = faithful(scorer, images, captions).view(len(prompts), seeds)
    u = oracle.utility(images).view(len(prompts), seeds)
    stats = _pair_stats(files)
    manifest = json.loads(files.manifest.read_text())
    rows = {
        "world": files.folder.name,
        "content id (sha256 of the file list)": prepare.content_id(files.folder),
        **{k: f"{v:.0f} s" for k, v in times.items() if k != "total_s"},
        "prepare total (pipeline + pairs + pickscore)": f"{(times['total_s'] + times['pairs_s'] + times['pickscore_s']) / 60:.1f} min",
        "classifier accuracy (fresh renders)": f"{manifest['classifier_accuracy']:.3f}",
        "autoencoder reconstruction fidelity (eval captions)": f"{vae_fidelity(pipe, scorer):.3f}",
        "base fidelity, tiny-eval, seeds 0-1": f"{ok[:, :2].mean():.3f}",
        f"base fidelity, tiny-eval, seeds 0-{seeds - 1}": f"{ok.mean():.3f}",
        "base oracle mean": f"{u.mean():.3f}",
        **({k: f"{v:.3f}" for k, v in headroom(u, ok).items()} if seeds > 8 else {}),
        "annotator agreement (tiny-pickapic, non-tied)": f"{stats['agreement_with_oracle']:.3f}",
        "annotator ties": f"{stats['ties']:.3f}",
        "tiny-pickscore held-out accuracy": f"{_pickscore_meta(files)['heldout_accuracy']:.3f}",
        f"eval sampling ({len(images)} images)": f"{sample_s:.0f} s",
    }
    return rows, pipe, scorer, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[], help="preset field=value (tuples as 16,32,32)")
    ap.add_argument("--results", type=Path, default=Path(tempfile.gettempdir()) / "tiny-world-bench")
    ap.add_argument("--seeds", type=int, default=12, help="seeds per prompt (8 for best-of-8, the rest independent)")
    ap.add_argument("--curve", default="", help="denoiser step counts for a fidelity-against-minutes table")
    ap.add_argument("--world", choices=("built", "shipped", "compare"), default="built",
                    help="measure a world built here, the shipped one, or both side by side")
    args = ap.parse_args()
    torch.set_num_threads(2)
    p = _override(prepare.preset(args.preset), args.set)
    worlds = {"shipped": lambda: shipped(p), "built": lambda: build(args.results, p)}
    chosen = ["shipped", "built"] if args.world == "compare" else [args.world]
    columns = {name: measure(worlds[name](), p, args.seeds) for name in chosen}
    keys = list(dict.fromkeys(k for rows, *_ in columns.values() for k in rows))
    width = max(map(len, keys))
    print(f"\n| {'measure':<{width}} | {' | '.join(chosen)} |\n|{'-' * (width + 2)}|" + "---|" * len(chosen))
    for k in keys:
        print(f"| {k:<{width}} | " + " | ".join(columns[name][0].get(k, "—") for name in chosen) + " |")
    if args.curve:
        _, pipe, scorer, times = columns[chosen[-1]]
        curve = fidelity_curve(pipe, p, [int(n) for n in args.curve.split(",")], scorer, args.seeds, times)
        print(f"\n| denoiser steps | denoiser s | prepare min | base fidelity, seeds 0-{args.seeds - 1} |")
        print("|---:|---:|---:|---:|")
        for n, seconds, minutes, fid in curve:
            print(f"| {n} | {seconds:.0f} | {minutes:.1f} | {fid:.3f} |")


if __name__ == "__main__":
    main()
