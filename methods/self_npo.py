"""Self-NPO: Data-Free Diffusion Model Enhancement via Truncated Diffusion Fine-Tuning.

Wang et al., arXiv 2505.11777 (AAAI 2026; v1 title "Negative Preference Optimization of Diffusion
Models by Simply Learning from Itself without Explicit Preference Annotations"); official code
G-U-N/Diffusion-NPO ``Self-NPO/train.py`` (SD1.5), ``train_xl.py`` (SDXL), ``train.sh``, ``train_xl.sh``.

Idea: a model fine-tuned on its OWN generations is a slightly weakened copy of itself, which is what
Diffusion-NPO's negative model is meant to be, without any preference labels. Full sampling is too
expensive, so the teacher runs only K steps (truncated diffusion fine-tuning) and the student learns
the teacher's clean estimate from a noisier point of the same trajectory. One step, as in the code:

  1. real latent x0 with caption c; t0 uniform on the 25-step DDIM grid {39, 79, …, 999};
     x_t0 = α_t0·x0 + σ_t0·ξ  (α = √ᾱ, σ = √(1−ᾱ));
  2. the teacher (EMA of the student) takes K DDIM (η = 0) steps down the grid under no_grad, with
     NEGATIVE guidance  x̂0 = x̂0_c + w·(x̂0_c − x̂0_u); a row that reaches t = 0 stays there;
  3. target = the teacher's guided x̂0 at the reached (x_t, t);
  4. s ~ U{t+1, …, 999};  x_s = α_s·(x_t/α_t + √(σ_s²/α_s² − σ_t²/α_t²)·ξ′)  (forward transition t→s);
  5. loss = mean(√((x̂0_θ(x_s, s, c) − target)² + c²) − c), x̂0_θ = (x_s − σ_s·ε_θ)/α_s;
  6. after every optimizer step: teacher ← d·teacher + (1 − d)·student.

Paper vs code. This file follows the CODE wherever they differ:
  teacher      paper: the frozen reference model      code: EMA of the student, d = 0.999, init = base
  start        paper: x_T (pure noise) -> x_t^ref       code: REAL latents noised to t0, then K = 5 steps
  loss         paper: L2 on x̂0                          code: pseudo-Huber, c = 0.001
  guidance     paper: not stated                        code: w = −1 (SD1.5: pure unconditional),
                                                              w = −5 (SDXL: 5·uncond − 4·cond)
Deliberate small departures from the code: (a) the code, when EVERY row of a batch reaches t = 0
before K steps, keeps the x̂0 of the previous grid point as target; here the target is always x̂0
at the reached t. (b) Guidance is applied to the raw model outputs, and x̂0 and the DDIM direction ε
are derived from the guided output by prediction type (identical to the code for ε-prediction;
the code would use v as ε for v-prediction). (c) With w = −1 the conditional teacher forward is
skipped (its weight is exactly 0). (d) Latents are cached once by ``ctx.images()`` (the code re-encodes
with a fresh posterior sample), batches are shuffled epochs (the code reads folder order), and the
optimizer is the code's 8-bit AdamW at real scale (bitsandbytes) but AdamW on the tiny world. The artifact is the STUDENT (the code's final
``save_pretrained``), full weights in ``unet/``.

Sampling as Diffusion-NPO: the trained model is the negative, used only in the unconditional branch;
the positive is the base. θ_neg = θ_base + β_mix·δ, δ = θ_selfnpo − θ_base, and
    ε = ε_neg(x, uncond) + g·(ε_base(x, cond) − ε_neg(x, uncond))   (g = ω + 1 of the paper's form).

Config ↔ paper/code: ``teacher_steps`` = K; ``grid_steps`` = ``--num_ddim_timesteps``;
``teacher_guidance`` = w; ``ema_decay`` = the EMA rate; ``huber_c`` = ``--huber_c``; ``neg_weight`` =
β (mixing weight of δ, sample-only); ``guidance_scale`` = g.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from methods.core.api import Denoiser, TrainContext, sample_only
from methods.core.diffusion import (cfg_denoiser, ddim_eps, ddim_transition, ddim_x0, encode_uncond, train_scheduler,
                                    unet_eps, unet_eps_both)
from methods.core.training import (OptimizerConfig, Part, Trainer, TrainedUNetMethod, check_all, index_batches,
                                   master_copy, micro_batches, save_unet)
from methods.core.types import IMAGES, Cond


def ddim_grid(num_train_timesteps: int, steps: int) -> torch.Tensor:
    """(steps,) the code's DDIMSolver grid: k·(T // steps) − 1, k = 1..steps ({39, …, 999} for 1000/25)."""
    return torch.arange(1, steps + 1) * (num_train_timesteps // steps) - 1


def negative_guidance(pred_c: torch.Tensor, pred_u: torch.Tensor, w: float) -> torch.Tensor:
    """pred_c + w·(pred_c − pred_u) = (1 + w)·pred_c − w·pred_u: w = −1 gives pred_u, w = −5 gives
    5·pred_u − 4·pred_c (train_xl.py; methods.md §4.1's "6·uncond − 5·cond" is an arithmetic slip).

    Affine with weights summing to 1, so it commutes with the output -> x̂0 / ε conversions.
    """
    return pred_c + w * (pred_c - pred_u)


def forward_transition(x_t: torch.Tensor, abar_t: torch.Tensor, abar_s: torch.Tensor, noise: torch.Tensor
                       ) -> torch.Tensor:
    """x_s = α_s·(x_t/α_t + √(σ_s²/α_s² − σ_t²/α_t²)·ξ) for s > t: q(x_s | x_t), marginal N(α_s·x0, σ_s²)."""
    a_t, a_s = abar_t.sqrt(), abar_s.sqrt()
    nsr_t2, nsr_s2 = (1 - abar_t) / abar_t, (1 - abar_s) / abar_s  # σ²/α²
    return a_s * (x_t / a_t + (nsr_s2 - nsr_t2).sqrt() * noise)


def pseudo_huber(pred: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """() mean over all elements of √((pred − target)² + c²) − c, in float32."""
    return ((pred.float() - target.float()).pow(2) + c * c).sqrt().sub(c).mean()


def student_timesteps(t: torch.Tensor, num_train_timesteps: int, u: torch.Tensor) -> torch.Tensor:
    """(B,) s uniform on {t+1, …, T−1} from u ~ U[0, 1): the code's t + randint(1, T − t)."""
    return t + 1 + (u * (num_train_timesteps - 1 - t)).long()


def mix_weights(base: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], scale: float
                ) -> dict[str, torch.Tensor]:
    """θ_base + scale·(θ_trained − θ_base) per floating state-dict entry, computed in float32."""
    return {k: (b.float() + scale * (trained[k].float() - b.float())).to(b.dtype) if b.is_floating_point() else b
            for k, b in base.items()}


@torch.no_grad()
def ema_update(target: torch.nn.Module, source: torch.nn.Module, decay: float) -> None:
    """target ← decay·target + (1 − decay)·source, parameter by parameter (the code's update_ema)."""
    for p_t, p_s in zip(target.parameters(), source.parameters()):
        p_t.mul_(decay).add_(p_s.detach().to(p_t.dtype), alpha=1 - decay)


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1), broadcast over C, H, W


