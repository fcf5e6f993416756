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

from bench import models, suites
from bench.config import SamplerConfig, UsageError, build_config, canonical_json, config_hash, parse_list, parse_seeds
from bench.registry import METHODS, REWARDS
from bench.store import NotAResultsStore, Store, StoreError
from bench.tiny.files import REWARDS as TINY_REWARDS
from bench.tiny.files import WorldFiles
from methods.core.api import Method, MethodConfig
from methods.core.types import IMAGES, PAIRS, PROMPTS, REWARD


@dataclass(frozen=True)
class DataConfig:
    """Where training data comes from for real models (the tiny world makes its own)."""

    pickapic: str = ""  # folder of Pick-a-Pic v2 parquet shards
    captioned: str = ""  # parquet shard(s) with caption + jpg_0 for label-free methods


def _precision_key(precision: str) -> dict[str, str]:
    """What precision adds to a run's identity: nothing for fp32, so fp32 runs keep their ids."""
    return {} if precision == "fp32" else {"precision": precision}


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
    precision: str = "fp32"  # models.PRECISIONS key: the dtype the pipeline runs and autocast computes in
    train_seed: int | None = None  # a trained run's training seed (its config's ``seed``); None: trains nothing
    arm: str = ""  # runs that differ only in training seed share it (replicates); a lone run: its run_id
    parent_runs: tuple[tuple[str, str], ...] = ()  # (method, run_id) of the runs it stacks on, same train seed
    reward_relations: tuple[tuple[str, str, str], ...] = ()  # (reward, relation, reason): not held out from it
    snapshot_every: int = 0  # the artifact also holds the model every this many steps (--eval-every)
    checkpoint_step: int | None = None  # an intermediate checkpoint's run: sampled with the model of this step
    final_run: str = ""  # ... of this run's training
    prompt_ids: tuple[str, ...] | None = None  # only these prompts of the suite (None: all)
    weights: Any = None  # bench.published.Weights: published weights sampled instead of training (METHOD@WEIGHTS)
    weights_source: dict[str, Any] | None = field(default=None, hash=False)  # what `runs` says of them

    @property
    def method_id(self) -> str:
        """The registered method (``method`` is its label: ``dpo@dpo-sdxl`` for published weights)."""
        return self.cls.id

    @property
    def trains(self) -> bool:
        """Whether this run has a training phase (published weights have none; an intermediate checkpoint's
        is its final run's)."""
        return self.cls.trains and self.weights is None and self.checkpoint_step is None

    @property
    def config(self) -> dict[str, Any]:
        return {"method": self.method, "method_config": dataclasses.asdict(self.cfg), "model": self.model.name,
                "model_revision": self.model_revision, "sampler": dataclasses.asdict(self.sampler),
                **_precision_key(self.precision),
                **({"published_weights": self.weights_source, "trains": False} if self.weights_source else {}),
                **({"checkpoint_step": self.checkpoint_step, "final_run": self.final_run,
                    "prompt_ids": list(self.prompt_ids or ())} if self.checkpoint_step is not None else {})}

    @property
    def settings(self) -> dict[str, Any]:
        """The sampler settings its images are drawn under; a method run is compared with a base run drawn
        under the same ones."""
        return sampler_settings(self.cfg, self.sampler)

    @property
    def config_json(self) -> str:
        return canonical_json(self.config)

    @property
    def config_hash(self) -> str:
        """The hash of ``config_json``: what a query can recompute from the stored text."""
        return config_hash(self.config)


@dataclass(frozen=True)
class Plan:
    model: models.ModelSpec
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

        return getattr(torch, models.PRECISIONS[self.precision])

    @property
    def results_dir(self) -> Path:
        """The db's folder, absolute like the store's root: image paths are stored relative to it."""
        return self.db.absolute().parent

    @property
    def world(self) -> WorldFiles | None:
        """The tiny world's files (built or not) for a tiny model, else None."""
        if self.model.tiny_preset is None:
            return None
        from bench.tiny import prepare

        return prepare.world_files(self.results_dir, self.model.tiny_preset)

    def reward_weights(self, reward_id: str) -> Path | None:
        """Where a reward's weights live: the tiny world's folder for its own rewards, else the reward finds them."""
        world = self.world
        return world.reward(reward_id) if world is not None and reward_id in TINY_REWARDS else None


