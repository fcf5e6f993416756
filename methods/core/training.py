"""The training kit every trained method builds on: the loop's config, one optimizer step, save and load.

A method's loop supplies only what differs: each optimizer step, the losses of its micro-batches
(``Part``: loss, logs, weight n/batch), made under ``Trainer.autocast()``. ``Trainer.run`` does the
rest, the same for every method: zero the gradients; per micro-batch, backward of the weighted loss;
sum the gradients over processes (``ctx.dist``); unscale (fp16), clip, log grad_norm and lr; step,
scaler update, LR schedule; refuse a non-finite loss; ``ctx.log`` and ``ctx.progress``.

The configs: ``LoopConfig`` holds the fields every loop reads (lr, steps, weight_decay, grad_clip,
seed); ``WarmupConfig`` and ``OptimizerConfig`` add warmup_steps and the optimizer choice
(optimizer, gradient_checkpointing) for the loops that have them. They are separate so that a
method's config keeps exactly its fields: the harness hashes every field into the run's identity.

Artifact layout in ``out_dir``: full fine-tune -> ``unet/`` (diffusers ``save_pretrained``,
safetensors); LoRA -> ``lora/pytorch_lora_weights.safetensors`` (diffusers LoRA format, loadable by
``pipe.load_lora_weights``). ``TrainedUNetMethod`` samples with such an artifact by plain CFG.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import torch

from methods.core.api import Method, MethodConfig, TrainContext
from methods.core.diffusion import cfg_denoiser
from methods.core.parallel import DataParallel
from methods.core.types import Denoiser

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # diffusers' DPO LoRA scripts
OPTIMIZERS = ("adamw", "adamw8bit", "adafactor")
OPTIMIZER_PACKAGES = {"adamw8bit": "bitsandbytes"}  # optimizers whose package is not a dependency of the project

# ---------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class LoopConfig(MethodConfig):
    """The fields every training loop reads. Defaults: the official Diffusion-DPO SD1.5 launcher's (the
    pair methods use them as they are); another method's config overrides them, with their source."""

    lr: float = 2.048e-5  # peak LR, official launchers: 1e-8 × 2048 (scale_lr)
    steps: int = 2000  # optimizer steps (official launchers)
    weight_decay: float = 1e-2  # adam_weight_decay
    grad_clip: float = 1.0  # max_grad_norm
    seed: int = 0  # data order, noise, timesteps, prompt dropout, LoRA init

    def validate(self) -> None:
        super().validate()
        check_all([
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
        ])


@dataclass(frozen=True)
class WarmupConfig(LoopConfig):
    """A loop with a linear LR warmup (the pair methods, TailorPO)."""

    warmup_steps: int = 500  # constant_with_warmup (sd15 launcher); 0 = constant LR

    def validate(self) -> None:
        super().validate()
        check_all([(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")])


@dataclass(frozen=True)
class OptimizerConfig(LoopConfig):
    """A loop whose optimizer is a setting (the pair methods, Self-NPO); the others use AdamW."""

    optimizer: str = "adamw"  # adamw | adamw8bit | adafactor (official SDXL forces adafactor)
    gradient_checkpointing: bool = False  # memory only; forced on in the official SDXL launcher

    def validate(self) -> None:
        super().validate()
        check_all([(self.optimizer in OPTIMIZERS,
                    f"unknown optimizer {self.optimizer!r}; available: {', '.join(OPTIMIZERS)}")])

    def packages(self) -> dict[str, str]:
        """The optimizer's package when it is not a dependency of the project (8-bit AdamW: bitsandbytes)."""
        package = OPTIMIZER_PACKAGES.get(self.optimizer)
        return {**super().packages(), **({package: f"optimizer {self.optimizer!r}"} if package else {})}


def check_all(checks: list[tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first failed check (each message names its field)."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


# ---------------------------------------------------------------------------------------------
# Parts of a run


def make_optimizer(params: list[torch.nn.Parameter], name: str, lr: float, weight_decay: float):
    """AdamW (β 0.9/0.999, eps 1e-8); the same in 8 bits (bitsandbytes AdamW8bit, as the official NPO
    and Self-NPO scripts use it); or Adafactor as the official SDXL launcher forces it."""
    if name == "adamw":
        # The fused kernel: on a CPU the default per-tensor loop takes ~9x as long for a 35M-parameter
        # UNet (benchmarks/train_floor.py), as much as the UNet's own forward and backward.
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay,
                                 fused=fused or None)
    if name == "adamw8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False,
                         clip_threshold=1.0, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(OPTIMIZERS)}")


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """diffusers' constant_with_warmup: lr·step/warmup for step < warmup (so step 0 has lr 0), then lr."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: s / max(1, warmup_steps) if s < warmup_steps else 1.0)


def master_copy(unet: Any, device: torch.device) -> Any:
    """A trainable copy of ``unet`` on ``device`` in float32 (master weights; autocast computes in ctx.dtype)."""
    copied = copy.deepcopy(unet).to(device)
    if copied.dtype != torch.float32:
        copied.to(torch.float32)
    return copied


def attach_lora(unet: Any, rank: int, generator: torch.Generator) -> list[torch.nn.Parameter]:
    """LoRA on the attention projections, alpha = rank, peft's gaussian init (A ~ N(0, 1/r²), B = 0, so
    the policy starts at the reference), drawn from ``generator`` so it is the same on every device."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    params = [(n, p) for n, p in unet.named_parameters() if p.requires_grad]
    with torch.no_grad():
        for name, p in params:
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=generator) / rank)
    return [p for _, p in params]


