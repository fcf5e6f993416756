"""Training on preference pairs, shared by the Diffusion-DPO family (dpo, sdpo, npo, ...).

One copy of: the deterministic mini-batch stream over ``PairData``, prompt dropout, the training
latents of each use (a random horizontal flip and a VAE posterior sample, ``draw_latents``), the
per-pair noise and timestep (shared by winner and loser, methods.md §0.2), the policy/reference errors, and
``train_pairs``, the pair loop on the training kit (methods/core/training.py: optimizer, warmup,
LoRA, the optimizer step, saving the artifact). A method supplies only its loss:
``loss_fn(errors: PairErrors) -> (loss, logs)``, and, where it regresses something other than both
images of a pair against a reference (e.g. SFT on one image of each pair), its own ``errors_fn``.
``PairTrainConfig`` holds the loop's fields.

Several processes (``ctx.dist``, methods/core/parallel.py): each micro-batch's rows are split over
them; the loss sees every process's errors gathered, so it is the single-process loss.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import torch

from methods.core.api import TrainContext
from methods.core.diffusion import encode_prompts, per_sample_mse, sample_noise_and_timesteps, train_scheduler, unet_eps
from methods.core.parallel import DataParallel
from methods.core.training import (OptimizerConfig, Part, Trainer, WarmupConfig, adapters_disabled, attach_lora,
                                   check_all, index_batches, master_copy, micro_batches, save_unet)
from methods.core.types import Cond, PairData


class PairErrors(NamedTuple):
    """What a pair loss sees. Errors are (B,) per-sample MSE over C, H, W; winner rows first."""

    model_err_w: torch.Tensor  # (B,) policy, with grad
    model_err_l: torch.Tensor  # (B,)
    ref_err_w: torch.Tensor  # (B,) reference, no grad
    ref_err_l: torch.Tensor  # (B,)
    model_pred: torch.Tensor  # (2B, C, h, w) policy prediction, winners then losers
    target: torch.Tensor  # (2B, C, h, w) regression target (the shared noise ε for ε-prediction)


FLIPS = ("image", "pair", "none")  # random_flip: a coin per image, one per pair (both images), no flip
TINY_DATA = {"random_flip": "image", "latent_sample": False}  # the pair methods' tiny defaults (PairTrainConfig)

LossFn = Callable[[Any], tuple[torch.Tensor, dict[str, float]]]  # errors_fn's result -> (loss, logs)
# (policy, reference or None, micro-batch, noise scheduler, generator) -> what loss_fn sees
ErrorsFn = Callable[[Any, Any, PairData, Any, torch.Generator], Any]


@dataclass(frozen=True)
class PairTrainConfig(WarmupConfig, OptimizerConfig):
    """The fields ``train_pairs`` reads: the loop's (lr, steps, warmup, optimizer, …) and the pairs'.
    Defaults, here and in the kit's configs, are the official Diffusion-DPO SD1.5 launcher's."""

    batch_pairs: int = 2048  # pairs per optimizer step (1/GPU × accum 128 × 16 GPUs)
    micro_batch_pairs: int = 0  # pairs per forward/backward (gradient accumulation); 0 = whole batch
    keep_ties: bool = False  # official code drops label_0 == 0.5
    prompt_dropout: float = 0.2  # proportion_empty_prompts
    lora_rank: int = 0  # 0: full fine-tune (official); > 0: LoRA r = alpha on to_q/k/v/out.0 (diffusers)
    # Data augmentation of each use of a pair, as the official train.py (``draw_latents``). The tiny world
    # keeps the flip: a mirror image has the same caption (every shape is symmetric about the vertical
    # axis, the triangle points up, tilt and offset ranges are symmetric) and the same oracle utility
    # (centring, sharpness, saturation, cleanliness are mirror-invariant). Checked on 1440 renders and the
    # 2000 shipped tiny-pickapic pairs: utility(x) and utility(flip(x)) differ by < 1e-6, every pair keeps
    # its order under each flip combination, the fidelity classifier agrees on 99.93% of flipped renders.
    # The tiny defaults (TINY_DATA) turn latent_sample off: the tiny base UNet was pretrained on posterior
    # means (bench/tiny/pretrain.py encode_latents), unlike SD's, and the tiny VAE's posterior std is not
    # small (0.14 on average, up to 0.53, on latents of unit std; 256 renders), so samples would be
    # latents its base never saw.
    random_flip: str = "image"  # image | pair | none: horizontal flip, a fair coin per image (train.py:760)
    latent_sample: bool = True  # z = mean + std·ε at each use (train.py:1028 latent_dist.sample()); False: mean

    def validate(self) -> None:
        super().validate()
        check_all([
            (self.random_flip in FLIPS, f"unknown random_flip {self.random_flip!r}; available: {', '.join(FLIPS)}"),
            (self.batch_pairs >= 1, f"batch_pairs must be >= 1, got {self.batch_pairs}"),
            (0 <= self.micro_batch_pairs <= self.batch_pairs,
             f"micro_batch_pairs must be in [0, batch_pairs={self.batch_pairs}], got {self.micro_batch_pairs}"),
            (0 <= self.prompt_dropout < 1, f"prompt_dropout must be in [0, 1), got {self.prompt_dropout}"),
            (self.lora_rank >= 0, f"lora_rank must be >= 0, got {self.lora_rank}"),
        ])


# ---------------------------------------------------------------------------------------------
# Data


def subset(data: PairData, idx: torch.Tensor) -> PairData:
    return data.index(idx)


def drop_ties(data: PairData) -> PairData:
    keep = (data.label != 0.5).nonzero().flatten()
    return data if len(keep) == len(data) else subset(data, keep)


def pair_batches(data: PairData, batch_pairs: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless (batch_pairs,) indices into the pairs (``index_batches``: shuffled epochs cut into batches)."""
    if len(data) == 0:
        raise ValueError("no preference pairs to train on")
    return index_batches(len(data), batch_pairs, generator)