def available_devices() -> list[str]:
    """The torch devices this machine has: cpu, then each GPU (cuda, cuda:0, ...) and mps where present."""
    import torch

    out = ["cpu"]
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out += ["cuda"] * bool(n_cuda) + [f"cuda:{i}" for i in range(n_cuda)]
    if torch.backends.mps.is_available():
        out.append("mps")
    return out


def check_device(device: str, processes: int = 1) -> None:
    """Raise UsageError unless ``device`` (after ``models.auto_device``) exists here, naming the devices that
    do; with several processes on a GPU, each needs its own."""
    import torch

    available = available_devices()
    listed = f"available here: {', '.join(available)} (or auto)"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):  # torch's message for a malformed name lists every type it knows
        raise UsageError(f"unknown --device {device!r}; {listed}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {device!r}: the harness runs on cpu, cuda or mps; {listed}")
    names = {dev.type if dev.index is None else f"{dev.type}:{dev.index}"} | ({dev.type} if dev.index == 0 else set())
    if not names & set(available):  # cuda:0 is cuda, cpu:0 is cpu, mps:0 is mps
        raise UsageError(f"--device {device!r} does not exist on this machine; {listed}")
    n_gpus = sum(d.startswith("cuda:") for d in available)
    if dev.type == "cuda" and processes > 1 and processes > n_gpus:
        raise UsageError(f"--processes {processes} on --device {device!r} needs a GPU per process; this machine "
                         f"has {n_gpus}")


def _model_revision(spec: models.ModelSpec) -> str:
    if spec.tiny_preset:
        from bench.tiny import prepare

        return prepare.revision(spec.tiny_preset)
    return models.revision(spec)


def sampler_settings(cfg: MethodConfig, sampler: SamplerConfig) -> dict[str, Any]:
    """What a comparison with base must hold fixed: guidance scale, scheduler and steps (the resolution is
    the model's)."""
    return {"guidance_scale": cfg.guidance_scale, **sampler.key_fields()}


def describe_settings(settings: dict[str, Any]) -> str:
    """'guidance 8.5, ddim, 20 steps'."""
    return f"guidance {settings['guidance_scale']:g}, {settings['name']}, {settings['steps']} steps"


def method_spec(method_id: str, cfg: MethodConfig, model: models.ModelSpec, revision: str,
                sampler: SamplerConfig, sample: bool = True, parents: dict[str, RunSpec] | None = None,
                precision: str = "fp32", snapshot_every: int = 0) -> RunSpec:
    """The run of ``method_id`` with ``cfg``; ``parents``: the runs it stacks on (method -> spec)."""
    cls = METHODS.get(method_id)
    parents = parents or {}
    parent_hashes = {m: p.artifact_hash for m, p in parents.items()}
    identity = {"method": method_id, "cfg": dataclasses.asdict(cfg), "model": revision,
                "sampler": sampler.key_fields(), "parents": parent_hashes, **_precision_key(precision)}
    train_parents = parent_hashes if cls.trains_on_parents else {}
    snapshot_every = snapshot_every if cls.trains and hasattr(cfg, "steps") and snapshot_every < cfg.steps else 0
    train_identity = {"method": method_id, "train": cfg.train_fields(), "model": revision, "parents": train_parents,
                      **_precision_key(precision), **({"snapshot_every": snapshot_every} if snapshot_every else {})}
    model_short = model.name if model.tiny_preset or "/" not in model.name else model.name.split("/")[-1]
    run_id = f"{method_id}-{Path(model_short).name}-{config_hash(identity)[:8]}"
    train_seed = int(cfg.seed) if cls.trains and hasattr(cfg, "seed") else None
    arm = run_id
    if train_seed is not None:  # the identity without the training seed, stacked on the parents' arms
        arm_identity = {**identity, "cfg": {k: v for k, v in identity["cfg"].items() if k != "seed"},
                        "parents": {m: p.arm for m, p in parents.items()}}
        arm = f"{method_id}-{Path(model_short).name}-arm-{config_hash(arm_identity)[:8]}"
    settings = sampler_settings(cfg, sampler)
    return RunSpec(method_id, cls, cfg, model, revision, sampler, run_id=run_id,
                   artifact_hash=config_hash(train_identity),
                   sampler_key=config_hash([revision, settings, *_precision_key(precision).values()]),
                   sample=sample, precision=precision, train_seed=train_seed, arm=arm,
                   parent_runs=tuple(sorted((m, p.run_id) for m, p in parents.items())), snapshot_every=snapshot_every)


