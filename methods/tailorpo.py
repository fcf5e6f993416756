"""TailorPO: Tailored Preference Optimization (and TailorPO-G, with reward-gradient guidance).

Ren, Zhang, Liu, Zhang, Tian, "Refining Alignment Framework for Diffusion Models with Intermediate-Step
Preference Ranking", arXiv 2502.01667. NO public code: this file is a RECONSTRUCTION from the abstract
and third-party summaries (methods.md §5, §11.1); every choice below is ours unless marked [paper].

Idea [paper]: step-level DPO for diffusion (D3PO-style) labels intermediate noisy samples of two
different trajectories with the preference of their final images, which can get the gradient
direction and the preference order wrong. TailorPO instead draws both samples of a pair FROM THE SAME
denoising input x_t, ranks them by a STEP-WISE reward, and applies a DPO-style loss to that one
transition. TailorPO-G adds reward-gradient guidance to widen the reward gap of the pair.

One training step here (online, reward model in the loop, no preference data):
  1. B prompts c from ``ctx.prompts()``; x_T ~ N(0, I); the CURRENT policy samples with CFG
     (``train_guidance_scale``) and stochastic DDIM (η = ``eta`` > 0) for k steps, k ~ U{0, …, S−1}
     shared by the batch (one batched rollout), through the shared sampling loop -> x_t, t = τ_k
     (a last step onto ᾱ = 1, i.e. ``set_alpha_to_one``, has σ = 0 and is never drawn);
  2. two candidates from the same x_t: x^(i) = μ_θ(x_t) + σ_t·z_i, i = 1, 2 (one mean, two noises);
  3. step-wise reward r(x) = R(decode(x̂0(x)), c), x̂0 = the policy's one-step DDIM clean estimate at
     the next timestep t′ = t − T/S (x itself after the last step); R = ``ctx.reward()``
     (tiny-pickscore in the tiny world, never the oracle); winner = higher r (ties: first candidate);
  4. loss, DPO on the single transition with Gaussian log-probs of a shared σ_t:
        d_m = [log p_m(x^w|x_t) − log p_m(x^l|x_t)] = mean_{C,H,W} ((x^l − μ_m)² − (x^w − μ_m)²)/(2σ_t²)
        z = β·(d_θ − d_ref),   L = mean_B(−log σ(z))
     Both candidates share μ(x_t), so one trainable and one reference UNet call per pair (each a
     batched CFG call [uncond; cond], since the sampling policy is the CFG-guided one).
Choices, each a reconstruction: log-probs are MEANS over latent elements (as DDPO/D3PO/SPO's
``ddim_step_with_logprob``), so β is per element and comparable with SPO's β = 10; one random
transition per trajectory (not every step as in D3PO/SPO); the reward is evaluated on the decoded
one-step x̂0 (the "step-wise reward" is not defined in what we could read; it may be an expected final
reward); the policy is a LoRA (rank 4 as SPO on SD1.5) and the reference is the same UNet with its
adapters disabled: no second UNet in memory, the policy starts exactly at the reference, and the
online sampler is always the current policy; x̂0 clipping is switched off in the rollout sampler so
the transition is exactly the Gaussian of ``ddim_transition``.

TailorPO-G (``gradient_guidance``), our formula: before the final ranking, with g_i = ∇_x r(x^(i))
(back-propagated through the reward, the VAE decoder and the policy's x̂0) and a preliminary order
from r, the winner moves up and the loser down its own reward gradient,
    x^w ← x^w + η_g·σ_t·g_w/rms(g_w),   x^l ← x^l − η_g·σ_t·g_l/rms(g_l),   η_g = ``guidance_eta``,
then both are re-scored and ranked again. Normalising by rms(g) makes η_g a step in units of the
transition noise, whatever the reward's scale (PickScore ≈ 20, aesthetic ≈ 5, tiny-pickscore arbitrary).

Sampling after training: plain CFG with the trained model (adapters fused).
Config ↔ symbols: ``beta`` = β; ``eta`` = η of DDIM; ``rollout_steps`` = S; ``guidance_eta`` = η_g.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from methods.core.api import TrainContext
from methods.core.diffusion import (cfg_denoiser, ddim_eps, ddim_transition, ddim_x0, encode_prompts, encode_uncond,
                                    latent_shape, sample_latents, vae_decode)
from methods.core.training import (Part, Trainer, TrainedUNetMethod, WarmupConfig, adapters_disabled, attach_lora,
                                   check_all, index_batches, master_copy, save_unet)
from methods.core.types import PROMPTS, REWARD, Cond

RewardFn = Callable[[torch.Tensor, list[str]], torch.Tensor]  # (N, 3, H, W) in [0, 1], prompts -> (N,)


def transition_logp_diff(x_w: torch.Tensor, x_l: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
                         ) -> torch.Tensor:
    """(B,) log N(x_w; μ, σ²) − log N(x_l; μ, σ²), per latent element (mean over C, H, W)."""
    d = ((x_l.float() - mean.float()).pow(2) - (x_w.float() - mean.float()).pow(2)) / (2 * std.float() ** 2)
    return d.mean(dim=list(range(1, d.ndim)))


def tailorpo_loss(x_w: torch.Tensor, x_l: torch.Tensor, mean_theta: torch.Tensor, mean_ref: torch.Tensor,
                  std: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns loss (), z (B,), implicit accuracy () for one shared-x_t transition pair per row."""
    z = beta * (transition_logp_diff(x_w, x_l, mean_theta, std) - transition_logp_diff(x_w, x_l, mean_ref, std))
    return -F.logsigmoid(z).mean(), z, (z > 0).float().mean()