@contextlib.contextmanager
def adapters_disabled(unet: Any) -> Iterator[Any]:
    """The reference of a LoRA policy: the same UNet with its adapters switched off."""
    unet.disable_adapters()
    try:
        yield unet
    finally:
        unet.enable_adapters()


def index_batches(n: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless (batch,) index tensors into n items: a stream of shuffled epochs cut into equal pieces."""
    stream = torch.empty(0, dtype=torch.long)
    while True:
        while len(stream) < batch:
            stream = torch.cat([stream, torch.randperm(n, generator=generator)])
        idx, stream = stream[:batch], stream[batch:]
        yield idx


def micro_batches(dist: DataParallel, batch: int, micro: int, what: str) -> list[tuple[int, int, float]]:
    """(first row, rows n, weight n/batch) of each micro-batch of a batch; ``micro`` 0 = the whole batch.

    The weights make the micro-batch means add up to the full-batch mean. Refuses a layout in which
    some process would get no rows (``what`` names the fields in the message).
    """
    micro = micro or batch
    dist.check_split([micro, batch % micro], what)
    return [(lo, min(micro, batch - lo), min(micro, batch - lo) / batch) for lo in range(0, batch, micro)]


# ---------------------------------------------------------------------------------------------
# The loop

Part = tuple[torch.Tensor, dict[str, float], float]  # one micro-batch: loss (), its logs, weight n/batch


class Trainer:
    """The optimizer of one run and its step, the same for every method (see the module docstring)."""

    def __init__(self, ctx: TrainContext, cfg: LoopConfig, params: list[torch.nn.Parameter],
                 optimizer: str = "adamw", warmup_steps: int = 0):
        self.ctx, self.cfg, self.params = ctx, cfg, params
        self.opt = make_optimizer(params, optimizer, cfg.lr, cfg.weight_decay)
        self.schedule = warmup_schedule(self.opt, warmup_steps)  # warmup 0: constant LR
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision: the forward computes in ctx.dtype; the master weights stay float32."""
        ctx = self.ctx
        return torch.autocast(ctx.device.type, dtype=ctx.dtype, enabled=ctx.dtype != torch.float32)

    def step(self, parts: Iterable[Part]) -> dict[str, float]:
        """One optimizer step over the micro-batches of one batch; returns its logs (weighted means,
        then grad_norm and the lr the step used). Each part's backward runs before the next is made."""
        self.opt.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        for loss, part_logs, weight in parts:
            self.scaler.scale(loss * weight).backward()
            for key, v in {"loss": float(loss.detach()), **part_logs}.items():
                logs[key] = logs.get(key, 0.0) + weight * v
        self.ctx.dist.sum_grads(self.params)
        self.scaler.unscale_(self.opt)
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip))
        logs["lr"] = self.opt.param_groups[0]["lr"]
        self.scaler.step(self.opt)
        self.scaler.update()
        self.schedule.step()
        return logs

    def run(self, parts: Callable[[], Iterable[Part]], after_step: Callable[[], None] = lambda: None,
            save: Callable[[Path], None] | None = None) -> None:
        """``cfg.steps`` optimizer steps, each over ``parts()``: the micro-batch losses of its next batch.
        ``after_step`` runs after each update (e.g. an EMA teacher's); ``save(folder)`` writes the model as
        the method's artifact does, into each folder ``ctx.snapshot(step)`` names (intermediate checkpoints;
        the main process writes: every process holds the same weights)."""
        for step in range(1, self.cfg.steps + 1):
            logs = self.step(parts())
            after_step()
            if not math.isfinite(logs["loss"]):
                raise FloatingPointError(f"loss is {logs['loss']} at step {step}")
            self.ctx.log(step, logs)
            folder = self.ctx.snapshot(step) if save is not None else None
            if folder is not None and self.ctx.dist.is_main:
                save(folder)
            self.ctx.progress(step, self.cfg.steps)


