"""The contract every registered method keeps; runs over ``METHODS.available()`` automatically.

Config: round-trips through JSON, per-model defaults are valid, obviously invalid values are refused.
Declarations: ``needs()`` names only inputs the harness knows, and nothing for a method that does not
train; ``packages()`` maps package names to the setting that needs them.
Training (2 steps on synthetic data, the methods it stacks on first, each seeing only the inputs its
``needs()`` declares): leaves the pipeline untouched and changes what the method predicts, unless it
declares ``trains = False``. Sampling through the shared loop is deterministic for fixed seeds.
"""

from __future__ import annotations

import copy

import dataclasses
import json
import re
import sys

import pytest
import torch

from bench.registry import METHODS
from method_helpers import short_config, train_method
from methods.core.diffusion import cfg_denoiser, encode_prompts, encode_uncond, generate
from methods.core.types import NEEDS

ALL = METHODS.available()

# Values no method should accept for a field of that name (a field a method lacks is not tried).
INVALID = {"guidance_scale": -1.0, "beta": -1.0, "mu": 1.5, "steps": 0, "lr": -1.0, "lora_rank": -1,
           "prompt_dropout": 1.5, "merge_weight": 2.0, "strength": -1.0, "variant": "no-such-variant",
           "optimizer": "no-such-optimizer", "beta_convention": "no-such-convention"}


@pytest.mark.parametrize("method_id", ALL)
def test_registered_with_paper_and_config(method_id):
    cls = METHODS.get(method_id)
    assert cls.id == method_id and cls.paper, "register the id and link the paper"
    assert (sys.modules[cls.__module__].__doc__ or "").strip(), "the module docstring comes first: the paper"
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    assert set(cls.defaults) <= {"tiny", "sd15", "sdxl"}, f"defaults for unknown model families: {set(cls.defaults)}"


@pytest.mark.parametrize("method_id", ALL)
def test_config_round_trips_through_json(method_id):
    cls = METHODS.get(method_id)
    for values in [{}, *cls.defaults.values()]:
        cfg = cls.Config(**values)
        cls(cfg)  # every per-model default is valid
        again = cls.Config(**json.loads(json.dumps(dataclasses.asdict(cfg))))
        assert again == cfg and again.train_fields() == cfg.train_fields()
        json.dumps(cfg.train_fields())  # the artifact key is JSON-serialisable


@pytest.mark.parametrize("method_id", ALL)
def test_validate_refuses_invalid_values(method_id):
    cls = METHODS.get(method_id)
    cfg = cls.Config()
    names = {f.name for f in dataclasses.fields(cfg)}
    tried = {k: v for k, v in INVALID.items() if k in names}
    if "stack_on" in names:
        tried["stack_on"] = method_id  # a method cannot stack on itself
    assert "guidance_scale" in tried  # every config has it (MethodConfig)
    for field, value in tried.items():
        with pytest.raises(ValueError, match=re.escape(field)):  # the message names the field
            cls(dataclasses.replace(cfg, **{field: value}))


@pytest.mark.parametrize("method_id", ALL)
def test_declares_what_it_needs(method_id):
    cls = METHODS.get(method_id)
    for values in [{}, *cls.defaults.values()]:
        method = cls(cls.Config(**values))
        needs, packages = method.needs(), method.packages()
        assert isinstance(needs, frozenset) and needs <= NEEDS, f"needs() outside {sorted(NEEDS)}: {needs}"
        assert cls.trains or not needs, "a method that does not train needs no training inputs"
        assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in packages.items()), packages


def _probe(pipe):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 8, 8, generator=g)
    return x, torch.tensor([900, 300]), encode_prompts(pipe, ["a cat", "a dog"]), encode_uncond(pipe, 2)


@pytest.mark.parametrize("method_id", ALL)
def test_short_train_then_deterministic_sampling(method_id, tiny_sd, tmp_path):
    cls = METHODS.get(method_id)
    method = cls(short_config(cls))
    before = {k: v.clone() for k, v in tiny_sd.unet.state_dict().items()}
    logs: list = []
    artifacts = train_method(method, tiny_sd, tmp_path, logs)
    assert all(torch.equal(v, before[k]) for k, v in tiny_sd.unet.state_dict().items()), "train modified ctx.pipe"
    artifact = artifacts(method_id) if cls.trains else None
    if getattr(cls, "takes_weights", False) and not cls.trains:  # it samples published weights only
        method.with_weights(lambda pipe: copy.deepcopy(pipe.unet))

    den = method.denoiser(tiny_sd, artifact, artifacts)
    x, t, c, u = _probe(tiny_sd)
    with torch.no_grad():
        eps = den(x, t, c, u)
        eps_base = cfg_denoiser(tiny_sd.unet, tiny_sd.unet, method.cfg.guidance_scale)(x, t, c, u)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    if cls.trains:
        assert logs and all(set(v) for _, v in logs), "training logged nothing"
        assert (eps - eps_base).abs().max() > 1e-6, "training did not change what the method predicts"

    prompts, seeds = ["a photo of a cat", "a dog"], [3, 4]
    first = generate(tiny_sd, den, prompts, seeds, steps=2)
    again = generate(tiny_sd, method.denoiser(tiny_sd, artifact, artifacts), prompts, seeds, steps=2)
    assert first.shape == (2, 3, 16, 16) and torch.equal(first, again)
