"""The training latents of each use of a pair (methods/core/pairs.py ``draw_latents``): horizontal flips
and VAE posterior samples drawn as the official Diffusion-DPO train.py does, against hand-computed values;
PairData's views (index, swap, device) and the pair loop's use of them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from method_helpers import make_context, pair_data
from methods.core import pairs as P
from methods.core.types import POSTERIOR_FIELDS, Cond, PairData

N, SHAPE = 3, (1, 2, 2)  # three pairs of (C, h, w) = (1, 2, 2) latents


def _data() -> PairData:
    """Known means and stds; every field distinct, so a wrong pick shows up."""
    def field(k: int) -> torch.Tensor:
        return torch.arange(N * 4, dtype=torch.float32).view(N, *SHAPE) + 100.0 * k

    cond = Cond(torch.arange(N, dtype=torch.float32).view(N, 1, 1))
    return PairData(field(0), field(1), cond, torch.ones(N), ["a", "b", "c"],
                    std_w=field(2) / 1000 + 0.1, std_l=field(3) / 1000 + 0.2, flipped_w=field(4), flipped_l=field(5),
                    flipped_std_w=field(6) / 1000 + 0.3, flipped_std_l=field(7) / 1000 + 0.4)


def _by_hand(data: PairData, idx: list[int], coins: list[list[bool]], eps: torch.Tensor | None) -> list[torch.Tensor]:
    """Winner and loser latents, (B, C, h, w) each, one pair and one side at a time."""
    out = []
    for k, side in enumerate("wl"):
        rows = []
        for i, pair in enumerate(idx):
            flipped = coins[i][k]
            mean = getattr(data, f"flipped_{side}" if flipped else f"latents_{side}")[pair]
            std = getattr(data, f"flipped_std_{side}" if flipped else f"std_{side}")[pair]
            rows.append(mean if eps is None else mean + std * eps[i, k])
        out.append(torch.stack(rows))
    return out


IDX = [2, 0, 2]  # a pair may come twice in a batch; each use draws its own flip and latent


@pytest.mark.parametrize("seed", [0, 1])
def test_flip_per_image_and_posterior_sample_by_hand(seed):
    data = _data()
    got = P.draw_latents(data, torch.tensor(IDX), torch.Generator().manual_seed(seed), "image", True)
    g = torch.Generator().manual_seed(seed)  # the same draws, in the documented order
    coins = (torch.rand(len(IDX), 2, generator=g) < 0.5).tolist()  # (B, 2): winner, loser; flip where < 0.5
    eps = torch.randn(len(IDX), 2, *SHAPE, generator=g)  # (B, 2, C, h, w)
    flat = [c for pair in coins for c in pair]
    assert any(flat) and not all(flat), "the seed should flip some images and not others"
    assert any(a != b for a, b in coins), "per image: winner and loser of a pair flip independently"
    want_w, want_l = _by_hand(data, IDX, coins, eps)
    torch.testing.assert_close(got.latents_w, want_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.latents_l, want_l, rtol=0, atol=1e-6)
    assert got.captions == ["c", "a", "c"] and got.cond.embeds.flatten().tolist() == [2.0, 0.0, 2.0]
    assert got.std_w is None and not got.has_posterior  # what the loss sees is a point latent


def test_flip_per_pair_uses_one_coin_for_both_images():
    data = _data()
    got = P.draw_latents(data, torch.tensor(IDX), torch.Generator().manual_seed(1), "pair", True)
    g = torch.Generator().manual_seed(1)
    coin = (torch.rand(len(IDX), generator=g) < 0.5).tolist()  # (B,)
    eps = torch.randn(len(IDX), 2, *SHAPE, generator=g)
    assert any(coin) and not all(coin)
    want_w, want_l = _by_hand(data, IDX, [[c, c] for c in coin], eps)
    torch.testing.assert_close(got.latents_w, want_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.latents_l, want_l, rtol=0, atol=1e-6)


def test_flip_only_and_posterior_only():
    data = _data()
    got = P.draw_latents(data, torch.tensor(IDX), torch.Generator().manual_seed(1), "image", False)
    coins = (torch.rand(len(IDX), 2, generator=torch.Generator().manual_seed(1)) < 0.5).tolist()
    want_w, want_l = _by_hand(data, IDX, coins, None)  # flipped means, no noise
    assert torch.equal(got.latents_w, want_w) and torch.equal(got.latents_l, want_l)

    got = P.draw_latents(data, torch.tensor(IDX), torch.Generator().manual_seed(3), "none", True)
    eps = torch.randn(len(IDX), 2, *SHAPE, generator=torch.Generator().manual_seed(3))  # no coins drawn first
    want_w, want_l = _by_hand(data, IDX, [[False, False]] * len(IDX), eps)
    torch.testing.assert_close(got.latents_w, want_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.latents_l, want_l, rtol=0, atol=1e-6)


def test_both_off_gives_the_cached_means_and_draws_nothing():
    data = _data()
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    got = P.draw_latents(data, torch.tensor(IDX), g, "none", False)
    assert torch.equal(got.latents_w, data.latents_w[IDX]) and torch.equal(got.latents_l, data.latents_l[IDX])
    assert torch.equal(g.get_state(), state)  # today's stream of noise and timesteps is unchanged


def test_pairs_without_a_posterior_flip_their_latents_and_draw_alike():
    data = _data()
    bare = PairData(data.latents_w, data.latents_l, data.cond, data.label, data.captions)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    got = P.draw_latents(bare, torch.tensor(IDX), g1, "image", True)
    P.draw_latents(data, torch.tensor(IDX), g2, "image", True)
    assert torch.equal(g1.get_state(), g2.get_state())  # the same draws whatever the data holds
    coins = (torch.rand(len(IDX), 2, generator=torch.Generator().manual_seed(0)) < 0.5).tolist()
    for i, pair in enumerate(IDX):  # std 0: the latent itself, mirrored along w where its coin says
        for k, side in enumerate("wl"):
            mean = getattr(data, f"latents_{side}")[pair]
            assert torch.equal(getattr(got, f"latents_{side}")[i], mean.flip(-1) if coins[i][k] else mean)


@pytest.mark.parametrize("flip", ["image", "pair"])
def test_processes_draw_their_rows_of_the_single_process_draws(flip):
    """Split over 3 processes (parallel.py ``draws``), each gets its rows of what one process draws."""
    from methods.core.parallel import TorchDataParallel

    data, idx = _data(), torch.tensor([2, 0, 2, 1, 1])
    one = P.draw_latents(data, idx, torch.Generator().manual_seed(4), flip, True)
    parts = []
    for rank in range(3):
        dp = TorchDataParallel(rank, 3)  # draws need no process group
        with dp.draws(gen := torch.Generator().manual_seed(4), len(idx)):
            parts.append(P.draw_latents(data, idx[dp.rows(len(idx))], gen, flip, True))
    assert torch.equal(torch.cat([p.latents_w for p in parts]), one.latents_w)
    assert torch.equal(torch.cat([p.latents_l for p in parts]), one.latents_l)


def test_unknown_flip_is_refused():
    with pytest.raises(ValueError, match="available: image, pair, none"):
        P.draw_latents(_data(), torch.tensor([0]), torch.Generator(), "both", False)
    with pytest.raises(ValueError, match="random_flip 'both'; available: image, pair, none"):
        P.PairTrainConfig(random_flip="both").validate()


def test_pair_data_views_move_together():
    data = _data()
    with pytest.raises(ValueError, match="all together or not at all"):
        dataclasses.replace(data, flipped_l=None)
    sub = data.index(torch.tensor([2, 0]))
    assert all(torch.equal(getattr(sub, f), getattr(data, f)[[2, 0]]) for f in ("latents_w", *POSTERIOR_FIELDS))
    swapped = data.swapped(torch.tensor([True, False, True]))
    for w_name in ("latents_w", "std_w", "flipped_w", "flipped_std_w"):
        l_name = w_name[:-1] + "l"
        w, l, sw, sl = (getattr(x, n) for x in (data, swapped) for n in (w_name, l_name))
        assert torch.equal(sw[[0, 2]], l[[0, 2]]) and torch.equal(sl[[0, 2]], w[[0, 2]]), w_name
        assert torch.equal(sw[1], w[1]) and torch.equal(sl[1], l[1]), w_name
    moved = data.to("cpu", torch.float64)
    assert moved.flipped_std_l.dtype == torch.float64 and moved.label.dtype == torch.float32


def _seen_latents(pipe, data: PairData, tmp_path: Path, **cfg) -> list[torch.Tensor]:
    """The winner latents the pair loop hands its errors_fn, over 3 steps of 2 pairs."""
    seen: list[torch.Tensor] = []

    def errors(unet, ref, batch, scheduler, generator):
        seen.append(batch.latents_w.clone())
        return P.pair_errors(unet, ref, batch, scheduler, generator)

    config = P.PairTrainConfig(steps=3, batch_pairs=2, warmup_steps=0, lr=1e-4, prompt_dropout=0.0, lora_rank=2,
                               **cfg)
    ctx, _ = make_context(pipe, tmp_path, pairs=data)
    P.train_pairs(ctx, config, lambda e: ((e.model_err_w - e.model_err_l).mean(), {}), errors_fn=errors)
    return seen


def test_the_pair_loop_trains_on_drawn_latents(tiny_sd, tmp_path):
    data = pair_data(tiny_sd, n=4, ties=0)
    plain = torch.cat(_seen_latents(tiny_sd, data, tmp_path / "a", random_flip="none", latent_sample=False))
    assert all(any(torch.equal(row, m) for m in data.latents_w) for row in plain)  # the cached means, as before

    flipped = torch.cat(_seen_latents(tiny_sd, data, tmp_path / "b", random_flip="image", latent_sample=False))
    mirrored = [any(torch.equal(row, m.flip(-1)) for m in data.latents_w) for row in flipped]
    assert all(mirrored[i] or any(torch.equal(row, m) for m in data.latents_w) for i, row in enumerate(flipped))
    assert any(mirrored)  # 6 uses, a fair coin each

    # The defaults (flip per image, a posterior sample): with std 0.5 everywhere and flips that change
    # nothing, each latent the loop sees is its pair's mean plus 0.5·N(0, 1).
    posterior = {"std_w": 0.5, "std_l": 0.5, "flipped_std_w": 0.5, "flipped_std_l": 0.5}
    with_posterior = PairData(data.latents_w, data.latents_l, data.cond, data.label, data.captions,
                              flipped_w=data.latents_w, flipped_l=data.latents_l,
                              **{f: torch.full_like(data.latents_w, v) for f, v in posterior.items()})
    drawn = torch.cat(_seen_latents(tiny_sd, with_posterior, tmp_path / "c"))
    nearest = torch.cdist(drawn.flatten(1), data.latents_w.flatten(1)).argmin(1)  # (6,) which pair each is
    residual = drawn - data.latents_w[nearest]
    assert 0.45 < float(residual.std()) < 0.55 and abs(float(residual.mean())) < 0.05