# ---------------------------------------------------------------------------------------------
# Artifact


def save_unet(unet: Any, pipe: Any, out_dir: Path, lora: bool) -> None:
    if not lora:
        unet.save_pretrained(out_dir / "unet")
        return
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    type(pipe).save_lora_weights(out_dir / "lora", unet_lora_layers=layers,
                                 unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())


def load_trained_unet(pipe: Any, artifact_dir: Path) -> Any:
    """The trained UNet from either layout, as a new module on the pipeline's device and dtype."""
    artifact_dir = Path(artifact_dir)
    device, dtype = pipe.unet.device, pipe.unet.dtype
    if (artifact_dir / "unet").is_dir():
        return type(pipe.unet).from_pretrained(artifact_dir / "unet", dtype=dtype).to(device).eval()
    weights = artifact_dir / "lora" / "pytorch_lora_weights.safetensors"
    if weights.is_file():
        unet = copy.deepcopy(pipe.unet)
        unet.load_lora_adapter(str(weights), prefix="unet")
        unet.fuse_lora()  # merge into the base weights: sampling then costs what the base model costs
        unet.unload_lora()
        return unet.eval()
    raise FileNotFoundError(f"no trained UNet in {artifact_dir}: expected unet/ or lora/pytorch_lora_weights.safetensors")


class TrainedUNetMethod(Method):
    """A method whose artifact is one trained UNet. Default sampling: plain CFG with that UNet.

    Its sampling rule also takes published weights in place of its own training (``with_weights``): the
    released UNet of a paper then samples exactly as this method's trained one would."""

    trains = True
    takes_weights: ClassVar[bool] = True  # `bench run --methods METHOD@WEIGHTS` samples published weights
    _weights: Callable[[Any], Any] | None = None

    def with_weights(self, load: Callable[[Any], Any]) -> "TrainedUNetMethod":
        """Sample with the UNet ``load(pipe)`` returns (published weights) instead of a trained artifact."""
        self._weights = load
        return self

    def trained_unet(self, pipe: Any, artifact: Path | None, what: str = "its trained UNet") -> Any:
        """The trained UNet in ``artifact`` (or the published one); a method that was not trained is refused
        by name."""
        if self._weights is not None:
            return self._weights(pipe)
        if artifact is None:
            raise ValueError(f"{self.id} samples with {what}: train it first (artifact is None)")
        return load_trained_unet(pipe, artifact)

    def denoiser(self, pipe: Any, artifact: Path | None, artifacts: Callable[[str], Path]) -> Denoiser:
        unet = self.trained_unet(pipe, artifact)
        return cfg_denoiser(unet, unet, self.cfg.guidance_scale)
