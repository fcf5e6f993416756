"""The runner: train what needs training, sample what is missing, score what is unscored, store it.

Each phase skips work that is already done, so a second identical run does nothing, and a run
killed at any point (kill -9) resumes where it stopped:

- train: an artifact is written to a temporary folder (named per process), given a manifest of its
  files' sha256 and renamed when complete; a folder with that artifact hash whose files match its
  manifest means training is done. One that does not (damaged, or written before manifests) is
  named in the log, deleted and trained again, before anything uses it. A file lock
  (``checkpoints/<name>.lock``) lets one process train an artifact while another that needs it
  waits, then uses it;
- sample: only (prompt, seed) pairs without an intact image are drawn (no row, or a file that is
  gone or not the bytes of its stored sha256); PNG files are written (atomic rename, named by their
  sha256) before their rows, in one transaction per batch;
- score: only images without a row for (reward, reward version); one transaction per batch.

Images depend only on (method artifact, prompt, seed), never on batch composition, so a resumed
run stores exactly the rows an uninterrupted one would. Sampling and scoring work on lists of
(prompt, seed) keys; sharding them over processes with one writer only splits those lists.

Several processes (``accelerate launch -m bench run``, bench/distributed.py): only the main
process opens the store; it lists the work and broadcasts it, every process trains on its rows of
each batch, samples and scores its share and writes its PNG files, and the main process commits
the rows of each round in one transaction. A killed launch resumes like a killed single process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from bench import integrity
from bench import plan as planning
from bench.config import git_sha, versions
from bench.distributed import ONE, ProcessFailed, Processes
from bench.models import load_pipeline
from bench.registry import REWARDS
from bench.store import Store, check_train_value
from bench.tiny.files import WorldFiles
from bench.training import TrainingInputs
from methods.core import diffusion
from metrics.core.diversity import EMBEDDERS

Progress = Callable[[str, int, int], None]


class RunFailed(RuntimeError):
    pass


def image_id(run_id: str, suite: str, prompt_id: str, seed: int) -> str:
    return hashlib.sha256(f"{run_id}\x1f{suite}\x1f{prompt_id}\x1f{seed}".encode()).hexdigest()[:24]


def artifact_dir(results_dir: Path, spec: planning.RunSpec) -> Path:
    return results_dir / "checkpoints" / f"{spec.method}-{spec.artifact_hash}"


class Runner:
    def __init__(self, plan: planning.Plan, progress: Progress, log: Callable[[str], None], procs: Processes = ONE):
        self.plan, self.procs = plan, procs
        # Only the main process reports, and only it opens the store (DuckDB takes one writer).
        self.progress: Progress = progress if procs.is_main else (lambda name, done, total: None)
        self.log: Callable[[str], None] = log if procs.is_main else (lambda message: None)
        self.store = Store(plan.db) if procs.is_main else None
        self.results = plan.results_dir
        self.failures: dict[str, str] = {}
        self._pipe: Any = None
        self._world: list[WorldFiles | None] = []  # the tiny world's files, once ensured
        self._verified: dict[Path, tuple] = {}  # artifact folder -> its files' signature when found intact
        self._verifiers: dict[str, Any] = {}  # reward id -> the loaded reward that picks best-of-n candidates
        self.inputs = TrainingInputs(plan, self.pipe, self.world, self.progress, procs)

    # -- shared resources, loaded once and only when needed ---------------------------------------

    def world(self) -> WorldFiles | None:
        """The tiny world's files, built first if needed (None for a real model)."""
        if not self._world:
            preset = self.plan.model.tiny_preset
            if preset is None:
                self._world.append(None)
            else:
                from bench.tiny import prepare

                with self.procs.main_first():  # built by the main process, then verified by all
                    self._world.append(WorldFiles(prepare.ensure(self.results, preset, self.progress, self.log)))
        return self._world[0]

    def pipe(self) -> Any:
        if self._pipe is None:
            spec = self.plan.model
            folder = spec.folder or self.world().pipeline
            self._pipe = load_pipeline(folder, self.plan.device, spec.vae, self.plan.torch_dtype)
        return self._pipe

    def parent_artifacts(self, child: planning.RunSpec) -> Callable[[str], Path]:
        """``ctx.artifacts`` of ``child``: method id -> the verified artifact of the run ``child`` stacks on
        (the replicate with the same training seed)."""
        parents = dict(child.parent_runs)

        def artifacts(method_id: str) -> Path:
            if method_id not in parents:
                raise RunFailed(f"{child.method} asked for the artifact of {method_id!r}, which it does not stack on "
                                f"(its requires(): {', '.join(parents) or 'nothing'})")
            spec = next(r for r in self.plan.runs if r.run_id == parents[method_id])
            if spec.run_id in self.failures:  # not trained again for each run that stacks on it
                raise RunFailed(f"{method_id}, which this run stacks on, failed: {self.failures[spec.run_id]}")
            return self.artifact(spec)

        return artifacts

    def artifact(self, spec: planning.RunSpec) -> Path:
        """``spec``'s artifact folder, its files checked against its manifest (trained again first when
        missing or damaged)."""
        self.train(spec)
        return artifact_dir(self.results, spec)

    # -- phases ----------------------------------------------------------------------------------

    def execute(self) -> int:
        if self.store is not None:
            for spec in self.plan.runs:
                self.store.begin_run({
                    "run_id": spec.run_id, "method": spec.method, "model": spec.model.name,
                    "model_revision": spec.model_revision, "config_json": spec.config_json,
                    "config_hash": spec.config_hash, "artifact_hash": spec.artifact_hash,
                    "sampler_key": spec.sampler_key, "versions_json": json.dumps(versions(), sort_keys=True),
                    "git_sha": git_sha()})
                if spec.train_seed is not None:
                    self.store.add_replicate(spec.run_id, spec.arm, spec.train_seed)
                if spec.checkpoint_step is not None:
                    self.store.add_checkpoint_step(spec.run_id, spec.final_run, spec.checkpoint_step)
                self.store.set_run_rewards(spec.run_id, {rid: (rel, why) for rid, rel, why in spec.reward_relations})
            self.store.add_prompts(self.plan.suite.name, [
                {"prompt_id": p.prompt_id, "prompt": p.text, "category": p.category, "meta_json": json.dumps(p.meta)}
                for p in self.plan.suite.prompts])
            for spec in self.plan.runs:
                if spec.sample:
                    self.store.add_run_suite(spec.run_id, self.plan.suite.name, self.plan.suite.sha256)
        for spec in self.plan.runs:
            self._guarded(spec, self.train, spec)
        for spec in self.plan.runs:
            if spec.sample and spec.run_id not in self.failures:
                self._guarded(spec, self.sample, spec)
        self.score()
        if self.store is not None:
            for spec in self.plan.runs:
                if spec.run_id not in self.failures:
                    self.store.finish_run(spec.run_id, "done")
        return 1 if self.failures else 0

    def _guarded(self, spec: planning.RunSpec, fn: Callable, *args: Any) -> None:
        error = None
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - record the failing run, go on with the others
            error = (f"{type(e).__name__}: {e}", traceback.format_exc(limit=8), isinstance(e, ProcessFailed))
        if self.procs.world > 1:  # every process learns of every failure; the original error is recorded
            errors = sorted((e for e in self.procs.all_gather(error, status=True) if e), key=lambda e: e[2])
            error = errors[0] if errors else None
        if error is None:
            return
        message, trace, _ = error
        self.failures[spec.run_id] = message
        if self.store is not None:
            self.store.finish_run(spec.run_id, "failed", message + "\n" + trace)
        self.log(f"[red]run {spec.run_id} failed:[/red] {message}")

    def train(self, spec: planning.RunSpec) -> None:
        """Make ``spec``'s artifact present and intact: nothing to do when its files match its manifest;
        else (missing, damaged, unverifiable) it is trained into place, by one process at a time."""
        if not spec.trains:  # nothing to train, or published weights instead
            return
        out = artifact_dir(self.results, spec)
        with self._artifact_lock(spec, out) as built_meanwhile:
            todo, damage, tmp = self.procs.on_main(lambda: self._begin_artifact(spec, out, built_meanwhile))
            if not todo:
                return
            try:
                self._train_into(spec, out, tmp)
            except Exception as e:
                if self.procs.is_main:
                    shutil.rmtree(tmp, ignore_errors=True)
                if damage:
                    raise RunFailed(f"{damage}; training it again failed: {type(e).__name__}: {e}") from e
                raise

    @contextlib.contextmanager
    def _artifact_lock(self, spec: planning.RunSpec, out: Path) -> Iterator[bool]:
        """The main process holds ``checkpoints/<name>.lock`` while it checks or trains the artifact, so
        another ``bench run`` on this results folder waits for it instead of training it too. Yields
        whether the artifact appeared while this process waited (another one trained it)."""
        if not self.procs.is_main:
            yield False
            return
        existed = out.is_dir()

        def waiting(holder: str) -> None:
            self.log(f"{spec.method}: waiting for {holder}, which holds {out.name}.lock (it is training or "
                     f"checking {out.name})")

        with integrity.lock(out.with_name(out.name + ".lock"), waiting) as waited:
            yield waited and not existed and out.is_dir()

    def _artifact_problem(self, out: Path) -> str | None:
        """None when the artifact's files match its manifest (checked again only if a file changed since)."""
        problems = integrity.manifest_problems(out)
        if problems:
            self._verified.pop(out, None)
            return "; ".join(f"{path}: {why}" for path, why in problems)
        self._verified[out] = integrity.signature(out)
        return None

    def _begin_artifact(self, spec: planning.RunSpec, out: Path,
                        built_meanwhile: bool) -> tuple[bool, str | None, Path | None]:
        """On the main process, holding the lock: (whether to train, what was wrong with the stored
        artifact, the temporary folder to train into)."""
        damage = None
        if out.is_dir():
            problem = None if self._verified.get(out) == integrity.signature(out) else self._artifact_problem(out)
            if problem is None:
                if built_meanwhile:
                    self.log(f"{spec.method}: using {out.name}, which another process trained meanwhile")
                return False, None, None
            damage = f"checkpoint {out} is damaged or unverifiable ({problem})"
            self.log(f"[yellow]{damage}: deleting it and training it again[/yellow]")
            shutil.rmtree(out)
        # What killed runs left (the lock is ours: no live process writes here); the old fixed name too.
        for left in out.parent.glob(f"{out.name}.*tmp"):
            shutil.rmtree(left, ignore_errors=True)
        tmp = integrity.tmp_path(out)
        tmp.mkdir(parents=True)
        return True, damage, tmp

    def _train_into(self, spec: planning.RunSpec, out: Path, tmp: Path) -> None:
        method = spec.cls(spec.cfg)
        start = time.perf_counter()
        log = TrainLog(self.store, spec)
        every, steps = spec.snapshot_every, getattr(spec.cfg, "steps", 0)
        ctx = self.inputs.context(spec, tmp, self.parent_artifacts(spec), log=log, snapshot=lambda step: (
            tmp / "steps" / f"{step:06d}" if every and step % every == 0 and step < steps else None))

        def finish() -> None:
            log.flush()
            (tmp / "method_config.json").write_text(json.dumps(spec.config, indent=1, sort_keys=True, default=str))
            integrity.write_manifest(tmp)
            tmp.rename(out)
            self._verified[out] = integrity.signature(out)
            self.store.add_phase_time(spec.run_id, "train", time.perf_counter() - start)

        try:
            method.train(ctx)
        except Exception:
            log.flush()  # the steps before the failure, as they would have been logged
            raise
        self.procs.on_main(finish)

    def sample(self, spec: planning.RunSpec) -> None:
        suite = self.plan.suite
        prompt_ids = None if spec.prompt_ids is None else set(spec.prompt_ids)

        def missing() -> list[tuple[str, int]]:
            keys = self.store.missing_image_keys(
                spec.run_id, suite.name, [(p.prompt_id, s) for p in suite.prompts for s in self.plan.seeds
                                          if prompt_ids is None or p.prompt_id in prompt_ids])
            redraw = len(set(keys) & self.store.existing_image_keys(spec.run_id, suite.name))
            if redraw:
                self.log(f"[yellow]{spec.method}: {redraw} stored image file(s) gone or damaged (not the bytes of "
                         f"their stored sha256); drawing them again (same pixels, same file name)[/yellow]")
            return keys

        keys = self.procs.on_main(missing)
        if not keys:
            return
        prompts = {p.prompt_id: p for p in suite.prompts}
        todo = [(prompts[pid], s) for pid, s in keys]
        pipe = self.pipe()
        artifact = self.artifact(spec) if spec.trains else None  # checked against its manifest first
        if spec.checkpoint_step is not None:  # an intermediate checkpoint, inside its final run's artifact
            final = next(r for r in self.plan.runs if r.run_id == spec.final_run)
            artifact = self.artifact(final) / "steps" / f"{spec.checkpoint_step:06d}"
        method = spec.cls(spec.cfg)
        if spec.weights is not None:  # METHOD@WEIGHTS: the method's sampling rule with the published UNet
            from bench import published

            method.with_weights(lambda pipe: published.load_unet(pipe, spec.weights))
        denoise = method.denoiser(pipe, artifact, self.parent_artifacts(spec))
        image_dir = self.results / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        # What killed runs left half-written (process-named, see _write_png; a live writer's stays).
        self.procs.on_main(lambda: integrity.remove_stale(image_dir.glob("*/*.png.*.tmp")))
        batch = spec.sampler.batch
        mine = self.procs.shard(todo)
        start = time.perf_counter()
        done = 0
        for i in range(0, math.ceil(len(todo) / self.procs.world), batch):  # the largest share's batches
            chunk = mine[i:i + batch]
            rows = self.procs.exchange(lambda: self._draw(spec, pipe, denoise, chunk) if chunk else [])
            done += len(rows)
            self.procs.on_main(lambda: (self.store.add_images(rows),
                                        self.progress(f"sample {spec.method}", done, len(todo))))
        self.procs.on_main(lambda: self.store.add_phase_time(spec.run_id, "sample", time.perf_counter() - start))

    def _draw(self, spec: planning.RunSpec, pipe: Any, denoise: Any, chunk: list) -> list[dict[str, Any]]:
        suite = self.plan.suite
        seeds = [diffusion.seed_for(suite.name, p.prompt_id, s) for p, s in chunk]
        prompts = [p.text for p, _ in chunk]
        method = spec.cls(spec.cfg)
        candidates = [method.candidate_seeds(s) for s in seeds]
        n = len(candidates[0])
        images = diffusion.to_pil(diffusion.generate(pipe, denoise, [t for t in prompts for _ in range(n)],
                                                     [c for cs in candidates for c in cs], spec.sampler.steps,
                                                     spec.sampler.name))
        if n > 1:  # best-of-n: the verifier keeps one candidate per image (the first on a tie)
            verifier = self._verifier(method.verifier(self.plan.model.defaults.loop_reward))
            values = np.asarray(verifier.score(images, [t for t in prompts for _ in range(n)]), dtype=np.float64)
            values = values.reshape(len(chunk), n) * (1 if verifier.higher_is_better else -1)
            if not np.all(np.isfinite(values)):
                raise RunFailed(f"verifier {verifier.id} gave a non-finite score to a candidate of {spec.method}")
            images = [images[i * n + int(k)] for i, k in enumerate(values.argmax(axis=1))]
        return [self._write_png(spec, p, s, im) for (p, s), im in zip(chunk, images)]

    def _verifier(self, reward_id: str) -> Any:
        """The loaded reward that picks among a best-of-n run's candidates (loaded once)."""
        if reward_id not in self._verifiers:
            weights = self.plan.reward_weights(reward_id)
            with self.procs.main_first():
                if weights is not None and not weights.exists():
                    self.inputs.ensure_reward_weights(reward_id)
            self._verifiers[reward_id] = REWARDS.get(reward_id)(weights, self.plan.device)
            _load_once(self._verifiers[reward_id])
        return self._verifiers[reward_id]

    def _write_png(self, spec: planning.RunSpec, prompt, seed: int, image) -> dict[str, Any]:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        path = self.results / "images" / digest[:2] / f"{digest}.png"
        if not (path.is_file() and integrity.sha256_file(path) == digest):  # absent, or damaged: written again
            path.parent.mkdir(exist_ok=True)
            # Processes (of a launch, or two runs) may draw identical pixels: each writes its own temporary.
            tmp = integrity.tmp_path(path)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return {"image_id": image_id(spec.run_id, self.plan.suite.name, prompt.prompt_id, seed),
                "run_id": spec.run_id, "suite": self.plan.suite.name, "prompt_id": prompt.prompt_id,
                "prompt": prompt.text, "seed": seed, "path": str(path), "sha256": digest,
                "width": image.width, "height": image.height}

    def score(self) -> None:
        runs = [r for r in self.plan.runs if r.sample and r.run_id not in self.failures]
        for rid in self.plan.rewards:
            weights = self.plan.reward_weights(rid)
            with self.procs.main_first():
                if weights is not None and not weights.exists():
                    self.inputs.ensure_reward_weights(rid)
            # a best-of-n verifier is already loaded: its scores of the kept images come from the same model
            reward = self._verifiers.get(rid) or REWARDS.get(rid)(weights, self.plan.device)
            if self.store is not None and runs:
                self.store.add_reward(reward.id, reward.version, reward.higher_is_better)
                self.store.set_reward_role(reward.id, reward.role, reward.learned_from)
            for spec in runs:
                if spec.run_id not in self.failures:
                    self._guarded(spec, self._score_run, spec, reward)
            if reward.id in EMBEDDERS:  # its feature space measures diversity across a prompt's seeds
                embedder = EMBEDDERS[reward.id](reward)
                for spec in runs:
                    if spec.run_id not in self.failures:
                        self._guarded(spec, self._embed_run, spec, reward, embedder)

    def _score_run(self, spec: planning.RunSpec, reward) -> None:
        def missing() -> list[tuple[str, str, str, str]]:
            todo = self.store.images_without_score(reward.id, reward.version, [spec.run_id])
            return list(zip(todo.image_id, todo.path, todo.sha256, todo.prompt)) if not todo.empty else []

        todo = self.procs.on_main(missing)
        if not todo:
            return
        _load_once(reward)
        mine = self.procs.shard(todo)
        start = time.perf_counter()
        done = 0
        for i in range(0, math.ceil(len(todo) / self.procs.world), 256):  # the largest share's chunks
            chunk = mine[i:i + 256]
            rows = self.procs.exchange(lambda: self._score_chunk(reward, chunk) if chunk else [])
            done += len(rows)
            self.procs.on_main(lambda: (self.store.add_scores(rows),
                                        self.progress(f"score {reward.id} {spec.method}", done, len(todo))))
        self.procs.on_main(lambda: self.store.add_phase_time(spec.run_id, "score", time.perf_counter() - start))

    def _embed_run(self, spec: planning.RunSpec, reward, embedder) -> None:
        """Store each image's embedding in ``embedder``'s space (the loaded ``reward``'s features)."""
        def missing() -> list[tuple[str, str, str]]:
            todo = self.store.images_without_embedding(embedder.id, embedder.version, [spec.run_id])
            return list(zip(todo.image_id, todo.path, todo.sha256)) if not todo.empty else []

        todo = self.procs.on_main(missing)
        if not todo:
            return
        _load_once(reward)
        mine = self.procs.shard(todo)
        for i in range(0, math.ceil(len(todo) / self.procs.world), 256):
            chunk = mine[i:i + 256]

            def embed() -> list[tuple[str, str, str, Any]]:
                vectors = embedder.embed([self._read_png(path, sha256) for _, path, sha256 in chunk])
                return [(iid, embedder.id, embedder.version, v) for (iid, *_), v in zip(chunk, vectors)]

            rows = self.procs.exchange(lambda: embed() if chunk else [])
            self.procs.on_main(lambda: self.store.add_embeddings(rows))

    def _score_chunk(self, reward, chunk: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, float]]:
        images = [self._read_png(path, sha256) for _, path, sha256, _ in chunk]
        values = reward.score(images, [prompt for *_, prompt in chunk])
        return [(iid, reward.id, reward.version, float(v)) for (iid, *_), v in zip(chunk, values)]

    def _read_png(self, rel_path: str, sha256: str):
        from PIL import Image

        path = self.results / rel_path
        try:
            data = path.read_bytes()
        except OSError as e:
            raise RunFailed(f"image file {path} cannot be read ({e})") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RunFailed(f"image file {path} is corrupt: its sha256 differs from the stored one; delete the "
                            f"file and run again to regenerate it")
        return Image.open(io.BytesIO(data)).convert("RGB")


