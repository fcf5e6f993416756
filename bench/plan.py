"""Plan and preflight: turn what the user asked for into run specs, and check everything before work.

Every name is resolved and every setting type-checked here; any problem raises ``UsageError``
(exit code 2) before anything is trained, sampled, scored or written.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import methods
import metrics
from bench import models, suites
from bench.config import SamplerConfig, UsageError, build_config, canonical_json, config_hash, parse_list, parse_seeds
from bench.store import Store, StoreError
from methods.core.api import Method, MethodConfig

DEFAULT_REWARDS = {
    "tiny": ["oracle", "fidelity", "tiny-pickscore"],
    "sd15": ["pickscore", "hpsv21", "imagereward", "clip", "aesthetic"],
    "sdxl": ["pickscore", "hpsv21", "imagereward", "clip", "aesthetic"],
}
SAMPLER_DEFAULTS = {
    "tiny": {"name": "ddim", "steps": 20, "batch": 256},
    "sd15": {"name": "pipeline", "steps": 50, "batch": 8},  # diffusers' default scheduler and steps
    "sdxl": {"name": "pipeline", "steps": 50, "batch": 4},
}


@dataclass(frozen=True)
class DataConfig:
    """Where training data comes from for real models (the tiny world makes its own)."""

    pickapic: str = ""  # folder of Pick-a-Pic v2 parquet shards
    captioned: str = ""  # parquet shard(s) with caption + jpg_0 for label-free methods


PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # --precision -> torch dtype name


def _precision_key(precision: str) -> dict[str, str]:
    """What precision adds to a run's identity: nothing for fp32, so fp32 runs keep their ids."""
    return {} if precision == "fp32" else {"precision": precision}