def rank_pair(cands: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cands (2, B, C, h, w), scores (2, B) -> (x_w, x_l, first_wins (B,)); a tie goes to the first."""
    first = scores[0] >= scores[1]  # (B,)
    pick = first.view(-1, *[1] * (cands.ndim - 2))
    return torch.where(pick, cands[0], cands[1]), torch.where(pick, cands[1], cands[0]), first


def guidance_step(x: torch.Tensor, grad: torch.Tensor, std: torch.Tensor, eta: float, sign: torch.Tensor
                  ) -> torch.Tensor:
    """x + sign·η·σ·g/rms(g) per sample (sign (…,) of ±1 broadcast over C, H, W): TailorPO-G's move."""
    dims = list(range(grad.ndim - 3, grad.ndim))
    rms = grad.float().pow(2).mean(dim=dims, keepdim=True).sqrt().clamp(min=1e-12)
    return x + sign.view(*sign.shape, 1, 1, 1) * eta * std * grad.float() / rms


def reward_fn(reward: Any) -> RewardFn:
    """The differentiable scores of a reward: a Reward's ``score_tensor``, or the callable itself."""
    if hasattr(reward, "score_tensor"):
        return reward.score_tensor
    if callable(reward):
        return reward
    raise TypeError(f"tailorpo needs a reward with score_tensor(images, prompts); got {type(reward).__name__}")


def transition(unet: Any, x: torch.Tensor, t: int, cond: Cond, uncond: Cond, g: float, abar_t: torch.Tensor,
               abar_prev: torch.Tensor, eta: float, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the CFG-guided stochastic DDIM step of ``unet`` from (x, t)."""
    out = cfg_denoiser(unet, unet, g)(x, torch.full((x.shape[0],), t, device=x.device), cond, uncond).float()
    return ddim_transition(ddim_x0(out, x, abar_t, kind), ddim_eps(out, x, abar_t, kind), abar_t, abar_prev, eta)


def step_rewards(unet: Any, vae: Any, score: RewardFn, x: torch.Tensor, t_prev: int, abar_prev: torch.Tensor,
                 cond: Cond, uncond: Cond, g: float, prompts: list[str], kind: str, with_grad: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N,) r(x) = R(decode(x̂0(x)), c) of candidates x at t_prev (t_prev < 0: x is already clean),
    and ∇_x r when ``with_grad``."""
    x = x.detach().requires_grad_(with_grad)
    with torch.set_grad_enabled(with_grad):
        if t_prev < 0:
            x0 = x
        else:
            out = cfg_denoiser(unet, unet, g)(x, torch.full((x.shape[0],), t_prev, device=x.device), cond, uncond)
            x0 = ddim_x0(out.float(), x, abar_prev, kind)
        r = score(vae_decode(vae, x0), prompts).float().to(x.device)
        grad = torch.autograd.grad(r.sum(), x)[0] if with_grad else None
    return r.detach(), grad


@dataclass(frozen=True)
class TailorPOConfig(WarmupConfig):
    beta: float = 10.0  # β on per-element log-probs; SPO basic_config train.beta (no TailorPO value known)
    lr: float = 6e-5  # SPO basic_config (SD1.5 LoRA), constant
    steps: int = 1000  # optimizer steps: not published for TailorPO; our choice
    batch_size: int = 10  # prompts (= pairs) per step; SPO sample_batch_size / train_batch_size 10
    warmup_steps: int = 0  # SPO: constant LR
    weight_decay: float = 1e-4  # SPO adam_weight_decay
    # Inherited as they are (methods/core/training.py): grad_clip 1.0 (SPO max_grad_norm); seed 0 (prompt
    # order, rollout noise, k, candidate noise, LoRA init). The optimizer is always AdamW (SPO's).
    lora_rank: int = 4  # SPO SD1.5 lora_rank (alpha = rank, to_q/k/v/out.0); reference = adapters off
    rollout_steps: int = 20  # S: DDIM steps of the online sampler (SPO / D3PO: 20)
    eta: float = 1.0  # DDIM η of rollouts and of the pair's transition (SPO sample.eta)
    train_guidance_scale: float = 5.0  # CFG of rollouts, candidates and training log-probs (SPO: 5, train.cfg)
    gradient_guidance: bool = False  # TailorPO-G
    guidance_eta: float = 0.5  # η_g of TailorPO-G in units of σ_t (our reconstruction; no published value)

    def validate(self) -> None:
        super().validate()
        check_all([
            (self.beta > 0, f"beta must be > 0, got {self.beta}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lora_rank >= 1, f"lora_rank must be >= 1 (the reference is the LoRA policy with adapters "
                                  f"off), got {self.lora_rank}"),
            (self.rollout_steps >= 1, f"rollout_steps must be >= 1, got {self.rollout_steps}"),
            (0 < self.eta <= 1, f"eta must be in (0, 1] (candidates need a stochastic transition), got {self.eta}"),
            (self.train_guidance_scale >= 0, f"train_guidance_scale must be >= 0, got {self.train_guidance_scale}"),
            (self.guidance_eta >= 0, f"guidance_eta must be >= 0, got {self.guidance_eta}"),
        ])


class TailorPO(TrainedUNetMethod):
    id = "tailorpo"
    paper = "https://arxiv.org/abs/2502.01667"
    Config = TailorPOConfig
    defaults = {
        # tiny world (v3, tiny-train, seeds 0-1): lr 1e-4 does not move the LoRA in 200 steps; at 1e-3 a
        # batch of 8 pairs is mostly noise (its own reward, tiny-pickscore, wins 0.37 / 0.53 for seeds
        # 0 / 1), a batch of 32 climbs it (0.68 / 0.53). With the oracle as the in-loop reward, batch 32
        # wins 0.67 on the oracle and batch 8 0.39: the method works, the learned proxy limits it.
        "tiny": {"guidance_scale": 5.0, "lr": 1e-3, "steps": 200, "batch_size": 32, "rollout_steps": 10,
                 "train_guidance_scale": 5.0},
        # SPO's SD1.5 basic_config as the template (TailorPO's own values are unpublished): LoRA r4,
        # lr 6e-5, wd 1e-4, clip 1, 20 DDIM steps η 1, CFG 5, 10 prompts per batch, β 10. Sampling g = 7.5
        # as base, so the comparison isolates training. steps: our choice.
        "sd15": {"guidance_scale": 7.5, "lr": 6e-5, "steps": 1000, "batch_size": 10, "lora_rank": 4,
                 "rollout_steps": 20, "eta": 1.0, "train_guidance_scale": 5.0},
        # SPO's SDXL config: LoRA r64, lr 1e-5, 2 prompts × accumulation 2 (here a batch of 4), CFG 5.
        "sdxl": {"guidance_scale": 5.0, "lr": 1e-5, "steps": 1000, "batch_size": 4, "lora_rank": 64,
                 "rollout_steps": 20, "eta": 1.0, "train_guidance_scale": 5.0},
    }

    def needs(self) -> frozenset[str]:
        return frozenset({PROMPTS, REWARD})

    def train(self, ctx: TrainContext) -> None:
        from diffusers import DDIMScheduler

        cfg, device, pipe, dist = self.cfg, ctx.device, ctx.pipe, ctx.dist
        dist.check_split([cfg.batch_size], "batch_size")
        prompts = list(ctx.prompts())
        if not prompts:
            raise ValueError("tailorpo trains on prompts: ctx.prompts() is empty")
        score = reward_fn(ctx.reward())
        gen = torch.Generator().manual_seed(cfg.seed)
        policy = master_copy(pipe.unet, device)
        params = attach_lora(policy, cfg.lora_rank, gen)
        policy.train()
        trainer = Trainer(ctx, cfg, params, "adamw", cfg.warmup_steps)
        # No x̂0 clipping: the transition must be exactly the Gaussian of ddim_transition.
        sched = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, thresholding=False)
        kind, ratio = sched.config.prediction_type, sched.config.num_train_timesteps // cfg.rollout_steps
        uncond1, shape, g = encode_uncond(pipe, 1, device), latent_shape(pipe), cfg.train_guidance_scale
        # With set_alpha_to_one the last step lands on ᾱ = 1 with σ = 0: no pair to rank, never drawn.
        n_k = cfg.rollout_steps - int(float(sched.final_alpha_cumprod) >= 1.0)
        if n_k < 1:
            raise ValueError("rollout_steps must be >= 2 when the scheduler's last DDIM step is deterministic")

        def rollout(x: torch.Tensor, t: torch.Tensor, c: Cond, u: Cond) -> torch.Tensor:
            # the fp32 LoRA policy, whatever dtype the shared loop casts its inputs to
            f32 = torch.float32
            return cfg_denoiser(policy, policy, g)(x.float(), t, c.to(device, f32), u.to(device, f32))

        batches = index_batches(len(prompts), cfg.batch_size, gen)
        n = cfg.batch_size
        mine = dist.rows(n)  # this process's prompts of each batch (methods/core/parallel.py)

        def gather(v: torch.Tensor) -> torch.Tensor:  # all processes' rows: the loss and logs see the batch
            return dist.gather(v, n)

        def parts() -> Iterator[Part]:  # one micro-batch: the whole batch of prompts
            texts = [prompts[i] for i in next(batches).tolist()][mine]
            cond = encode_prompts(pipe, texts, device).to(device, torch.float32)
            uncond = uncond1.repeat(len(texts)).to(device, torch.float32)
            k = int(torch.randint(n_k, (1,), generator=gen))
            with dist.draws(gen, n):  # per-prompt noise of the rollout, drawn as one process would
                noise = torch.randn((len(texts), *shape), generator=gen)
                with torch.no_grad(), trainer.autocast():
                    x_t = sample_latents(pipe, rollout, cond, uncond, noise, cfg.rollout_steps, sched, stop_after=k,
                                         step_kwargs={"eta": cfg.eta, "generator": gen})
                    t = int(sched.timesteps[k])
                    t_prev = t - ratio
                    a_t = sched.alphas_cumprod[t].to(device)
                    a_prev = (sched.alphas_cumprod[t_prev] if t_prev >= 0 else sched.final_alpha_cumprod).to(device)
                    mean, std = transition(policy, x_t, t, cond, uncond, g, a_t, a_prev, cfg.eta, kind)
            cand_noise = torch.randn((2, n, *x_t.shape[1:]), generator=gen)[:, mine]
            cands = mean + std * cand_noise.to(device)  # (2, B, C, h, w)
            with trainer.autocast():
                x_w, x_l, logs = self._pair(policy, pipe.vae, score, cands, std, t_prev, a_prev, cond, uncond, texts,
                                            kind, gather)
                with torch.no_grad(), adapters_disabled(policy):
                    mean_ref, _ = transition(policy, x_t, t, cond, uncond, g, a_t, a_prev, cfg.eta, kind)
                mean_theta, _ = transition(policy, x_t, t, cond, uncond, g, a_t, a_prev, cfg.eta, kind)
            loss, _, acc = tailorpo_loss(gather(x_w), gather(x_l), gather(mean_theta), gather(mean_ref), std, cfg.beta)
            yield loss, {**logs, "implicit_acc": float(acc), "t": float(t)}, 1.0

        trainer.run(parts, save=lambda out: save_unet(policy, pipe, out, lora=True))
        if dist.is_main:  # every process holds the same weights
            save_unet(policy.eval(), pipe, Path(ctx.out_dir), lora=True)

    def _pair(self, policy: Any, vae: Any, score: RewardFn, cands: torch.Tensor, std: torch.Tensor, t_prev: int,
              a_prev: torch.Tensor, cond: Cond, uncond: Cond, texts: list[str], kind: str,
              gather: Callable[[torch.Tensor], torch.Tensor] = lambda v: v
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Rank the two candidates by the step-wise reward (after TailorPO-G's move when enabled).

        ``gather``: all processes' rows of a per-row tensor, so the logs cover the whole batch.
        """
        cfg = self.cfg
        guide = cfg.gradient_guidance and cfg.guidance_eta > 0

        def rewards(x: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
            # one candidate slot at a time: half the peak memory of the decoder's backward in TailorPO-G
            out = [step_rewards(policy, vae, score, x[i], t_prev, a_prev, cond, uncond, cfg.train_guidance_scale,
                                texts, kind, with_grad) for i in range(2)]
            return torch.stack([r for r, _ in out]), torch.stack([g for _, g in out]) if with_grad else None

        r, grad = rewards(cands, guide)
        logs = {}
        if guide:
            _, _, first = rank_pair(cands, r)
            up = torch.where(first, 1.0, -1.0)  # +1 for the preliminary winner's row
            cands = guidance_step(cands, grad, std, cfg.guidance_eta, torch.stack([up, -up]))
            logs["reward_gap_unguided"] = float(gather((r[0] - r[1]).abs()).mean())
            r, _ = rewards(cands, False)
        x_w, x_l, first = rank_pair(cands, r)
        r_w, r_l = gather(torch.where(first, r[0], r[1])), gather(torch.where(first, r[1], r[0]))
        logs.update(reward_w=float(r_w.mean()), reward_l=float(r_l.mean()), reward_gap=float((r_w - r_l).mean()))
        return x_w.detach(), x_l.detach(), logs


METHOD = TailorPO