def checkpoint_runs(final: RunSpec, prompt_ids: tuple[str, ...]) -> list[RunSpec]:
    """The runs of ``final``'s intermediate checkpoints (every ``snapshot_every`` steps before the last), each
    sampled on ``prompt_ids`` only; the curve's last point is ``final`` itself on those prompts."""
    every = final.snapshot_every
    out = []
    for step in range(every, final.cfg.steps, every) if every else ():
        identity = {"final_run": final.run_id, "artifact": final.artifact_hash, "step": step, "prompts": prompt_ids}
        run_id = f"{final.run_id}-step{step}-{config_hash(identity)[:6]}"
        out.append(dataclasses.replace(final, run_id=run_id, arm=run_id, train_seed=None, checkpoint_step=step,
                                       final_run=final.run_id, prompt_ids=prompt_ids, snapshot_every=0))
    return out


def eval_subset(suite: suites.Suite, k: int) -> tuple[str, ...]:
    """``k`` prompts of the suite, a fixed choice (by the sha256 of suite and prompt id): the same in every
    run and on every machine, whatever the suite's order."""
    import hashlib

    ranked = sorted(suite.prompts, key=lambda p: hashlib.sha256(f"{suite.name}\x1f{p.prompt_id}".encode()).hexdigest())
    return tuple(sorted(p.prompt_id for p in ranked[:k]))


def make_plan(method_names: str | None, model: str, suite: str, seeds: str, rewards: str | None, db: Path,
              sets: dict[str, dict[str, str]], device: str = "cpu", vae: str | None = None,
              precision: str = "auto", train_seeds: str | None = None, eval_every: int = 0,
              eval_prompts: int = 50) -> Plan:
    seed_list = parse_seeds(seeds)
    replicate_seeds = parse_seeds(train_seeds, "--train-seeds", MAX_TRAIN_SEEDS) if train_seeds else None
    items = [x.strip() for x in (method_names or "").split(",") if x.strip()]
    published = [x for x in items if "@" in x]
    plain = ",".join(x for x in items if "@" not in x)
    chosen = (parse_list(plain, METHODS.available(), "methods") if plain
              else [] if published else [m for m in METHODS.available() if METHODS.get(m).in_default_run])
    try:
        spec = models.resolve(model, vae)
        suite_obj = suites.load(suite)
    except (models.ModelError, suites.SuiteError) as e:
        raise UsageError(str(e)) from None
    reward_list = parse_list(rewards, REWARDS.available(), "rewards") or list(spec.defaults.rewards)
    known = set(METHODS.available()) | {"sampler", "data"}
    for section in sets:
        if section not in known:
            raise UsageError(f"--set {section}.…: unknown section {section!r}; available: {', '.join(sorted(known))}")
    sampler = build_config(SamplerConfig, spec.defaults.sampler, sets.get("sampler", {}), "sampler")
    data = build_config(DataConfig, {}, sets.get("data", {}), "data")
    revision = _model_revision(spec)
    try:
        precision = spec.defaults.precision(precision, device)
    except models.ModelError as e:
        raise UsageError(str(e)) from None
    notes = []
    if "base" not in chosen:
        chosen = ["base", *chosen]
        notes.append("added 'base': every method is compared with it on the same prompts and seeds")

    specs: dict[tuple[str, int | None], RunSpec] = {}

    def add(mid: str, seed: int | None, stack: tuple[str, ...] = ()) -> RunSpec:
        """The run of ``mid`` trained with ``seed`` (None: its config's), with the runs it stacks on."""
        if mid in stack:
            raise UsageError(f"method stacking forms a cycle: {' -> '.join((*stack, mid))}")
        cls = METHODS.get(mid)
        key = (mid, seed if cls.trains else None)
        if key in specs:
            return specs[key]
        cfg = build_config(cls.Config, cls.defaults.get(spec.family, {}), sets.get(mid, {}), mid)
        if key[1] is not None:
            cfg = _with_train_seed(mid, cfg, key[1], sets.get(mid, {}))
        parents = {}
        for need in cls(cfg).requires():
            if need not in METHODS.available():
                raise UsageError(f"{mid} stacks on unknown method {need!r}; available: {', '.join(METHODS.available())}")
            parents[need] = add(need, seed, stack=(*stack, mid))
        specs[key] = method_spec(mid, cfg, spec, revision, sampler, mid in chosen, parents, precision,
                                 eval_every if mid in chosen else 0)
        return specs[key]

    for mid in chosen:
        for seed in replicate_seeds or [None]:
            add(mid, seed)
    for item in published:
        run = published_spec(item, spec, revision, sampler, precision, sets)
        if any(r.run_id == run.run_id for r in specs.values()):
            raise UsageError(f"--methods names the weights of {item!r} twice")
        if (run.method, None) in specs:  # two files of one name: the label takes the fingerprint's start
            run = dataclasses.replace(run, method=f"{run.method}~{run.weights_source['fingerprint'][:6]}")
        specs[(run.method, None)] = run
    if eval_every < 0 or eval_prompts < 1:
        raise UsageError(f"--eval-every must be >= 0 and --eval-prompts >= 1, got {eval_every} and {eval_prompts}")
    subset = eval_subset(suite_obj, eval_prompts) if eval_every else ()
    checkpoints = [c for r in list(specs.values()) if r.sample for c in checkpoint_runs(r, subset)]
    runs = _with_matched_bases(list(specs.values()) + checkpoints, spec, revision, sampler, precision, sets, notes)
    runs = [dataclasses.replace(r, reward_relations=_reward_relations(r, runs, spec, reward_list)) for r in runs]
    return Plan(spec, runs, suite_obj, seed_list, reward_list, Path(db), data, device, notes, precision)


