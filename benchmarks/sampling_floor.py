"""Sampling speed: base sampling against diffusers' pipeline, each guidance method against its UNet floor.

    python benchmarks/sampling_floor.py                          # both scales
    python benchmarks/sampling_floor.py --scales tiny --batch 256 --rounds 5

1. Base sampling (goal ≥ 1.0×): ``StableDiffusionPipeline.__call__`` against what ``bench run``
   calls per batch (``methods.core.diffusion.generate``: text encoding, the denoising loop, VAE
   decoding) on the same model, prompts, per-image seeds, DDIM steps, guidance and batch. The ratio
   is diffusers' time over ours (above 1: we are faster); both draw the same images (max |Δ|).
2. Each method's denoising loop (goal ≤ 1.1×): the shared loop ``sample_latents`` with the method's
   denoiser against its UNet-evaluation floor, the UNet calls the loop made (recorded: one batched
   CFG call for base, two networks for NPO-style negatives, three for cPGD), replayed alone.
   Encoding and decoding are the same for every method and are in part 1.

Trained weights do not change speed: every method samples with copies of the base UNet saved as
its artifact. Rounds alternate A, B, A, B; tables show the median (range) of per-round ratios.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

import common  # benchmarks/common.py, beside this script
from bench.registry import METHODS
from methods.core import diffusion

SAMPLERS = {"tiny": {"steps": 20, "batch": 64}, "small-sd": {"steps": 20, "batch": 8}}
# Every registered method with its defaults, and the variants that sample differently.
VARIANTS = [(m, {}) for m in METHODS.available()] + [("npo", {"stack_on": "dpo"}), ("contrastive", {"variant": "pgd"})]


def artifacts(pipe, root: Path) -> Path:
    """One saved copy of the base UNet, laid out as every method's artifact."""
    full = root / "full"
    if not full.exists():
        pipe.unet.save_pretrained(full / "unet")
        for side in ("positive", "negative"):
            (full / side).mkdir(exist_ok=True)
            shutil.copytree(full / "unet", full / side / "unet")
    return full


def prompts_and_seeds(n: int) -> tuple[list[str], list[int]]:
    texts = ["a red circle on a white background", "a small blue square", "a big green triangle", "a yellow star"]
    return [texts[i % len(texts)] for i in range(n)], [diffusion.seed_for("bench", i) for i in range(n)]


def compare_with_diffusers(pipe, family: str, steps: int, batch: int, rounds: int) -> list:
    prompts, seeds = prompts_and_seeds(batch)
    g = METHODS.get("base").defaults[family]["guidance_scale"]
    denoise = diffusion.cfg_denoiser(pipe.unet, pipe.unet, g)
    pipe.scheduler = diffusion.sampling_scheduler(pipe, "ddim")
    out: dict[str, torch.Tensor] = {}

    def ours() -> float:
        return common.timed(lambda: out.__setitem__("ours", diffusion.generate(pipe, denoise, prompts, seeds, steps)))

    def theirs() -> float:
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return common.timed(lambda: out.__setitem__("diffusers", pipe(
            prompts, num_inference_steps=steps, guidance_scale=g, generator=gens, output_type="pt").images.cpu()))

    ours(), theirs()  # warm-up
    times = common.alternate({"diffusers": theirs, "ours": ours}, rounds)
    diff = float((out["ours"] - out["diffusers"]).abs().max())
    return [common.spread((t["diffusers"] for t in times), "{:.2f}"), common.spread((t["ours"] for t in times), "{:.2f}"),
            f"**{common.spread((t['diffusers'] / t['ours'] for t in times), '{:.2f}')}**", f"{diff:.1e}"]


def method_rows(pipe, family: str, steps: int, batch: int, rounds: int, root: Path) -> list[list]:
    prompts, seeds = prompts_and_seeds(batch)
    cond = diffusion.encode_prompts(pipe, prompts)
    uncond = diffusion.encode_uncond(pipe, batch)
    noise = diffusion.initial_noise(seeds, diffusion.latent_shape(pipe))
    full = artifacts(pipe, root)
    rows = []
    for method_id, extra in VARIANTS:
        cls = METHODS.get(method_id)
        cfg = cls.Config(**{**cls.defaults.get(family, {}), **extra})
        denoise = cls(cfg).denoiser(pipe, full if cls.trains else None, lambda mid: full)
        recorder = common.Recorder()

        def loop() -> float:
            sched = diffusion.sampling_scheduler(pipe, "ddim")
            return common.timed(lambda: diffusion.sample_latents(pipe, denoise, cond, uncond, noise, steps, sched))

        with recorder.recording():
            loop()  # warm-up, and the calls of one loop
        calls = recorder.steps[0]
        replay = common.Replay(pipe.unet, calls)
        with torch.no_grad():
            replay.step(calls)

        def floor() -> float:
            with torch.no_grad():
                return common.timed(lambda: replay.step(calls))

        times = common.alternate({"loop": loop, "floor": floor}, rounds)
        name = method_id + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")
        per_step = len(calls) // steps
        rows.append([name, f"{per_step} × {calls[0].sample[0]}", common.spread((t["loop"] for t in times), "{:.2f}"),
                     common.spread((t["floor"] for t in times), "{:.2f}"),
                     f"**{common.spread((t['loop'] / t['floor'] for t in times), '{:.2f}')}**"])
    return rows


def main() -> None:
    ap = common.timing_parser(__doc__)
    ap.add_argument("--steps", type=int, default=0, help="DDIM steps (default: 20)")
    ap.add_argument("--batch", type=int, default=0, help="images per batch (default: tiny 64, small-sd 8)")
    args = ap.parse_args()
    common.start_timing(args, f"{args.rounds} alternating rounds")
    for scale in args.scales.split(","):
        pipe = common.load(scale, args.cache)
        family = "tiny" if scale == "tiny" else "sd15"
        steps, batch = args.steps or SAMPLERS[scale]["steps"], args.batch or SAMPLERS[scale]["batch"]
        common.print_table(
            f"Base sampling, {scale} scale: diffusers StableDiffusionPipeline vs ours ({batch} images, {steps} DDIM "
            f"steps, CFG; seconds per batch; goal ≥ 1.0)",
            ["diffusers s", "ours s", "diffusers / ours", "max |Δ image|"],
            [compare_with_diffusers(pipe, family, steps, batch, args.rounds)])
        with tempfile.TemporaryDirectory() as root:
            rows = method_rows(pipe, family, steps, batch, args.rounds, Path(root))
        common.print_table(
            f"Denoising loop over its UNet-evaluation floor, {scale} scale ({batch} images, {steps} steps; "
            f"seconds per loop; goal ≤ 1.1)",
            ["method", "UNet calls/step × batch", "loop s", "floor s", "loop / floor"], rows)


if __name__ == "__main__":
    main()
