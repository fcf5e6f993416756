"""Each training method's step time over its UNet floor, at tiny and small-SD scale.

    python benchmarks/train_floor.py                          # both scales, every training method
    python benchmarks/train_floor.py --scales tiny --methods dpo,npo --rounds 5 --steps 8

The floor of a method is the UNet work its step cannot avoid: the exact UNet calls one of its steps
makes (recorded while it trains: input shapes, autograd on or off, LoRA adapters on or off),
replayed alone, with the backward of every call made with autograd on (common.Replay). Everything
else in a step is overhead: batching, noise and timesteps, losses, optimizer and clipping, EMA,
logging, and for TailorPO the VAE decode and reward model that rank its candidates (a toy
brightness reward here). Goal: ≤ 1.10× for the DPO family (the ``train_pairs`` loop).

Each round trains the method for --steps steps (its step time: the median of steps 2..N, from
per-step timestamps) and then replays the UNet calls of those steps (the floor: median per step).
Steps log through ``bench run``'s own ``TrainLog`` (values checked each step, held in memory, written
to the store in one transaction at the end or every 30 s): that end-of-run write is the last column.
Rounds alternate A, B, A, B; the table shows the median (range) of the per-round ratios.
Configs: the method's own per-model defaults (tiny: "tiny", small-SD: "sd15"), with --steps,
no warmup, and at small-SD scale 4 pairs (images, prompts) per step, as the performance anchor.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

import common  # benchmarks/common.py, beside this script
from bench.registry import METHODS
from methods.core.api import ImageData, PairData, TrainContext
from methods.core.diffusion import encode_prompts, latent_shape
from methods.core.types import PAIRS

TRAINING = [m for m in METHODS.available() if METHODS.get(m).trains]
CAPTIONS = ["a red circle on a white background", "a small blue square", "a big green triangle", "a yellow star"]
SMALL = {"batch_pairs": 4, "micro_batch_pairs": 0, "batch_size": 4, "micro_batch": 0, "optimizer": "adamw",
         "gradient_checkpointing": False}


def config(method_id: str, scale: str, steps: int):
    cls = METHODS.get(method_id)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    values = dict(cls.defaults["tiny" if scale == "tiny" else "sd15"])
    values.update({k: v for k, v in ({"steps": steps, "warmup_steps": 0} | (SMALL if scale != "tiny" else {})).items()
                   if k in names})
    return cls, cls.Config(**values)


def brightness(images, prompts):  # a differentiable toy reward: the ranking is not what is timed
    return images.float().mean(dim=(1, 2, 3))


def context(pipe, out: Path, batch: int, log) -> TrainContext:
    g = torch.Generator().manual_seed(0)
    n = 4 * batch
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
    cond = encode_prompts(pipe, captions)
    shape = latent_shape(pipe)
    pairs = PairData(torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g), cond, torch.ones(n),
                     captions)
    images = ImageData(torch.randn(n, *shape, generator=g), cond, captions)
    return TrainContext(pipe=pipe, device=torch.device("cpu"), dtype=torch.float32, out_dir=out, seed=0,
                        pairs=lambda: pairs, images=lambda: images, prompts=lambda: captions,
                        reward=lambda: brightness, log=log)


def train_round(pipe, method_id: str, scale: str, steps: int, out: Path
                ) -> tuple[list[float], list[list[common.Call]], float]:
    """Per-step times of steps 2..N of one training run, the UNet calls of each of those steps, and
    the time of the run's train-log write to the store."""
    from bench.runner import TrainLog
    from bench.store import Store

    cls, cfg = config(method_id, scale, steps)
    recorder = common.Recorder()
    stamps: list[tuple[int, float]] = []
    train_log = TrainLog(Store(out / "bench.duckdb"), SimpleNamespace(artifact_hash="a" * 64, method=method_id))

    def log(step: int, values: dict) -> None:  # as bench run logs
        train_log(step, values)
        stamps.append((step, common.now()))
        recorder.mark()

    batch = getattr(cfg, "batch_pairs", None) or getattr(cfg, "batch_size")
    ctx = context(pipe, out, batch, log)
    with recorder.recording():
        cls(cfg).train(ctx)
    write = common.timed(train_log.flush)
    # A step's time runs from the previous step's log; step 1 of each trained module carries its setup.
    # recorder.steps[i] holds the calls made before the i-th log, i.e. those of step stamps[i].
    later = [i for i in range(1, len(stamps)) if stamps[i][0] == stamps[i - 1][0] + 1]
    return [stamps[i][1] - stamps[i - 1][1] for i in later], [recorder.steps[i] for i in later], write


def floor_round(pipe, steps: list[list[common.Call]]) -> list[float]:
    replay = common.Replay(pipe.unet, [c for calls in steps for c in calls])
    replay.step(steps[0])  # warm-up: the training run's step 1 warmed its modules up too
    return [common.timed(lambda calls=calls: replay.step(calls)) for calls in steps]


def main() -> None:
    ap = common.timing_parser(__doc__)
    ap.add_argument("--methods", default=",".join(TRAINING))
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    common.start_timing(args, f"{args.rounds} alternating rounds of {args.steps} steps")
    for scale in args.scales.split(","):
        pipe = common.load(scale, args.cache)
        rows = []
        for method_id in args.methods.split(","):
            ratios, step_ms, floor_ms, store_ms = [], [], [], []
            for r in range(args.rounds):
                with tempfile.TemporaryDirectory() as out:
                    times, calls, write = train_round(pipe, method_id, scale, args.steps, Path(out))
                floor = floor_round(pipe, calls)
                step_ms.append(1e3 * common.median(times))
                floor_ms.append(1e3 * common.median(floor))
                store_ms.append(1e3 * write)
                ratios.append(step_ms[-1] / floor_ms[-1])
            cls, cfg = config(method_id, scale, args.steps)
            what = ("LoRA r%d" % cfg.lora_rank) if getattr(cfg, "lora_rank", 0) else "full"
            n_calls = common.median(len(c) for c in calls)
            rows.append([method_id, what, f"{n_calls:g}", common.spread(step_ms, "{:.1f}"), common.spread(floor_ms, "{:.1f}"),
                         f"**{common.spread(ratios, '{:.2f}')}**", "≤ 1.10" if PAIRS in cls(cfg).needs() else "—",
                         common.spread(store_ms, "{:.1f}")])
        common.print_table(
            f"Training step over its UNet floor, {scale} scale (ms per optimizer step; median (range) of "
            f"{args.rounds} rounds)",
            ["method", "weights", "UNet calls/step", "step ms", "floor ms", "step / floor", "goal",
             "+ train_log write ms (whole run)"], rows)


if __name__ == "__main__":
    main()