MAX_TRAIN_SEEDS = 100  # replicates per method: each is a whole training run


def published_spec(item: str, model: models.ModelSpec, revision: str, sampler: SamplerConfig, precision: str,
                   sets: dict[str, dict[str, str]]) -> RunSpec:
    """The run of ``METHOD@WEIGHTS``: the method's sampling rule with published weights (a catalogue name, a
    hub repo id in the local cache, a folder or a file) instead of its training. The weights' fingerprint
    is part of the run's identity; the label ``METHOD@NAME`` is its ``method`` in the store and report."""
    from bench import checkpoints, published

    method_id, _, source = item.partition("@")
    if method_id not in METHODS.available():
        raise UsageError(f"unknown method {method_id!r} in {item!r}; available: {', '.join(METHODS.available())}")
    cls = METHODS.get(method_id)
    takes = [m for m in METHODS.available() if getattr(METHODS.get(m), "takes_weights", False)]
    if not getattr(cls, "takes_weights", False):
        raise UsageError(f"{item!r}: {method_id} cannot sample published weights; the methods that can: "
                         f"{', '.join(takes)} (finetuned for a fine-tune that is none of them)")
    if not source.strip():
        raise UsageError(f"{item!r}: name the weights after @ (a catalogue name, see `bench list checkpoints`; a "
                         "hub repo id; a folder or a file)")
    entry = checkpoints.CATALOGUE.get(source) or _catalogue_by_repo(source)
    if entry is not None and model.tiny_preset is None and entry.base != model.family:
        raise UsageError(f"{item!r}: {entry.name} is a {entry.base} checkpoint; pass --model {entry.base}")
    try:
        weights = published.locate(entry or source)
        fingerprint = published.fingerprint(weights)
    except published.PublishedWeightsError as e:
        raise UsageError(str(e)) from None
    cfg = build_config(cls.Config, cls.defaults.get(model.family, {}), sets.get(method_id, {}), method_id)
    name = entry.name if entry is not None else _weights_name(Path(source.rstrip("/")))
    identity = {"method": method_id, "cfg": dataclasses.asdict(cfg), "model": revision,
                "sampler": sampler.key_fields(), "weights": fingerprint, **_precision_key(precision)}
    model_short = model.name if model.tiny_preset or "/" not in model.name else model.name.split("/")[-1]
    run_id = f"{method_id}-{Path(model_short).name}-{config_hash(identity)[:8]}"
    settings = sampler_settings(cfg, sampler)
    described = {"source": source, "checkpoint": entry.name if entry else None, "layout": weights.layout,
                 "lora_layout": weights.lora_layout, "fingerprint": fingerprint, "files": weights.relative()}
    return RunSpec(f"{method_id}@{name}", cls, cfg, model, revision, sampler, run_id=run_id,
                   artifact_hash=f"published-{fingerprint[:16]}",
                   sampler_key=config_hash([revision, settings, *_precision_key(precision).values()]),
                   sample=True, precision=precision, arm=run_id, weights=weights, weights_source=described)


