"""What a method's ``train`` may ask for, built lazily and cached: the bench side of ``TrainContext``.

Preference pairs, captioned images, training prompts and the in-the-loop reward come from the tiny
world for tiny models and from local files (``--set data.pickapic=DIR``) for real ones. Latents and
text embeddings are computed once per (data, model) and cached under ``<results>/cache``.

With several processes, the main process builds and caches each of these first, then the others
load them; every process gets ``ctx.dist`` to split each training batch (methods/core/parallel.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from bench import plan as planning
from bench import prefdata
from bench.distributed import ONE, Processes
from bench.registry import REWARDS
from bench.tiny.files import WorldFiles
from methods.core import diffusion
from methods.core.api import ImageData, PairData, TrainContext
from methods.core.types import IMAGES, PAIRS, PROMPTS, REWARD

Progress = Callable[[str, int, int], None]


class TrainingInputs:
    """``world()`` ensures the tiny world is built and returns its files (None for a real model)."""

    def __init__(self, plan: planning.Plan, pipe: Callable[[], Any], world: Callable[[], WorldFiles | None],
                 progress: Progress, procs: Processes = ONE):
        self.plan, self._pipe, self._world, self.progress, self.procs = plan, pipe, world, progress, procs
        self.cache = plan.results_dir / "cache"
        self._pairs: dict[bool, PairData] = {}
        self._images: ImageData | None = None

    def _preset(self):
        from bench.tiny import prepare

        return prepare.preset(self.plan.model.tiny_preset)

    def _pickapic_source(self) -> Path:
        world = self._world()
        if world is not None:
            from bench.tiny import data

            return data.ensure_pairs(world, self._pipe(), self._preset().n_pairs, progress=self.progress)
        return Path(self.plan.data.pickapic)

    def pairs(self, keep_ties: bool = False) -> PairData:
        if keep_ties not in self._pairs:
            with self.procs.main_first():  # one process writes the data and its cache
                raw = prefdata.read_pickapic(self._pickapic_source(), keep_ties=keep_ties)
                pipe = self._pipe()
                self._pairs[keep_ties] = prefdata.encode_pairs(pipe, raw, self.plan.device,
                                                               diffusion.resolution(pipe), self.cache)
        return self._pairs[keep_ties]

    def images(self) -> ImageData:
        if self._images is None:
            with self.procs.main_first():  # one process writes the data and its cache
                self._images = self._load_images()
        return self._images

    def _load_images(self) -> ImageData:
        world = self._world()
        if world is not None:
            from bench.tiny import data

            source = data.ensure_captioned(world)
        elif self.plan.data.captioned:
            source = Path(self.plan.data.captioned)
        else:
            raise ValueError("this method trains on captioned images: pass --set data.captioned=PARQUET")
        raw = prefdata.read_captioned(source)
        pipe = self._pipe()
        return prefdata.encode_images_data(pipe, raw, self.plan.device, diffusion.resolution(pipe), self.cache)

    def prompts(self) -> list[str]:
        if self._world() is not None:
            from bench import suites

            return [p.text for p in suites.load("tiny-train").prompts]
        return sorted(set(self.pairs().captions))

    def ensure_reward_weights(self, reward_id: str) -> None:
        """Build a tiny-world reward learned from the world's data (the others are built with the world)."""
        world = self._world()
        if reward_id == "tiny-pickscore" and world is not None:
            from bench.tiny import data

            p = self._preset()
            data.ensure_pickscore(world, self._pipe(), p.n_pairs, p.pickscore_steps, progress=self.progress)

    def reward(self) -> Callable[[list, list[str]], torch.Tensor]:
        """The in-the-loop reward model: the model family's (tiny-pickscore in the tiny world, never the oracle)."""
        rid = self.plan.model.defaults.loop_reward
        with self.procs.main_first():  # the tiny world's reward is trained on first use
            self.ensure_reward_weights(rid)
        return REWARDS.get(rid)(self.plan.reward_weights(rid), self.plan.device).load()

    def context(self, spec: planning.RunSpec, out_dir: Path, artifacts: Callable[[str], Path],
                log: Callable[[int, dict[str, float]], None],
                snapshot: Callable[[int], Path | None] = lambda step: None) -> TrainContext:
        """What ``spec``'s method may train on: the inputs it declares in ``needs()``; asking for another
        one fails with a message naming the declaration it lacks."""
        keep_ties = bool(getattr(spec.cfg, "keep_ties", False))
        needs = spec.cls(spec.cfg).needs()
        offered = {PAIRS: lambda: self.pairs(keep_ties), IMAGES: self.images, PROMPTS: self.prompts,
                   REWARD: self.reward}
        inputs = {need: fn if need in needs else _undeclared(spec.method, need) for need, fn in offered.items()}
        return TrainContext(
            pipe=self._pipe(), device=torch.device(self.plan.device), dtype=self.plan.torch_dtype, out_dir=out_dir,
            seed=int(getattr(spec.cfg, "seed", 0)), pairs=inputs[PAIRS], images=inputs[IMAGES],
            prompts=inputs[PROMPTS], reward=inputs[REWARD], log=log,
            progress=lambda done, total: self.progress(f"train {spec.method}", done, total), artifacts=artifacts,
            dist=self.procs.data_parallel(), snapshot=snapshot)


def _undeclared(method_id: str, need: str) -> Callable[[], Any]:
    def refuse() -> Any:
        raise RuntimeError(f"{method_id} asked for {need} but its needs() does not declare {need!r}: preflight "
                           f"checks only what a method declares")

    return refuse
