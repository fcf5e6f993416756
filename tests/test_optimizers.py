"""The optimizers the official recipes use: AdamW, AdamW in 8 bits (bitsandbytes), Adafactor."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from bench.plan import UsageError, make_plan, preflight
from methods.core.training import OPTIMIZERS, make_optimizer


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_takes_a_step_downhill(name):
    if name == "adamw8bit":
        pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4096, 8))  # 8-bit states apply to tensors of >= 4096 elements
    opt = make_optimizer([w], name, lr=1e-2, weight_decay=0.0)
    before = float((w.detach() ** 2).sum())
    for _ in range(3):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    assert float((w.detach() ** 2).sum()) < before
    if name == "adamw8bit":  # the moments really are kept in 8 bits
        assert opt.state[w]["state1"].dtype == torch.uint8


def test_a_missing_optimizer_package_is_named_before_any_work(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    plan = make_plan("npo", "tiny-micro", "tiny-eval", "0", "oracle", tmp_path / "bench.duckdb",
                     {"npo": {"optimizer": "adamw8bit"}})
    with pytest.raises(UsageError, match="needs the bitsandbytes package: pip install bitsandbytes"):
        preflight(plan)


def test_adamw_is_the_fused_kernel_and_steps_as_the_reference_loop():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(64, 32))
    b = torch.nn.Parameter(a.detach().clone())
    ours = make_optimizer([a], "adamw", lr=1e-2, weight_decay=1e-2)
    loop = torch.optim.AdamW([b], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, foreach=False)
    assert ours.defaults["fused"]
    for step in range(5):
        g = torch.randn(64, 32, generator=torch.Generator().manual_seed(step))
        a.grad, b.grad = g.clone(), g.clone()
        ours.step(), loop.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
