"""What the benchmarks share: the two model scales, A/B alternation, and tables of medians and ranges.

These machines are noisy (±25 % from run to run), so every benchmark measures the two things it
compares side by side in one process, alternating A, B, A, B, ..., and reports the median and the
range of the per-round ratios, never a single timing.

Scales (random weights: speed does not depend on what the weights learned):
- ``tiny``: the tiny world's default architecture (bench/tiny/pretrain.py), 32 px, latent 4x8x8;
- ``small-sd``: research/stack.md's small SD (UNet 64/128/256/256, 23.6M; VAE x8; CLIP text 256
  wide), 128 px, latent 4x16x16, the scale of the Diffusion-DPO performance anchor.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

SCALES = ("tiny", "small-sd")


def build_pipeline(scale: str, folder: Path) -> Path:
    """A diffusers SD1.5-layout folder of the given scale (built once, then reused)."""
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bench.tiny import prepare, pretrain
    from bench.tiny.tokenizer import build_tokenizer

    p = pretrain.PRESETS["default"]
    tmp = folder.with_name(folder.name + ".building")
    tokenizer = build_tokenizer(tmp / "tokenizer-src", pretrain.caption_words(), pretrain.MAX_TOKENS)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(0)
    if scale == "tiny":
        unet, text_encoder = pretrain.build_unet_and_text_encoder(p, len(tokenizer), special)
        vae = pretrain.build_vae(p)
    elif scale == "small-sd":
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, block_out_channels=(64, 128, 256, 256), layers_per_block=1,
            norm_num_groups=32, cross_attention_dim=256, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 64, 64),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=1, norm_num_groups=32, sample_size=128)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
            num_attention_heads=4, max_position_embeddings=pretrain.MAX_TOKENS, **special))
    else:
        raise ValueError(f"unknown scale {scale!r}; available: {', '.join(SCALES)}")
    prepare.save_pipeline(tmp, unet, vae, text_encoder, tokenizer)
    import shutil

    shutil.rmtree(tmp / "tokenizer-src")
    tmp.rename(folder)
    return folder


def load(scale: str, cache: Path) -> Any:
    from diffusers.utils import logging

    from bench.models import load_pipeline

    logging.disable_progress_bar()

    return load_pipeline(build_pipeline(scale, cache / f"pipeline-{scale}"))


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
now = time.perf_counter  # the benchmarks' clock: use_clock("cpu") when other work shares the machine


def use_clock(name: str) -> None:
    """``cpu`` (this process's CPU seconds, best with --threads 1) is what to use on a machine busy
    with other work: another process's load stretches wall time, not this process's CPU time."""
    global now
    now = CLOCKS[name]


def timed(fn: Callable[[], Any]) -> float:
    start = now()
    fn()
    return now() - start


def alternate(fns: dict[str, Callable[[], float]], rounds: int) -> list[dict[str, float]]:
    """Call each function once per round, in the given order (A, B, A, B, ...); each returns its time."""
    out = []
    for _ in range(rounds):
        out.append({name: fn() for name, fn in fns.items()})
    return out


def spread(values: Iterable[float], fmt: str = "{:.3f}") -> str:
    """'median (min–max)'."""
    v = list(values)
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}–{fmt.format(max(v))})"


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def machine() -> str:
    import platform

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def timing_parser(doc: str) -> argparse.ArgumentParser:
    """The options every floor benchmark takes: --scales, --rounds, --threads, --clock, --cache."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--scales", default=",".join(SCALES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="wall, or cpu (this process's CPU time: use with --threads 1 on a busy machine)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dpb-benchmarks")
    return ap


def start_timing(args: Any, what: str) -> None:
    """Apply --threads and --clock, and print the machine line that heads every table."""
    torch.set_num_threads(args.threads)
    use_clock(args.clock)
    print(f"machine: {machine()}; {args.clock} clock; {what}")


# -- the UNet floor: record every UNet call of a loop, then replay exactly those calls alone -------


@dataclass(frozen=True)
class Call:
    module: int  # which UNet instance (id)
    sample: tuple[int, ...]
    timestep: tuple[int, ...]
    context: tuple[int, ...]
    added: tuple[tuple[str, tuple[int, ...]], ...]
    grad: bool  # autograd on: the floor runs the backward of this call's output too
    lora_rank: int  # 0: no adapters
    adapters_on: bool
    trainable: bool  # the module has parameters that require grad (the policy)
    checkpointing: bool


@dataclass
class Recorder:
    """Within ``recording()``: every UNet2DConditionModel forward, grouped into steps by ``mark()``."""

    steps: list[list[Call]] = field(default_factory=lambda: [[]])

    def mark(self) -> None:
        self.steps.append([])

    @contextlib.contextmanager
    def recording(self) -> Iterator["Recorder"]:
        from diffusers import UNet2DConditionModel

        real = UNet2DConditionModel.forward
        recorder = self

        def spy(unet: Any, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *args: Any,
                **kwargs: Any) -> Any:
            recorder.steps[-1].append(_describe(unet, sample, timestep, encoder_hidden_states, kwargs))
            return real(unet, sample, timestep, encoder_hidden_states, *args, **kwargs)

        UNet2DConditionModel.forward = spy
        try:
            yield self
        finally:
            UNet2DConditionModel.forward = real


def _lora_layers(unet: Any) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


def _describe(unet: Any, sample: torch.Tensor, timestep: Any, context: torch.Tensor, kwargs: dict) -> Call:
    lora = getattr(unet, "peft_config", None)
    rank = int(lora["default"].r) if lora else 0
    layers = _lora_layers(unet) if rank else []
    added = kwargs.get("added_cond_kwargs") or {}
    t = torch.as_tensor(timestep)
    return Call(id(unet), tuple(sample.shape), tuple(t.shape), tuple(context.shape),
                tuple((k, tuple(v.shape)) for k, v in sorted(added.items())), torch.is_grad_enabled(), rank,
                bool(layers) and not layers[0].disable_adapters, any(p.requires_grad for p in unet.parameters()),
                bool(getattr(unet, "is_gradient_checkpointing", False)))


class Replay:
    """The recorded calls of a step with nothing else: fresh UNets like the recorded ones (LoRA or
    not, trainable or frozen), fixed random inputs of the recorded shapes, and the backward of every
    call made with autograd on. No data, loss, noise, scheduler, optimizer, VAE or reward."""

    def __init__(self, base: Any, calls: list[Call]):
        from methods.core.training import LORA_TARGETS

        self.modules: dict[int, Any] = {}
        self.adapters_on: dict[int, bool] = {}
        self.inputs: dict[tuple, torch.Tensor] = {}
        g = torch.Generator().manual_seed(0)
        for c in calls:
            if c.module in self.modules:
                continue
            m = copy.deepcopy(base).float()
            m.requires_grad_(c.trainable and not c.lora_rank)
            if c.lora_rank:
                from peft import LoraConfig

                m.add_adapter(LoraConfig(r=c.lora_rank, lora_alpha=c.lora_rank, init_lora_weights="gaussian",
                                         target_modules=LORA_TARGETS))
            if c.checkpointing:
                m.enable_gradient_checkpointing()
            m.train(c.trainable)
            self.modules[c.module] = m
        for c in calls:
            for shape in (c.sample, c.context, *(s for _, s in c.added)):
                self.inputs.setdefault(shape, torch.randn(shape, generator=g))
            self.inputs.setdefault(("t", c.timestep), torch.randint(0, 1000, c.timestep, generator=g))

    def step(self, calls: list[Call]) -> None:
        for c in calls:
            m = self.modules[c.module]
            if c.lora_rank and self.adapters_on.get(c.module, True) != c.adapters_on:  # toggle as the loop does
                (m.enable_adapters if c.adapters_on else m.disable_adapters)()
                self.adapters_on[c.module] = c.adapters_on
            added = {k: self.inputs[s] for k, s in c.added}
            with torch.set_grad_enabled(c.grad):
                out = m(self.inputs[c.sample], self.inputs[("t", c.timestep)], self.inputs[c.context],
                        **({"added_cond_kwargs": added} if added else {})).sample
                if c.grad and c.trainable:
                    out.float().pow(2).mean().backward()
        for m in self.modules.values():
            for p in m.parameters():
                p.grad = None