def _load_once(reward) -> None:
    """Load a reward's weights the first time a run needs its scores or its features."""
    if not getattr(reward, "_loaded", False):
        reward.load()
        reward._loaded = True


class TrainLog:
    """``ctx.log`` for ``bench run``: checks each step's values on every process (they log the same
    ones, so a bad value fails them together) and writes them to the store from the main process,
    every ``FLUSH_S`` seconds and at the end, in one transaction each.

    Writing each step when it is logged opened the DuckDB file once per step, tens of milliseconds
    (more than a tiny model's whole step). Rows held back are lost only with a killed run, whose
    training starts again and logs the same rows.
    """

    FLUSH_S = 30.0

    def __init__(self, store: Store | None, spec: planning.RunSpec):
        self.store, self.spec = store, spec
        self.rows: list[dict[str, Any]] = []
        self.last = time.monotonic()

    def __call__(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():  # as the store refuses them
            check_train_value(self.spec.artifact_hash, step, name, value)
        if self.store is None:
            return
        self.rows.extend({"artifact_hash": self.spec.artifact_hash, "method": self.spec.method, "step": int(step),
                          "name": name, "value": float(value)} for name, value in values.items())
        if time.monotonic() - self.last > self.FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.store is not None and self.rows:
            self.store.add_train_logs(self.rows)
        self.rows, self.last = [], time.monotonic()


def execute(plan: planning.Plan, progress: Progress, log: Callable[[str], None], procs: Processes = ONE) -> int:
    """Run the plan; ``procs`` is this process's place in a multi-process launch (default: alone)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if procs.device != plan.device and procs.world > 1:  # e.g. cuda -> this process's cuda:<local rank>
        plan = dataclasses.replace(plan, device=procs.device)
    return Runner(plan, progress, log, procs).execute()