GENERIC_WEIGHT_FILES = ("pytorch_lora_weights", "adapter_model", "diffusion_pytorch_model", "model")


def _weights_name(path: Path) -> str:
    """A readable name of local weights: the folder's name, a file's stem (its folder's name for the generic
    names diffusers and peft write)."""
    if path.suffix and path.stem in GENERIC_WEIGHT_FILES:
        return path.parent.name
    return path.stem if path.suffix else path.name


def _catalogue_by_repo(source: str) -> Any:
    """The catalogue entry of a hub repo id, where exactly one entry has that repo."""
    from bench import checkpoints

    matches = [c for c in checkpoints.CATALOGUE.values() if c.repo == source]
    if len(matches) > 1:
        raise UsageError(f"{source} holds several catalogued checkpoints ({', '.join(c.name for c in matches)}); "
                         "name one of them after @")
    return matches[0] if matches else None


def _with_train_seed(mid: str, cfg: MethodConfig, seed: int, sets: dict[str, str]) -> MethodConfig:
    if not hasattr(cfg, "seed"):
        raise UsageError(f"--train-seeds: {mid} trains without a seed setting; it cannot be replicated")
    if "seed" in sets:
        raise UsageError(f"--train-seeds and --set {mid}.seed both set {mid}'s training seed; use one")
    return dataclasses.replace(cfg, seed=seed)


def _with_matched_bases(runs: list[RunSpec], model: models.ModelSpec, revision: str, sampler: SamplerConfig,
                        precision: str, sets: dict[str, dict[str, str]], notes: list[str]) -> list[RunSpec]:
    """Add a base run under each sampler setting a sampled method run uses and no base run does (sdpo's
    guidance 8.5 on sd15, a --set that changes a method's guidance): each comparison is like for like."""
    base_keys = {r.sampler_key for r in runs if r.method == "base"}
    added: list[RunSpec] = []
    for r in runs:
        if not r.sample or r.sampler_key in base_keys:
            continue
        cls = METHODS.get("base")
        cfg = build_config(cls.Config, cls.defaults.get(model.family, {}), sets.get("base", {}), "base")
        cfg = dataclasses.replace(cfg, guidance_scale=r.cfg.guidance_scale)
        control = method_spec("base", cfg, model, revision, sampler, True, None, precision)
        base_keys.add(control.sampler_key)
        added.append(control)
        notes.append(f"added a base run at {describe_settings(control.settings)} ({control.run_id}): {r.method} "
                     "samples under these settings, and is compared with base under the same ones")
    return runs + added


def _verifier(run: RunSpec, model: models.ModelSpec) -> str | None:
    """The reward that picks among the run's candidate images (best-of-n), or None."""
    method = run.cls(run.cfg)
    return method.verifier(model.defaults.loop_reward) if len(method.candidate_seeds(0)) > 1 else None


def _reward_relations(run: RunSpec, runs: list[RunSpec], model: models.ModelSpec,
                      rewards: list[str]) -> tuple[tuple[str, str, str], ...]:
    """The rewards ``run`` is not held out from: the in-loop reward it optimised (trained-on), rewards learned
    from the preference labels it trained on (same-data), and those of the runs it stacks on."""
    out: dict[str, tuple[str, str]] = {}
    if run.cls.trains:  # published weights of a trained method: trained on the data the method trains on
        needs = run.cls(run.cfg).needs()
        source = "tiny-pickapic" if model.tiny_preset else "pickapic-v2"  # what PAIRS are (bench/training.py)
        if PAIRS in needs:
            for rid in rewards:
                if REWARDS.get(rid).learned_from == source:
                    out[rid] = ("same-data", f"learned from {source}, whose preference labels {run.method} trained on")
        if REWARD in needs:
            loop = model.defaults.loop_reward
            out[loop] = ("trained-on", f"{run.method} optimised it during training (its in-loop reward)")
    verifier = _verifier(run, model)
    if verifier is not None:
        out[verifier] = ("trained-on", f"{run.method} keeps the candidate it scores best")
    by_id = {r.run_id: r for r in runs}
    for method, parent_id in run.parent_runs:
        for rid, relation, why in _reward_relations(by_id[parent_id], runs, model, rewards):
            out.setdefault(rid, (relation, f"through {method}: {why}"))
    return tuple((rid, rel, why) for rid, (rel, why) in sorted(out.items()))