def resolve_precision(precision: str, device: str, family: str) -> str:
    """``auto``: bf16 for real models on a GPU (what the official recipes train in), else fp32."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") and family != "tiny" else "fp32"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: unknown; available: auto, {', '.join(PRECISIONS)}")
    return precision


@dataclass(frozen=True)
class RunSpec:
    method: str
    cls: type[Method]
    cfg: MethodConfig
    model: models.ModelSpec
    model_revision: str
    sampler: SamplerConfig
    run_id: str
    artifact_hash: str
    sampler_key: str
    sample: bool = True  # False for a method run only to train what another one stacks on
    precision: str = "fp32"  # PRECISIONS key: the dtype the pipeline runs and autocast computes in

    @property
    def config(self) -> dict[str, Any]:
        return {"method": self.method, "method_config": dataclasses.asdict(self.cfg), "model": self.model.name,
                "model_revision": self.model_revision, "sampler": dataclasses.asdict(self.sampler),
                **_precision_key(self.precision)}

    @property
    def config_json(self) -> str:
        return canonical_json(self.config)


@dataclass(frozen=True)
class Plan:
    runs: list[RunSpec]
    suite: suites.Suite
    seeds: list[int]
    rewards: list[str]
    db: Path
    data: DataConfig
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)
    precision: str = "fp32"

    @property
    def torch_dtype(self) -> Any:
        """The torch dtype of ``precision``: the pipeline's weights and training's autocast."""
        import torch

        return getattr(torch, PRECISIONS[self.precision])

    @property
    def results_dir(self) -> Path:
        """The db's folder, absolute like the store's root: image paths are stored relative to it."""
        return self.db.absolute().parent


def _model_revision(spec: models.ModelSpec) -> str:
    if spec.tiny_preset:
        from bench.tiny import prepare

        return f"tiny-{spec.tiny_preset}@{prepare.preset_hash(prepare.preset(spec.tiny_preset))}"
    return models.revision(spec)


def method_spec(method_id: str, cfg: MethodConfig, model: models.ModelSpec, revision: str,
                sampler: SamplerConfig, sample: bool = True, parents: dict[str, str] | None = None,
                precision: str = "fp32") -> RunSpec:
    cls = methods.get(method_id)
    identity = {"method": method_id, "cfg": dataclasses.asdict(cfg), "model": revision,
                "sampler": sampler.key_fields(), "parents": parents or {}, **_precision_key(precision)}
    train_parents = (parents or {}) if cls.trains_on_parents else {}
    train_identity = {"method": method_id, "train": cfg.train_fields(), "model": revision, "parents": train_parents,
                      **_precision_key(precision)}
    model_short = model.name if model.tiny_preset or "/" not in model.name else model.name.split("/")[-1]
    return RunSpec(method_id, cls, cfg, model, revision, sampler,
                   run_id=f"{method_id}-{Path(model_short).name}-{config_hash(identity)[:8]}",
                   artifact_hash=config_hash(train_identity),
                   sampler_key=config_hash([revision, sampler.key_fields(), *_precision_key(precision).values()]),
                   sample=sample, precision=precision)


def make_plan(method_names: str | None, model: str, suite: str, seeds: str, rewards: str | None, db: Path,
              sets: dict[str, dict[str, str]], device: str = "cpu", vae: str | None = None,
              precision: str = "auto") -> Plan:
    seed_list = parse_seeds(seeds)
    chosen = parse_list(method_names, methods.available(), "methods") or methods.available()
    try:
        spec = models.resolve(model, vae)
        suite_obj = suites.load(suite)
    except (models.ModelError, suites.SuiteError) as e:
        raise UsageError(str(e)) from None
    reward_list = parse_list(rewards, metrics.available(), "rewards") or DEFAULT_REWARDS[spec.family]
    known = set(methods.available()) | {"sampler", "data"}
    for section in sets:
        if section not in known:
            raise UsageError(f"--set {section}.…: unknown section {section!r}; available: {', '.join(sorted(known))}")
    sampler = build_config(SamplerConfig, SAMPLER_DEFAULTS[spec.family], sets.get("sampler", {}), "sampler")
    data = build_config(DataConfig, {}, sets.get("data", {}), "data")
    revision = _model_revision(spec)
    precision = resolve_precision(precision, device, spec.family)
    notes = []
    if "base" not in chosen:
        chosen = ["base", *chosen]
        notes.append("added 'base': every method is compared with it on the same prompts and seeds")

    specs: dict[str, RunSpec] = {}

    def add(mid: str, sample: bool, stack: tuple[str, ...] = ()) -> RunSpec:
        if mid in stack:
            raise UsageError(f"method stacking forms a cycle: {' -> '.join((*stack, mid))}")
        if mid in specs:
            return specs[mid]
        cls = methods.get(mid)
        cfg = build_config(cls.Config, cls.defaults.get(spec.family, {}), sets.get(mid, {}), mid)
        parents = {}
        for need in cls(cfg).requires():
            if need not in methods.available():
                raise UsageError(f"{mid} stacks on unknown method {need!r}; available: {', '.join(methods.available())}")
            parents[need] = add(need, sample=need in chosen, stack=(*stack, mid)).artifact_hash
        specs[mid] = method_spec(mid, cfg, spec, revision, sampler, sample, parents, precision)
        return specs[mid]

    for mid in chosen:
        add(mid, sample=True)
    for mid in specs:  # a dependency that was also asked for is sampled
        if mid in chosen and not specs[mid].sample:
            specs[mid] = dataclasses.replace(specs[mid], sample=True)
    return Plan(list(specs.values()), suite_obj, seed_list, reward_list, Path(db), data, device, notes, precision)


def preflight(plan: Plan) -> None:
    """Check what can be checked before any work: the store is writable, reward weights are present."""
    try:
        Store.check_writable(plan.db)
    except StoreError as e:
        raise UsageError(str(e)) from None
    for rid in plan.rewards:
        reward = metrics.get(rid)(reward_weights(plan, rid))
        if plan.runs[0].model.tiny_preset and rid in TINY_REWARDS:
            continue  # built with the tiny world on first use
        missing = reward.missing()
        if missing:
            raise UsageError(f"reward {rid!r} is missing files: {', '.join(missing)}"
                             + (f"\n{reward.fetch_hint}" if getattr(reward, "fetch_hint", "") else ""))
    from methods.core.pairs import PACKAGES

    for r in plan.runs:
        package = PACKAGES.get(getattr(r.cfg, "optimizer", ""))
        if package and importlib.util.find_spec(package) is None:
            raise UsageError(f"{r.method} trains with optimizer {r.cfg.optimizer!r}, which needs the {package} "
                             f"package: pip install {package}, or --set {r.method}.optimizer=adamw")
    family = plan.runs[0].model.family
    needs_pairs = [r.method for r in plan.runs if r.cls.trains]
    if family != "tiny" and needs_pairs and not plan.data.pickapic:
        raise UsageError(f"methods {', '.join(needs_pairs)} train on preference data: pass "
                         f"--set data.pickapic=DIR (a folder of Pick-a-Pic v2 parquet shards)")


TINY_REWARDS = {"fidelity": "rewards/fidelity", "tiny-pickscore": "rewards/tiny-pickscore"}


def reward_weights(plan: Plan, reward_id: str) -> Path | None:
    """Where a reward's weights live: the tiny world's folder for its own rewards."""
    if reward_id in TINY_REWARDS:
        from bench.tiny import prepare

        preset = plan.runs[0].model.tiny_preset or "default"
        return prepare.world_dir(plan.results_dir, preset) / TINY_REWARDS[reward_id]
    return None
