"""The tiny world's training data for methods, built once per base model and cached beside it.

- ``tiny-pickapic``: pairs of base-model samples on ``tiny-train`` captions, labelled by the simulated
  rater (bench/tiny/annotator.py), in the Pick-a-Pic v2 parquet layout, so the loader that reads
  real Pick-a-Pic shards reads these too;
- captioned images: ground-truth renders of ``tiny-train`` captions (the world's "real photos"),
  for methods that train without labels;
- ``tiny-pickscore``: a Bradley-Terry preference model trained on ``tiny-pickapic``.

Each artefact is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from bench import prefdata
from bench.tiny import prepare, world
from bench.tiny.annotator import Annotator, agreement
from bench.tiny.files import WorldFiles
from methods.core import diffusion
from metrics import oracle, tiny_pickscore

Progress = Callable[[str, int, int], None]

SAMPLING_STEPS = 20
GUIDANCE = 5.0  # the base method's tiny default (methods/base.py)


def _done(path: Path) -> bool:
    return path.exists() and not path.with_name(path.name + ".tmp").exists()


def sample_base(pipe, captions: list[str], seeds: list[int], batch: int = 256,
                progress: Progress | None = None) -> torch.Tensor:
    """Base-model images (N, 3, H, W) in [0, 1] with the shared sampler and per-image seeds."""
    denoise = diffusion.cfg_denoiser(pipe.unet, pipe.unet, GUIDANCE)
    out = []
    for i in range(0, len(captions), batch):
        out.append(diffusion.generate(pipe, denoise, captions[i:i + batch], seeds[i:i + batch], SAMPLING_STEPS))
        if progress:
            progress("tiny-pickapic samples", min(i + batch, len(captions)), len(captions))
    return torch.cat(out)


def ensure_pairs(files: WorldFiles, pipe, n_pairs: int, annotator: Annotator = Annotator(),
                 progress: Progress | None = None) -> Path:
    """``tiny-pickapic``: two base samples per row on a train caption, labelled by the rater."""
    path = files.pairs
    if _done(path):
        return path
    start = time.perf_counter()
    train, _ = world.split_captions()
    captions = [train[i % len(train)].text for i in range(n_pairs)]
    seeds = [diffusion.seed_for("tiny-pickapic", i, side) for i in range(n_pairs) for side in (0, 1)]
    images = sample_base(pipe, [c for c in captions for _ in (0, 1)], seeds, progress=progress)
    utility = oracle.utility(images)
    u0, u1 = utility[0::2], utility[1::2]
    label_0 = annotator.label(u0, u1, torch.Generator().manual_seed(17))
    pil = diffusion.to_pil(images)
    rows = [{"caption": captions[i], "jpg_0": pil[2 * i], "jpg_1": pil[2 * i + 1], "label_0": float(label_0[i]),
             "label_1": 1.0 - float(label_0[i]), "ranking_id": i} for i in range(n_pairs)]
    prefdata.write_pickapic(path.with_name(path.name + ".tmp"), rows)
    stats = {"pairs": n_pairs, "ties": float((label_0 == 0.5).double().mean()),
             "agreement_with_oracle": agreement(label_0, u0, u1), "annotator": asdict(annotator),
             "seconds": time.perf_counter() - start}
    files.pair_stats.write_text(json.dumps(stats, indent=1))
    path.with_name(path.name + ".tmp").rename(path)
    prepare.record(files.folder, [path, files.pair_stats])
    return path


def ensure_captioned(files: WorldFiles, per_caption: int = 16) -> Path:
    """Ground-truth renders of the train captions, as (caption, image) rows."""
    path = files.captioned
    if _done(path):
        return path
    train, _ = world.split_captions()
    images, idx = world.render_dataset(train, per_caption, seed=23)
    prefdata.write_captioned(path.with_name(path.name + ".tmp"), [train[i].text for i in idx],
                             diffusion.to_pil(images))
    path.with_name(path.name + ".tmp").rename(path)
    prepare.record(files.folder, [path])
    return path


def ensure_pickscore(files: WorldFiles, pipe, n_pairs: int, steps: int, progress: Progress | None = None) -> Path:
    """Train ``tiny-pickscore`` on tiny-pickapic (ties dropped) with a Bradley-Terry loss."""
    out = files.reward("tiny-pickscore")
    if (out / tiny_pickscore.WEIGHTS).exists():
        return out
    pairs_path = ensure_pairs(files, pipe, n_pairs, progress=progress)
    start = time.perf_counter()
    pairs = prefdata.read_pickapic(pairs_path)
    to_t = lambda blobs: oracle.pil_to_tensor([prefdata.decode_image(b) for b in blobs])  # noqa: E731
    xw, xl = to_t(pairs.images_w), to_t(pairs.images_l)
    words = sorted({w for c in world.all_captions() for w in c.text.split()})
    vocab = {w: i + 1 for i, w in enumerate(words)}
    n_hold = len(xw) // 10  # held-out pairs: report the learned model's accuracy against the labels
    torch.manual_seed(31)
    net = tiny_pickscore.PreferenceNet(len(vocab))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(37)
    def scores(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
        w, o = tiny_pickscore.encode_words(vocab, [pairs.captions[r] for r in rows])
        return net(x, w, o)

    for step in range(steps):
        idx = torch.randint(n_hold, len(xw), (64,), generator=g)
        flip = torch.rand(64, generator=g) < 0.5  # horizontal flips: the preference is symmetric
        a = torch.where(flip[:, None, None, None], xw[idx].flip(3), xw[idx])
        b = torch.where(flip[:, None, None, None], xl[idx].flip(3), xl[idx])
        loss = -F.logsigmoid(scores(a, idx.tolist()) - scores(b, idx.tolist())).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress("tiny-pickscore", step + 1, steps)
    net.eval()
    with torch.no_grad():
        hold = list(range(n_hold))
        acc = float((scores(xw[:n_hold], hold) > scores(xl[:n_hold], hold)).double().mean())
    tiny_pickscore.save(net, vocab, out, heldout_accuracy=acc, train_s=time.perf_counter() - start)
    prepare.record(files.folder, [out])
    return out


def ensure_all(results_dir: Path, preset_name: str, progress: Progress | None = None,
               log: Callable[[str], None] = print, rebuild: bool = False) -> Path:
    """The whole world: base pipeline and fidelity classifier, then tiny-pickapic, captioned images and
    tiny-pickscore, so that a later ``bench run`` trains methods without building anything first. The
    shipped world has them all; ``rebuild`` builds everything from scratch beside the results instead."""
    from bench import models

    build = prepare.rebuild if rebuild else prepare.ensure
    files = WorldFiles(build(results_dir, preset_name, progress, log))
    p = prepare.preset(preset_name)
    pipe = models.load_pipeline(files.pipeline)
    ensure_pairs(files, pipe, p.n_pairs, progress=progress)
    ensure_captioned(files)
    ensure_pickscore(files, pipe, p.n_pairs, p.pickscore_steps, progress=progress)
    return files.folder