def preflight(plan: Plan) -> None:
    """Check what can be checked before any work: the store is writable, reward weights, training data and
    optional packages are present."""
    try:
        Store.check_writable(plan.db)
    except StoreError as e:
        raise UsageError(str(e)) from None
    _check_stored(plan)
    for rid in plan.rewards:
        _check_reward(plan, rid)
    for r in plan.runs:
        if r.method_id == "finetuned" and r.weights is None:
            raise UsageError("finetuned evaluates published weights: name them, e.g. --methods finetuned@mapo-sdxl "
                             "(see `bench list checkpoints`)")
        method = r.cls(r.cfg)
        verifier = _verifier(r, plan.model)
        if verifier is not None:
            if verifier not in REWARDS.available():
                raise UsageError(f"{r.method}: unknown verifier {verifier!r}; available: "
                                 f"{', '.join(REWARDS.available())}")
            _check_reward(plan, verifier)
        for package, why in (method.packages() if r.trains else {}).items():
            if importlib.util.find_spec(package) is None:
                raise UsageError(f"{r.method} trains with {why}, which needs the {package} package: pip install "
                                 f"{package}" + (f", or --set {r.method}.optimizer=adamw" if "optimizer" in why else ""))
        if r.trains:
            _check_training_inputs(plan, r.method, method.needs())


def _check_stored(plan: Plan) -> None:
    """An existing store must open (not damaged, not locked for good), and a suite file edited since it
    was run (a line inserted: every later prompt_id names another text) is refused now, not by the store
    after the runs are begun."""
    if not plan.db.is_file():
        return  # a new store
    try:
        stored = Store(plan.db, read_only=True).query("SELECT prompt_id, prompt FROM prompts WHERE suite = ?",
                                                      [plan.suite.name])
    except NotAResultsStore:
        return  # a DuckDB database of the user's: the run adds the tables
    except StoreError as e:
        raise UsageError(str(e)) from None
    texts = dict(zip(stored["prompt_id"], stored["prompt"]))
    changed = [p for p in plan.suite.prompts if texts.get(p.prompt_id, p.text) != p.text]
    if changed:
        p = changed[0]
        raise UsageError(f"suite {plan.suite.name!r} has changed since it was stored in {plan.db}: "
                         f"{len(changed)} prompt id(s) now name another text, e.g. {p.prompt_id} was "
                         f"{texts[p.prompt_id]!r} and now reads {p.text!r}; a changed prompt needs a new id, or "
                         "save the suite under a new file name")


def _check_reward(plan: Plan, rid: str) -> None:
    if plan.world is not None and rid in TINY_REWARDS:
        return  # built with the tiny world on first use
    reward = REWARDS.get(rid)(plan.reward_weights(rid))
    missing = reward.missing()
    if missing:
        raise UsageError(f"reward {rid!r} is missing files: {', '.join(missing)}"
                         + (f"\n{reward.fetch_hint}" if getattr(reward, "fetch_hint", "") else ""))


# Where a real model's training inputs come from (the tiny world makes its own): need -> the data setting.
# Prompts of online methods are the captions of the preference pairs.
DATA_SETTINGS = {PAIRS: ("pickapic", "a folder of Pick-a-Pic v2 parquet shards"),
                 PROMPTS: ("pickapic", "a folder of Pick-a-Pic v2 parquet shards, whose captions are the prompts"),
                 IMAGES: ("captioned", "parquet shard(s) with caption + jpg_0")}


def _check_training_inputs(plan: Plan, method_id: str, needs: frozenset[str]) -> None:
    unknown = sorted(needs - {PAIRS, PROMPTS, IMAGES, REWARD})
    if unknown:
        raise UsageError(f"{method_id} needs {', '.join(unknown)}; the harness provides: {PAIRS}, {PROMPTS}, "
                         f"{IMAGES}, {REWARD}")
    if REWARD in needs:
        _check_reward(plan, plan.model.defaults.loop_reward)
    if plan.world is not None:
        return
    for need in sorted(needs & set(DATA_SETTINGS)):
        setting, what = DATA_SETTINGS[need]
        if not getattr(plan.data, setting):
            raise UsageError(f"{method_id} trains on {need}: pass --set data.{setting}=PATH ({what})")

