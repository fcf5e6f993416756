"""Diffusion-SDPO: the safe λ by hand and against the official autograd form, the straight-through
loser scaling, the winner-preserving property in output space, and λ in the train log."""

from __future__ import annotations

import pytest
import torch

from bench.registry import METHODS
from method_helpers import make_context, short_config
from methods.dpo import dpo_loss
from methods.sdpo import DiffusionSDPO, SDPOConfig, safeguard_lambda, sdpo_loss


def _t(rows):  # [[...], ...] -> (B, C=len, 1, 1)
    return torch.tensor(rows, dtype=torch.float32)[:, :, None, None]


@pytest.mark.parametrize("e_w, e_l, mu, expected", [
    ([[1, 0]], [[1, 1]], 0.5, 0.5),  # ‖e_w‖² = 1, ⟨e_l, e_w⟩ = 1 → 0.5·1/1
    ([[1, 0]], [[2, 0]], 0.0, 0.5),  # 1/2
    ([[1, 0]], [[-1, 3]], 0.9, 1.0),  # ⟨e_l, e_w⟩ = −1 ≤ 0 → 1
    ([[1, 0]], [[0, 3]], 0.9, 1.0),  # orthogonal: 0 ≤ 0 → 1
    ([[1, 0]], [[0.1, 5]], 0.0, 1.0),  # 1/0.1 = 10, clamped to 1
    ([[1, 0]], [[1, 1]], 1.0, 0.0),  # μ = 1: no loser gradient while they are aligned
    # Pooled over the micro-batch: ‖e_w‖² = 2, ⟨e_l, e_w⟩ = 3 − 1 = 2 → 0.5·2/2 = 0.5
    # (per pair it would be 1/6 and 1: one scalar per micro-batch, as official)
    ([[1, 0], [0, 1]], [[3, 0], [0, -1]], 0.5, 0.5),
])
def test_safeguard_lambda_hand_computed(e_w, e_l, mu, expected):
    lam = safeguard_lambda(_t(e_w), _t(e_l), mu)
    assert lam.shape == () and not lam.requires_grad
    assert float(lam) == pytest.approx(expected, rel=1e-6)


