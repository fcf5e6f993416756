"""Peak memory and time of one training step at real size: the SD1.5 or SDXL UNet, full or LoRA,
with and without gradient checkpointing.

    python benchmarks/memory_plan.py --model sd15                           # this CPU machine (fits 24 GiB)
    python benchmarks/memory_plan.py --model sdxl --device cuda --dtype bf16

The UNet is built from the official config (random weights: memory and speed do not depend on what
the weights learned; nothing is downloaded). A step is the pair methods' own UNet work
(methods/core/pairs.py: ``pair_errors`` on one micro-batch of pairs, winners and losers sharing noise,
the reference first without autograd, then the policy with it; backward; gradient clipping; the
optimizer step), with the project's LoRA (``attach_lora``), optimizers (``make_optimizer``) and
autocast with fp32 master weights, as ``train_pairs`` runs them. Every configuration runs in a
fresh process, two steps (the first allocates the optimizer state); the second is timed.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the process's peak resident
size (which includes ~0.5 GiB of interpreter and libraries). The text encoders and the VAE are not
in it: training reads cached latents and text embeddings.

How the methods map onto it (UNet calls per optimizer step, methods/*.py): Diffusion-DPO, SDPO and
NPO are this step (SDPO adds one more backward through the same output: no more weights or
states); the contrastive module trains on one image per row (half the activations); Self-NPO and
TailorPO add no-grad sampling calls, which hold no activations, so their peak is this step's with
their micro-batch.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.models import PRECISIONS  # noqa: E402  (the names --precision takes)

# The official UNet configs (stable-diffusion-v1-5 unet/config.json; SDXL base 1.0 unet/config.json).
UNETS = {
    "sd15": {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8,
             "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2},
    "sdxl": {"sample_size": 128, "cross_attention_dim": 2048, "attention_head_dim": (5, 10, 20),
             "block_out_channels": (320, 640, 1280), "layers_per_block": 2, "transformer_layers_per_block": (1, 2, 10),
             "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
             "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
             "projection_class_embeddings_input_dim": 2816},
}
TEXT = {"sd15": (77, 768, 0), "sdxl": (77, 2048, 1280)}  # tokens, width, pooled width
PLAN = [  # (weights, optimizer, gradient checkpointing)
    ("full", "adamw", False), ("full", "adamw", True), ("full", "adafactor", True),
    ("lora r8", "adamw", False), ("lora r8", "adamw", True),
]


def one(model: str, weights: str, optimizer: str, checkpointing: bool, pairs: int, device: str, dtype: str) -> dict:
    """One configuration, two steps; the second timed. Runs in its own process (clean peak memory)."""
    import copy

    from diffusers import DDPMScheduler, UNet2DConditionModel

    from methods.core.api import Cond, PairData
    from methods.core.pairs import pair_errors
    from methods.core.training import attach_lora, make_optimizer

    dev, dt = torch.device(device), getattr(torch, PRECISIONS[dtype])
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    with dev:  # initialised where it trains (fast on a GPU); fp32 master weights
        policy = UNet2DConditionModel(**UNETS[model])
    lora = weights.startswith("lora")
    if lora:
        ref, params = None, attach_lora(policy, 8, g)
    else:  # the frozen reference is the pipeline's UNet, in the pipeline's dtype
        ref, params = copy.deepcopy(policy).to(dt).requires_grad_(False).eval(), list(policy.parameters())
    policy.train()
    if checkpointing:
        policy.enable_gradient_checkpointing()
    opt = make_optimizer(params, optimizer, 1e-6, 0.0)
    scaler = torch.amp.GradScaler(dev.type, enabled=dt == torch.float16)
    n_tok, width, pooled = TEXT[model]
    size = UNETS[model]["sample_size"]
    added = {"text_embeds": torch.randn(pairs, pooled, generator=g),
             "time_ids": torch.tensor([[size * 8, size * 8, 0, 0, size * 8, size * 8]] * pairs, dtype=torch.float32)
             } if pooled else {}
    batch = PairData(torch.randn(pairs, 4, size, size, generator=g), torch.randn(pairs, 4, size, size, generator=g),
                     Cond(torch.randn(pairs, n_tok, width, generator=g), added), torch.ones(pairs), [""] * pairs)
    batch = PairData(batch.latents_w.to(dev), batch.latents_l.to(dev), batch.cond.to(dev), batch.label, batch.captions)
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    times = []
    for _ in range(2):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dt, enabled=dt != torch.float32):
            e = pair_errors(policy, ref, batch, sched, g)
        loss = -torch.nn.functional.logsigmoid(-(e.model_err_w - e.model_err_l)).mean()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    total = sum(p.numel() for p in policy.parameters())
    return {"params_m": total / 1e6, "trainable_m": sum(p.numel() for p in params) / 1e6, "peak_gib": peak,
            "step_s": times[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=list(UNETS), default="sd15")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=list(PRECISIONS), default="fp32", help="autocast dtype (weights stay fp32)")
    ap.add_argument("--pairs", type=int, default=1, help="pairs per micro-batch (2x images through the UNet)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    ap.add_argument("--only", type=int, default=None, help=argparse.SUPPRESS)  # a child process: one PLAN row
    args = ap.parse_args()
    if args.only is not None:
        print(json.dumps(one(args.model, *PLAN[args.only], args.pairs, args.device, args.dtype)))
        return
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model} UNet, {name}, autocast {args.dtype}, {args.pairs} pair(s) per micro-batch "
          f"({2 * args.pairs} images at {UNETS[args.model]['sample_size'] * 8} px), torch {torch.__version__}\n")
    print("| weights | optimizer | gradient checkpointing | trainable M | peak GiB | step s |")
    print("|---|---|---|---:|---:|---:|")
    for i, (weights, optimizer, ckpt) in enumerate(PLAN):
        cmd = [sys.executable, __file__, "--model", args.model, "--device", args.device, "--dtype", args.dtype,
               "--pairs", str(args.pairs), "--only", str(i)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess(cmd, 1, "", f"over {args.timeout} s")
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1][:120]
            print(f"| {weights} | {optimizer} | {'on' if ckpt else 'off'} | | failed: {why} | |", flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {weights} | {optimizer} | {'on' if ckpt else 'off'} | {r['trainable_m']:.1f} | {r['peak_gib']:.1f} "
              f"| {r['step_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