def draw_latents(data: PairData, idx: torch.Tensor, generator: torch.Generator, flip: str,
                 posterior: bool) -> PairData:
    """The training latents of pairs ``idx`` for one use: a PairData of B = len(idx) point latents.

    As the official Diffusion-DPO train.py (SalesforceAIResearch/DiffusionDPO @5233e75), where every
    use of a pair re-runs the data transforms and the VAE:
    - flip: ``RandomHorizontalFlip()`` in ``train_transforms`` (train.py:760, on unless ``--no_hflip``,
      which no launcher passes), applied to each image of the pair on its own (``preprocess_train``,
      train.py:772-777, the same for SD1.5 and SDXL): ``flip="image"``, one fair coin per image.
      Diffusion-NPO's SDXL script flips the channel-stacked pair with one coin (DPO-DPO-NPO/
      train_sdxl.py:805 @a14f1db): ``flip="pair"``. ``"none"`` draws nothing.
    - posterior: ``vae.encode(x).latent_dist.sample() * scaling_factor`` (train.py:1028-1029), i.e.
      z = mean + std·ε with the cached scaled mean and std of the (flipped) image; False: the mean.

    Draws from ``generator``, in this order: the coins (``torch.rand`` (B, 2) winner, loser for "image";
    (B,) for "pair"), flipped where < 0.5; then ε (``torch.randn`` (B, 2, C, h, w), winner, loser).
    Both off: the cached means exactly, and nothing drawn. Pairs without a posterior (synthetic, see
    PairData) have std 0: z is the mean, but ε is still drawn, so the generator advances the same way.
    """
    b = len(idx)
    if flip == "image":
        coins = torch.rand(b, 2, generator=generator) < 0.5  # (B, 2) winner, loser
    elif flip == "pair":
        coins = (torch.rand(b, generator=generator) < 0.5).unsqueeze(1).expand(b, 2)  # (B, 2) one per pair
    elif flip == "none":
        coins = torch.zeros(b, 2, dtype=torch.bool)
    else:
        raise ValueError(f"unknown flip {flip!r}; available: {', '.join(FLIPS)}")
    eps = torch.randn((b, 2, *data.latents_w.shape[1:]), generator=generator) if posterior else None
    latents = []
    for k, side in enumerate(("w", "l")):
        z, std = data.image(side, False, idx)  # (B, C, h, w) each; std None: no posterior
        if coins[:, k].any():
            mask = coins[:, k].view(-1, *[1] * (z.ndim - 1))  # (B, 1, 1, 1)
            z_flip, std_flip = data.image(side, True, idx)
            z = torch.where(mask, z_flip, z)
            std = None if std is None else torch.where(mask, std_flip, std)
        if eps is not None and std is not None:
            z = z + std * eps[:, k]
        latents.append(z)
    return PairData(latents[0], latents[1], data.cond.index(idx), data.label[idx],
                    [data.captions[i] for i in idx.tolist()])


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
    return batch.to(device, torch.float32)