def test_safeguard_lambda_matches_official_autograd_form():
    """get_adaptive_lose_l_scale: grads of mean((pred − ε)²) w.r.t. each half, num/(den + 1e-9)."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 4, 8, 8, generator=g)
    for mu, shift in [(0.9, 0.3), (0.6, 1.0), (0.0, -0.5)]:
        pred_w = (target + 0.5 * torch.randn(target.shape, generator=g)).requires_grad_(True)
        pred_l = (pred_w.detach() * shift + torch.randn(target.shape, generator=g)).requires_grad_(True)
        g_a = torch.autograd.grad(((pred_w - target) ** 2).mean(), pred_w)[0]
        g_b = torch.autograd.grad(((pred_l - target) ** 2).mean(), pred_l)[0]
        num, den = g_a.pow(2).sum(), (g_b * g_a).sum()
        official = ((1 - mu) * num / (den + 1e-9) if den > 0 else torch.tensor(1.0)).clamp(0, 1)
        lam = safeguard_lambda(pred_w - target, pred_l - target, mu)
        torch.testing.assert_close(lam, official, rtol=1e-5, atol=0)


def test_loss_value_is_dpo_and_only_the_loser_gradient_is_scaled():
    g = torch.Generator().manual_seed(1)
    mw, ml = torch.rand(4, generator=g), torch.rand(4, generator=g)
    rw, rl = mw + 1e-4 * torch.randn(4, generator=g), ml + 1e-4 * torch.randn(4, generator=g)
    lam = torch.tensor(0.3)

    def grads(fn):
        w, l = mw.clone().requires_grad_(True), ml.clone().requires_grad_(True)
        loss, z, acc = fn(w, l)
        loss.backward()
        return loss.detach(), z.detach(), acc, w.grad, l.grad

    s_loss, s_z, s_acc, s_gw, s_gl = grads(lambda w, l: sdpo_loss(w, l, rw, rl, 5000.0, lam))
    d_loss, d_z, d_acc, d_gw, d_gl = grads(lambda w, l: dpo_loss(w, l, rw, rl, 5000.0))
    assert torch.equal(s_loss, d_loss) and torch.equal(s_z, d_z) and torch.equal(s_acc, d_acc)
    assert torch.equal(s_gw, d_gw)
    torch.testing.assert_close(s_gl, 0.3 * d_gl, rtol=1e-6, atol=0)
    assert d_gl.abs().min() > 0  # the comparison is not trivially 0 = 0.3·0


def _sgd_winner_error(mu: float | None, lr: float = 1e-2) -> tuple[float, float]:
    """One SGD step on a prediction θ shared by winner and loser (identity Jacobians: the paper's
    near-isometry J_wᵀJ_l = I holds exactly). pred_w = θ + a_w, pred_l = θ + a_l, shared target ε,
    with the loser's error along the winner's and twice as large, so ⟨e_l, e_w⟩ = 2‖e_w‖² > ‖e_w‖²."""
    g = torch.Generator().manual_seed(2)
    eps = torch.randn(2, 4, 4, 4, generator=g)
    e_w0 = torch.randn(eps.shape, generator=g)
    theta = torch.nn.Parameter(torch.zeros_like(eps))
    a_w, a_l = eps + e_w0, eps + 2 * e_w0  # winner error e_w0, loser error 2·e_w0 at θ = 0
    ref_w, ref_l = e_w0.pow(2).mean((1, 2, 3)), (2 * e_w0).pow(2).mean((1, 2, 3))

    def errors():
        pred_w, pred_l = theta + a_w, theta + a_l
        return pred_w, pred_l, (pred_w - eps).pow(2).mean((1, 2, 3)), (pred_l - eps).pow(2).mean((1, 2, 3))

    pred_w, pred_l, err_w, err_l = errors()
    if mu is None:
        loss = dpo_loss(err_w, err_l, ref_w, ref_l, 10.0)[0]
    else:
        loss = sdpo_loss(err_w, err_l, ref_w, ref_l, 10.0, safeguard_lambda(pred_w - eps, pred_l - eps, mu))[0]
    loss.backward()
    before = float((pred_w - eps).detach().pow(2).mean())
    with torch.no_grad():
        theta -= lr * theta.grad
    with torch.no_grad():
        return before, float((errors()[0] - eps).pow(2).mean())


def test_winner_error_does_not_rise_with_the_safeguard_but_does_with_dpo():
    before, after_dpo = _sgd_winner_error(None)
    assert after_dpo > before + 1e-4  # plain DPO: the loser term drags the winner's error up
    drops = []
    for mu in (0.1, 0.6, 0.9):
        before, after = _sgd_winner_error(mu)
        drops.append(before - after)  # first order: −Δ = c·μ·‖∇L_w‖²·lr > 0 for μ > 0
    assert 0 < drops[0] < drops[1] < drops[2]  # and larger μ protects the winner more


def test_config_defaults_and_validation():
    assert METHODS.get("sdpo") is DiffusionSDPO
    assert DiffusionSDPO.defaults["sd15"]["mu"] == 0.9 and DiffusionSDPO.defaults["sdxl"]["mu"] == 0.6
    for values in DiffusionSDPO.defaults.values():
        DiffusionSDPO(SDPOConfig(**values))
    for mu in (-0.1, 1.1):
        with pytest.raises(ValueError, match=r"mu must be in \[0, 1\]"):
            DiffusionSDPO(SDPOConfig(mu=mu))
    with pytest.raises(ValueError, match="beta must be > 0"):
        DiffusionSDPO(SDPOConfig(beta=-1.0))
    assert "mu" in SDPOConfig().train_fields()  # μ changes the artifact


def test_train_logs_lambda_every_step(tiny_sd, tmp_path):
    method = DiffusionSDPO(short_config(DiffusionSDPO, steps=3, batch_pairs=4, micro_batch_pairs=2, mu=0.5))
    ctx, logs = make_context(tiny_sd, tmp_path)
    method.train(ctx)
    assert [s for s, _ in logs] == [1, 2, 3]
    lams = [v["lambda"] for _, v in logs]
    assert all(0.0 <= lam <= 1.0 for lam in lams)
    assert min(lams) < 1.0  # random tiny errors are aligned (shared ε), so the safeguard acts
    assert (tmp_path / "unet").is_dir() or (tmp_path / "lora").is_dir()
