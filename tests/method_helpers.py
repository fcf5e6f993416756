"""A synthetic training world for method tests: small random pairs, images, prompts, a toy reward.

``make_context(pipe, out_dir)`` builds a ``TrainContext`` on CPU that any method can train from in a
few steps; ``short_config(cls)`` shrinks a method's tiny defaults to such a run; ``train_method``
trains a method and, first, every method it stacks on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch

from bench.registry import METHODS
from methods.core.api import Method, MethodConfig, TrainContext
from methods.core.diffusion import encode_prompts, latent_shape
from methods.core.types import IMAGES, PAIRS, PROMPTS, REWARD, ImageData, PairData

CAPTIONS = ["a photo of a cat", "a dog", "cat", "dog photo"]

# Fields a short test run overrides, where a method has them (others keep the method's tiny defaults).
SHORT_TRAIN = {"steps": 2, "batch_pairs": 2, "micro_batch_pairs": 0, "warmup_steps": 0, "lr": 1e-3,
               "batch_size": 2}


def pair_data(pipe: Any, n: int = 6, seed: int = 0, ties: int = 1) -> PairData:
    """``n`` random latent pairs, winner first; the last ``ties`` pairs are ties (label 0.5)."""
    g = torch.Generator().manual_seed(seed)
    shape = latent_shape(pipe)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
    label = torch.ones(n)
    label[n - ties:] = 0.5
    return PairData(torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g),
                    encode_prompts(pipe, captions), label, captions)


def image_data(pipe: Any, n: int = 4, seed: int = 1) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
    return ImageData(torch.randn(n, *latent_shape(pipe), generator=g), encode_prompts(pipe, captions), captions)


def toy_reward(images: Any, prompts: list[str]) -> torch.Tensor:
    """(B,) mean brightness. Differentiable when ``images`` is a (B, 3, H, W) tensor; also takes PIL images."""
    if not torch.is_tensor(images):
        import numpy as np

        images = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
                              for im in images])
    assert len(images) == len(prompts), "one prompt per image"
    return images.float().mean(dim=(1, 2, 3))


def make_context(pipe: Any, out_dir: Path, seed: int = 0, artifacts: Callable[[str], Path] | None = None,
                 pairs: PairData | None = None, needs: frozenset[str] | None = None
                 ) -> tuple[TrainContext, list[tuple[int, dict[str, float]]]]:
    """A CPU ``TrainContext`` over synthetic data; returns it and the list its ``log`` appends to.

    With ``needs`` (a method's ``needs()``), the inputs it does not declare refuse to be read.
    """
    logs: list[tuple[int, dict[str, float]]] = []
    pairs = pairs if pairs is not None else pair_data(pipe)
    images = image_data(pipe)
    inputs = {PAIRS: lambda: pairs, IMAGES: lambda: images, PROMPTS: lambda: list(CAPTIONS), REWARD: lambda: toy_reward}

    def no_artifact(method_id: str) -> Path:
        raise AssertionError(f"no artifact for {method_id!r} in this test")

    def undeclared(name: str) -> Callable[[], Any]:
        def read() -> Any:
            raise AssertionError(f"train read ctx.{name}, which the method's needs() does not declare")

        return read

    if needs is not None:
        inputs = {name: get if name in needs else undeclared(name) for name, get in inputs.items()}
    ctx = TrainContext(pipe=pipe, device=torch.device("cpu"), dtype=torch.float32, out_dir=Path(out_dir), seed=seed,
                       log=lambda step, values: logs.append((step, dict(values))), artifacts=artifacts or no_artifact,
                       **inputs)
    return ctx, logs


def short_config(cls: type[Method], model: str = "tiny", **overrides: Any) -> MethodConfig:
    """The method's per-model defaults, shrunk by ``SHORT_TRAIN`` where it has those fields, then ``overrides``."""
    names = {f.name for f in dataclasses.fields(cls.Config)}
    values = {**cls.defaults.get(model, {}), **{k: v for k, v in SHORT_TRAIN.items() if k in names}, **overrides}
    return cls.Config(**values)


def train_method(method: Method, pipe: Any, root: Path, logs: list | None = None) -> Callable[[str], Path]:
    """Train ``method`` into ``root/<id>`` after the methods it stacks on (short configs, each in its own
    folder), each seeing only the inputs its ``needs()`` declares; return the ``artifacts`` lookup.
    ``logs``, when given, receives this method's train log."""
    root = Path(root)
    done: dict[str, Path] = {}

    def artifacts(method_id: str) -> Path:
        if method_id not in done:
            raise AssertionError(f"{method_id!r} was not trained before it was asked for")
        return done[method_id]

    def train(m: Method, sink: list | None) -> None:
        for need in m.requires():
            if need not in done:
                cls = METHODS.get(need)
                train(cls(short_config(cls)), None)
        out = root / m.id
        out.mkdir(parents=True, exist_ok=True)
        if m.trains:
            ctx, run_logs = make_context(pipe, out, artifacts=artifacts, needs=m.needs())
            m.train(ctx)
            if sink is not None:
                sink.extend(run_logs)
        done[m.id] = out

    train(method, logs)
    return artifacts