# ---------------------------------------------------------------------------------------------
# Errors


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
# The loop


def train_pairs(ctx: TrainContext, cfg: Any, loss_fn: LossFn, errors_fn: ErrorsFn = pair_errors) -> Any:
    """Train a copy of ``ctx.pipe.unet`` on ``ctx.pairs()`` with ``loss_fn``; save into ``ctx.out_dir``.

    ``cfg`` needs the fields of ``PairTrainConfig``. Each micro-batch, ``loss_fn`` sees
    ``errors_fn(policy, ref, batch, scheduler, generator)`` (default: ``pair_errors``; ``ref`` is None
    for LoRA, meaning the policy with adapters disabled). Returns the trained UNet.
    """
    device, pipe, dist = ctx.device, ctx.pipe, ctx.dist
    micros = micro_batches(dist, cfg.batch_pairs, cfg.micro_batch_pairs, "batch_pairs / micro_batch_pairs")
    data = ctx.pairs() if cfg.keep_ties else drop_ties(ctx.pairs())
    gen = torch.Generator().manual_seed(cfg.seed)
    policy = master_copy(pipe.unet, device)
    if cfg.lora_rank > 0:
        ref, params = None, attach_lora(policy, cfg.lora_rank, gen)
    else:  # the official full fine-tune: a frozen reference copy (here: the pipeline's own UNet)
        ref, params = pipe.unet.eval(), list(policy.requires_grad_(True).parameters())
    policy.train()
    if cfg.gradient_checkpointing:
        policy.enable_gradient_checkpointing()
    trainer = Trainer(ctx, cfg, params, cfg.optimizer, cfg.warmup_steps)
    noise_sched = train_scheduler(pipe)
    empty = encode_prompts(pipe, [""], device)  # the official dropout encodes the literal "" caption
    batches = pair_batches(data, cfg.batch_pairs, gen)

    def parts() -> Iterator[Part]:
        idx = next(batches)  # every process draws the whole batch and its dropout: same generator state
        cond = prompt_dropout(data.cond.index(idx), empty, cfg.prompt_dropout, gen)
        for lo, n, weight in micros:  # n pairs in this micro-batch, over all processes
            mine = dist.rows(n)
            rows = slice(lo + mine.start, lo + mine.stop)
            with dist.draws(gen, n):  # drawn for all n pairs, this process's rows kept
                part = draw_latents(data, idx[rows], gen, cfg.random_flip, cfg.latent_sample)
            part.cond = cond.index(rows)
            part = to_device(part, device)
            with trainer.autocast(), dist.draws(gen, n):
                errors = errors_fn(policy, ref, part, noise_sched, gen)
            errors = gather_errors(dist, errors, n)
            loss, logs = loss_fn(errors)
            yield loss, {**error_logs(errors), **logs}, weight

    trainer.run(parts, save=lambda out: save_unet(policy, pipe, out, lora=cfg.lora_rank > 0))
    policy.eval()
    if dist.is_main:  # every process holds the same weights
        save_unet(policy, pipe, Path(ctx.out_dir), lora=cfg.lora_rank > 0)
    return policy


def error_logs(errors: Any) -> dict[str, float]:
    """The policy's mean winner and loser errors, and each relative to the reference's on the same noise (what
    SDPO keeps from rising for the winner), when ``errors`` are a pair's."""
    if not isinstance(errors, PairErrors):
        return {}
    err_w, err_l = errors.model_err_w.detach(), errors.model_err_l.detach()
    return {"err_w": float(err_w.mean()), "err_l": float(err_l.mean()),
            "rel_err_w": float((err_w - errors.ref_err_w.detach()).mean()),
            "rel_err_l": float((err_l - errors.ref_err_l.detach()).mean())}