@torch.no_grad()
def teacher_rollout(teacher: Any, x: torch.Tensor, k: torch.Tensor, cond: Cond, uncond: Cond, abar: torch.Tensor,
                    grid: torch.Tensor, steps: int, w: float, kind: str
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K guided DDIM (η = 0) steps down ``grid`` from x at grid[k] (k: (B,) grid indices).

    Returns (x_t, t, x̂0 at (x_t, t)). A row stepping from grid index 0 lands on t = 0 (ᾱ_0, as the
    code's solver) and stays there.
    """
    t = grid[k]
    for i in range(steps + 1):
        a_t = _col(abar[t])
        if w == -1.0:  # the conditional prediction has weight 0: skip its forward
            out = unet_eps(teacher, x, t, uncond).float()
        else:
            out_u, out_c = unet_eps_both(teacher, x, t, cond, uncond)
            out = negative_guidance(out_c.float(), out_u.float(), w)
        x0 = ddim_x0(out, x, a_t, kind)
        if i == steps:
            break
        moving = k >= 0
        t_prev = torch.where(k > 0, grid[(k - 1).clamp(min=0)], torch.zeros_like(t))
        x_prev, _ = ddim_transition(x0, ddim_eps(out, x, a_t, kind), a_t, _col(abar[t_prev]), 0.0)
        x = torch.where(_col(moving), x_prev, x)
        t, k = torch.where(moving, t_prev, t), k - moving.long()
    return x, t, x0


@dataclass(frozen=True)
class SelfNPOConfig(OptimizerConfig):
    teacher_steps: int = 5  # K: train.py runs 6 teacher evaluations, `if i >= 5: break` -> 5 DDIM moves
    grid_steps: int = 25  # --num_ddim_timesteps (default 25): the grid {39, 79, …, 999}
    teacher_guidance: float = -1.0  # w in x̂0 = x̂0_c + w(x̂0_c − x̂0_u); train.py `w = - 1` (SDXL −5)
    ema_decay: float = 0.999  # update_ema(target_unet, unet, 0.999) after every optimizer step
    huber_c: float = 0.001  # --huber_c default, --loss_type=huber in train.sh
    lr: float = 1e-6  # train.sh --learning_rate, lr_scheduler default "constant" (no warmup)
    weight_decay: float = 1e-3  # train.sh --adam_weight_decay
    steps: int = 1000  # train.sh --max_train_steps
    batch_size: int = 20  # train.sh --train_batch_size, accumulation 1 (GPU count not stated)
    micro_batch: int = 0  # images per forward/backward (gradient accumulation); 0 = whole batch
    # Inherited from the loop's configs as they are (methods/core/training.py):
    # optimizer "adamw": adamw | adamw8bit | adafactor (the code: bitsandbytes AdamW8bit, β 0.9/0.999);
    # grad_clip 1.0: --max_grad_norm default 1.0, clipped every step;
    # gradient_checkpointing False: memory only; on in train_xl.sh; seed 0: data order, t0, noises, s.
    neg_weight: float = sample_only(1.0)  # β in θ_neg = θ_base + β·δ (paper: β ∈ [0, 1])

    def validate(self) -> None:
        super().validate()
        check_all([
            (self.teacher_steps >= 1, f"teacher_steps must be >= 1, got {self.teacher_steps}"),
            (1 <= self.grid_steps <= 1000, f"grid_steps must be in [1, 1000], got {self.grid_steps}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.huber_c > 0, f"huber_c must be > 0, got {self.huber_c}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (0 <= self.micro_batch <= self.batch_size,
             f"micro_batch must be in [0, batch_size={self.batch_size}], got {self.micro_batch}"),
            (self.neg_weight >= 0, f"neg_weight must be >= 0, got {self.neg_weight}"),
        ])


class SelfNPO(TrainedUNetMethod):
    id = "self_npo"
    paper = "https://arxiv.org/abs/2505.11777"
    Config = SelfNPOConfig
    defaults = {
        # tiny world: lr 10x the official one (a tiny UNet barely moves at 1e-6); 5e-5 was no better.
        "tiny": {"guidance_scale": 5.0, "lr": 1e-5, "steps": 200, "batch_size": 16, "weight_decay": 1e-3},
        # Self-NPO/train.sh: lr 1e-6 constant, wd 1e-3, batch 20, 1000 steps, w = −1 (train.py);
        # guidance 7.5 as Diffusion-NPO's gen.py; micro-batch is a memory choice, not the code's.
        "sd15": {"guidance_scale": 7.5, "lr": 1e-6, "weight_decay": 1e-3, "steps": 1000, "batch_size": 20,
                 "micro_batch": 10, "teacher_guidance": -1.0, "optimizer": "adamw8bit"},
        # Self-NPO/train_xl.sh: lr 1e-7, wd 0, batch 10, 1000 steps, grad clip 1, gradient checkpointing;
        # w = −5 (train_xl.py); guidance 5 as Diffusion-NPO's gen_xl.sh.
        "sdxl": {"guidance_scale": 5.0, "lr": 1e-7, "weight_decay": 0.0, "steps": 1000, "batch_size": 10,
                 "micro_batch": 2, "teacher_guidance": -5.0, "gradient_checkpointing": True, "optimizer": "adamw8bit"},
    }

    def needs(self) -> frozenset[str]:
        return frozenset({IMAGES})

    def train(self, ctx: TrainContext) -> None:
        cfg, device, pipe, dist = self.cfg, ctx.device, ctx.pipe, ctx.dist
        micros = micro_batches(dist, cfg.batch_size, cfg.micro_batch, "batch_size / micro_batch")
        data = ctx.images()
        if len(data) == 0:
            raise ValueError("self_npo trains on captioned images: ctx.images() is empty")
        sched = train_scheduler(pipe)
        kind, n_train = sched.config.prediction_type, int(sched.config.num_train_timesteps)
        if cfg.grid_steps > n_train:
            raise ValueError(f"grid_steps must be <= num_train_timesteps={n_train}, got {cfg.grid_steps}")
        abar = sched.alphas_cumprod.to(device, torch.float32)
        grid = ddim_grid(n_train, cfg.grid_steps).to(device)
        gen = torch.Generator().manual_seed(cfg.seed)
        student = master_copy(pipe.unet, device)
        student.requires_grad_(True).train()
        teacher = copy.deepcopy(student).requires_grad_(False).eval()  # EMA teacher, initialised = base
        if cfg.gradient_checkpointing:
            student.enable_gradient_checkpointing()
        trainer = Trainer(ctx, cfg, list(student.parameters()), cfg.optimizer)  # constant LR, as the code
        uncond = encode_uncond(pipe, 1, device)
        batches = index_batches(len(data), cfg.batch_size, gen)

        def parts() -> Iterator[Part]:
            idx = next(batches)
            for lo, n, weight in micros:  # n images in this micro-batch, over all processes
                part = idx[lo:lo + n][dist.rows(n)]  # this process's rows (methods/core/parallel.py)
                x0, cond = data.latents[part].to(device, torch.float32), data.cond.index(part).to(device)
                with trainer.autocast(), dist.draws(gen, n):
                    loss, logs = self._loss(student, teacher, x0, cond, uncond.repeat(len(part)), abar, grid, kind,
                                            gen, lambda v: dist.gather(v, n))
                yield loss, logs, weight

        trainer.run(parts, after_step=lambda: ema_update(teacher, student, cfg.ema_decay),
                    save=lambda out: save_unet(student, pipe, out, lora=False))
        if dist.is_main:  # every process holds the same weights
            save_unet(student.eval(), pipe, Path(ctx.out_dir), lora=False)

    def _loss(self, student: Any, teacher: Any, x0: torch.Tensor, cond: Cond, uncond: Cond, abar: torch.Tensor,
              grid: torch.Tensor, kind: str, gen: torch.Generator,
              gather: Callable[[torch.Tensor], torch.Tensor] = lambda v: v) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch: teacher target from real latents, student regression from a noisier x_s.

        ``gather``: all processes' rows of a per-row tensor, so loss and logs cover the whole micro-batch.
        """
        b, dev = x0.shape[0], x0.device
        k = torch.randint(0, len(grid), (b,), generator=gen).to(dev)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        a0 = _col(abar[grid[k]])
        x_start = a0.sqrt() * x0 + (1 - a0).sqrt() * noise  # q(x_t0 | x0)
        x_t, t, target = teacher_rollout(teacher, x_start, k, cond, uncond, abar, grid, self.cfg.teacher_steps,
                                         self.cfg.teacher_guidance, kind)
        s = student_timesteps(t, len(abar), torch.rand(b, generator=gen).to(dev))
        x_s = forward_transition(x_t, _col(abar[t]), _col(abar[s]), torch.randn(x0.shape, generator=gen).to(dev))
        pred = ddim_x0(unet_eps(student, x_s, s, cond).float(), x_s, _col(abar[s]), kind)
        loss = pseudo_huber(gather(pred), gather(target), self.cfg.huber_c)
        return loss, {"t_start": float(gather(grid[k].float()).mean()), "t_target": float(gather(t.float()).mean()),
                      "s": float(gather(s.float()).mean())}

    def denoiser(self, pipe: Any, artifact: Path | None, artifacts: Callable[[str], Path]) -> Denoiser:
        negative = self.trained_unet(pipe, artifact, "its trained negative model")  # θ_base + δ
        if self.cfg.neg_weight != 1.0:
            with torch.no_grad():
                negative.load_state_dict(mix_weights(pipe.unet.state_dict(), negative.state_dict(),
                                                     self.cfg.neg_weight))
        return cfg_denoiser(pipe.unet, negative, self.cfg.guidance_scale)


METHOD = SelfNPO
