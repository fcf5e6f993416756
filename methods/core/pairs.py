"""Training on preference pairs, shared by the Diffusion-DPO family (dpo, sdpo, npo, ...).

One copy of: the deterministic mini-batch stream over ``PairData``, prompt dropout, the per-pair
noise and timestep (shared by winner and loser, methods.md §0.2), the policy/reference errors,
optimizer and warmup, LoRA attach/disable, the training loop, and saving/loading the artifact.
A method supplies only its loss: ``loss_fn(errors: PairErrors) -> (loss, logs)``, and, where it
regresses something other than both images of a pair against a reference (e.g. SFT on one image of
each pair), its own ``errors_fn``. ``PairTrainConfig`` holds the loop's fields.

Several processes (``ctx.dist``, methods/core/parallel.py): each micro-batch's rows are split over
them; the loss sees every process's errors gathered, so it is the single-process loss.

Artifact layout in ``out_dir``: full fine-tune -> ``unet/`` (diffusers ``save_pretrained``,
safetensors); LoRA -> ``lora/pytorch_lora_weights.safetensors`` (diffusers LoRA format, loadable by
``pipe.load_lora_weights``).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch

from methods.core.api import Cond, MethodConfig, PairData, TrainContext
from methods.core.diffusion import encode_prompts, per_sample_mse, sample_noise_and_timesteps, train_scheduler, unet_eps
from methods.core.parallel import DataParallel

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # diffusers' DPO LoRA scripts


class PairErrors(NamedTuple):
    """What a pair loss sees. Errors are (B,) per-sample MSE over C, H, W; winner rows first."""

    model_err_w: torch.Tensor  # (B,) policy, with grad
    model_err_l: torch.Tensor  # (B,)
    ref_err_w: torch.Tensor  # (B,) reference, no grad
    ref_err_l: torch.Tensor  # (B,)
    model_pred: torch.Tensor  # (2B, C, h, w) policy prediction, winners then losers
    target: torch.Tensor  # (2B, C, h, w) regression target (the shared noise ε for ε-prediction)


LossFn = Callable[[Any], tuple[torch.Tensor, dict[str, float]]]  # errors_fn's result -> (loss, logs)
# (policy, reference or None, micro-batch, noise scheduler, generator) -> what loss_fn sees
ErrorsFn = Callable[[Any, Any, PairData, Any, torch.Generator], Any]


@dataclass(frozen=True)
class PairTrainConfig(MethodConfig):
    """The fields ``train_pairs`` reads; defaults are the official Diffusion-DPO SD1.5 launcher's."""

    lr: float = 2.048e-5  # peak LR, official launchers: 1e-8 × 2048 (scale_lr)
    steps: int = 2000  # optimizer steps (official launchers)
    batch_pairs: int = 2048  # pairs per optimizer step (1/GPU × accum 128 × 16 GPUs)
    micro_batch_pairs: int = 0  # pairs per forward/backward (gradient accumulation); 0 = whole batch
    warmup_steps: int = 500  # constant_with_warmup (sd15 launcher)
    optimizer: str = "adamw"  # adamw | adafactor (official SDXL forces adafactor)
    grad_clip: float = 1.0  # max_grad_norm
    weight_decay: float = 1e-2  # adam_weight_decay
    keep_ties: bool = False  # official code drops label_0 == 0.5
    prompt_dropout: float = 0.2  # proportion_empty_prompts
    lora_rank: int = 0  # 0: full fine-tune (official); > 0: LoRA r = alpha on to_q/k/v/out.0 (diffusers)
    gradient_checkpointing: bool = False  # memory only; forced on in the official SDXL launcher
    seed: int = 0  # data order, noise, timesteps, prompt dropout, LoRA init

    def validate(self) -> None:
        super().validate()
        checks = [
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_pairs >= 1, f"batch_pairs must be >= 1, got {self.batch_pairs}"),
            (0 <= self.micro_batch_pairs <= self.batch_pairs,
             f"micro_batch_pairs must be in [0, batch_pairs={self.batch_pairs}], got {self.micro_batch_pairs}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; available: {', '.join(OPTIMIZERS)}"),
            (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.prompt_dropout < 1, f"prompt_dropout must be in [0, 1), got {self.prompt_dropout}"),
            (self.lora_rank >= 0, f"lora_rank must be >= 0, got {self.lora_rank}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

# ---------------------------------------------------------------------------------------------
# Data


def subset(data: PairData, idx: torch.Tensor) -> PairData:
    return PairData(data.latents_w[idx], data.latents_l[idx], data.cond.index(idx), data.label[idx],
                    [data.captions[i] for i in idx.tolist()])


def drop_ties(data: PairData) -> PairData:
    keep = (data.label != 0.5).nonzero().flatten()
    return data if len(keep) == len(data) else subset(data, keep)


def index_batches(n: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless (batch,) index tensors into n items: a stream of shuffled epochs cut into equal pieces."""
    stream = torch.empty(0, dtype=torch.long)
    while True:
        while len(stream) < batch:
            stream = torch.cat([stream, torch.randperm(n, generator=generator)])
        idx, stream = stream[:batch], stream[batch:]
        yield idx


def iterate_pairs(data: PairData, batch_pairs: int, generator: torch.Generator) -> Iterator[PairData]:
    """Endless mini-batches of ``batch_pairs`` pairs (``index_batches`` over the pairs)."""
    if len(data) == 0:
        raise ValueError("no preference pairs to train on")
    for idx in index_batches(len(data), batch_pairs, generator):
        yield subset(data, idx)


def prompt_dropout(cond: Cond, empty: Cond, p: float, generator: torch.Generator) -> Cond:
    """Replace each row by the empty-caption cond with probability p (one draw per pair: both images)."""
    drop = torch.rand(len(cond), generator=generator) < p  # (B,)
    if not drop.any():
        return cond

    def mix(v: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        mask = drop.to(v.device).view(-1, *[1] * (v.ndim - 1))
        return torch.where(mask, e.to(v.device, v.dtype).expand_as(v), v)

    return Cond(mix(cond.embeds, empty.embeds), {k: mix(v, empty.added[k]) for k, v in cond.added.items()})


def to_device(batch: PairData, device: torch.device) -> PairData:
    return PairData(batch.latents_w.to(device, torch.float32), batch.latents_l.to(device, torch.float32),
                    batch.cond.to(device), batch.label.to(device), batch.captions)


# ---------------------------------------------------------------------------------------------
# Errors


@contextlib.contextmanager
def adapters_disabled(unet: Any) -> Iterator[Any]:
    """The reference of a LoRA policy: the same UNet with its adapters switched off."""
    unet.disable_adapters()
    try:
        yield unet
    finally:
        unet.enable_adapters()


def noisy_and_target(scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward process x_t and the regression target for the scheduler's prediction type."""
    x_t = scheduler.add_noise(latents, noise, t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return x_t, noise
    if kind == "v_prediction":
        return x_t, scheduler.get_velocity(latents, noise, t)
    raise ValueError(f"prediction_type {kind!r} not supported; available: epsilon, v_prediction")


def gather_errors(dist: DataParallel, errors: Any, n: int) -> Any:
    """The errors of all n rows of a micro-batch from each process's share (identity on one process)."""
    if dist.world == 1:
        return errors
    if isinstance(errors, PairErrors):
        def halves(x: torch.Tensor) -> torch.Tensor:  # (2b, ...) winners then losers, per process
            return torch.cat([dist.gather(h, n) for h in x.chunk(2)])

        return PairErrors(*(dist.gather(e, n) for e in errors[:4]), halves(errors.model_pred), halves(errors.target))
    if isinstance(errors, torch.Tensor):
        return dist.gather(errors, n)
    raise TypeError(f"cannot gather errors of type {type(errors).__name__} over processes; "
                    f"an errors_fn returns PairErrors or a (B,) tensor")


def pair_errors(unet: Any, ref_unet: Any | None, batch: PairData, scheduler: Any,
                generator: torch.Generator) -> PairErrors:
    """Policy and reference errors on one batch; ``ref_unet=None`` means ``unet`` with adapters disabled.

    One noise and one timestep per pair, shared by winner and loser (official code: chunk + repeat).
    """
    noise, t = sample_noise_and_timesteps(batch.latents_w, scheduler.config.num_train_timesteps, generator)
    latents = torch.cat([batch.latents_w, batch.latents_l])  # (2B, C, h, w), winners first
    noise, t = torch.cat([noise, noise]), torch.cat([t, t])
    x_t, target = noisy_and_target(scheduler, latents, noise, t)
    cond = Cond.cat([batch.cond, batch.cond])
    # The reference runs first, so no autograd graph is alive while it does.
    with torch.no_grad(), (adapters_disabled(unet) if ref_unet is None else contextlib.nullcontext(ref_unet)) as ref:
        ref_err_w, ref_err_l = per_sample_mse(unet_eps(ref, x_t, t, cond), target).chunk(2)
    pred = unet_eps(unet, x_t, t, cond)
    model_err_w, model_err_l = per_sample_mse(pred, target).chunk(2)
    return PairErrors(model_err_w, model_err_l, ref_err_w, ref_err_l, pred, target)


# ---------------------------------------------------------------------------------------------
# Optimisation


OPTIMIZERS = ("adamw", "adamw8bit", "adafactor")
PACKAGES = {"adamw8bit": "bitsandbytes"}  # optimizers whose package is not a dependency of the project


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


# ---------------------------------------------------------------------------------------------
# The loop


def train_pairs(ctx: TrainContext, cfg: Any, loss_fn: LossFn, errors_fn: ErrorsFn = pair_errors) -> Any:
    """Train a copy of ``ctx.pipe.unet`` on ``ctx.pairs()`` with ``loss_fn``; save into ``ctx.out_dir``.

    ``cfg`` needs the fields of ``PairTrainConfig``. Each micro-batch, ``loss_fn`` sees
    ``errors_fn(policy, ref, batch, scheduler, generator)`` (default: ``pair_errors``; ``ref`` is None
    for LoRA, meaning the policy with adapters disabled). Returns the trained UNet.
    """
    device, pipe, dist = ctx.device, ctx.pipe, ctx.dist
    micro = cfg.micro_batch_pairs or cfg.batch_pairs
    dist.check_split([micro, cfg.batch_pairs % micro], "batch_pairs / micro_batch_pairs")
    data = ctx.pairs() if cfg.keep_ties else drop_ties(ctx.pairs())
    gen = torch.Generator().manual_seed(cfg.seed)
    policy = copy.deepcopy(pipe.unet).to(device)
    if policy.dtype != torch.float32:
        policy.to(torch.float32)  # fp32 master weights; autocast computes in ctx.dtype
    if cfg.lora_rank > 0:
        ref, params = None, attach_lora(policy, cfg.lora_rank, gen)
    else:  # the official full fine-tune: a frozen reference copy (here: the pipeline's own UNet)
        ref, params = pipe.unet.eval(), list(policy.requires_grad_(True).parameters())
    policy.train()
    if cfg.gradient_checkpointing:
        policy.enable_gradient_checkpointing()
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.weight_decay)
    lr_sched = warmup_schedule(opt, cfg.warmup_steps)
    amp = ctx.dtype != torch.float32
    scaler = torch.amp.GradScaler(device.type, enabled=ctx.dtype == torch.float16)
    noise_sched = train_scheduler(pipe)
    empty = encode_prompts(pipe, [""], device)  # the official dropout encodes the literal "" caption
    batches = iterate_pairs(data, cfg.batch_pairs, gen)
    for step in range(1, cfg.steps + 1):
        batch = next(batches)  # every process draws the whole batch and its dropout: same generator state
        batch.cond = prompt_dropout(batch.cond, empty, cfg.prompt_dropout, gen)
        opt.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        for lo in range(0, cfg.batch_pairs, micro):
            n = min(micro, cfg.batch_pairs - lo)  # pairs in this micro-batch, over all processes
            mine = dist.rows(n)
            part = to_device(subset(batch, torch.arange(lo + mine.start, lo + mine.stop)), device)
            weight = n / cfg.batch_pairs  # micro-batches average to the full-batch mean
            with torch.autocast(device.type, dtype=ctx.dtype, enabled=amp), dist.draws(gen, n):
                errors = errors_fn(policy, ref, part, noise_sched, gen)
            errors = gather_errors(dist, errors, n)
            loss, part_logs = loss_fn(errors)
            scaler.scale(loss * weight).backward()
            if isinstance(errors, PairErrors):
                part_logs = {"err_w": float(errors.model_err_w.detach().mean()),
                             "err_l": float(errors.model_err_l.detach().mean()), **part_logs}
            part_logs = {"loss": float(loss.detach()), **part_logs}
            for k, v in part_logs.items():
                logs[k] = logs.get(k, 0.0) + weight * v
        dist.sum_grads(params)
        scaler.unscale_(opt)
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        logs["lr"] = opt.param_groups[0]["lr"]
        scaler.step(opt)
        scaler.update()
        lr_sched.step()
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"loss is {logs['loss']} at step {step}")
        ctx.log(step, logs)
        ctx.progress(step, cfg.steps)
    policy.eval()
    if dist.is_main:  # every process holds the same weights
        save_unet(policy, pipe, Path(ctx.out_dir), lora=cfg.lora_rank > 0)
    return policy


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
