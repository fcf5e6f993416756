"""The runner: train what needs training, sample what is missing, score what is unscored, store it.

Each phase skips work that is already done, so a second identical run does nothing, and a run
killed at any point (kill -9) resumes where it stopped:

- train: an artifact is written to a temporary folder and renamed when complete; a folder with
  that artifact hash means training is done;
- sample: only (prompt, seed) pairs without an image row are drawn; PNG files are written (atomic
  rename, named by their sha256) before their rows, in one transaction per batch;
- score: only images without a row for (reward, reward version); one transaction per batch.

Images depend only on (method artifact, prompt, seed), never on batch composition, so a resumed
run stores exactly the rows an uninterrupted one would. Sampling and scoring work on lists of
(prompt, seed) keys; sharding them over processes with one writer only splits those lists.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import metrics
from bench import plan as planning
from bench.config import git_sha, versions
from bench.models import load_pipeline
from bench.store import Store
from bench.training import TrainingInputs
from methods.core import diffusion

Progress = Callable[[str, int, int], None]


class RunFailed(RuntimeError):
    pass


def image_id(run_id: str, suite: str, prompt_id: str, seed: int) -> str:
    return hashlib.sha256(f"{run_id}\x1f{suite}\x1f{prompt_id}\x1f{seed}".encode()).hexdigest()[:24]


def artifact_dir(results_dir: Path, spec: planning.RunSpec) -> Path:
    return results_dir / "checkpoints" / f"{spec.method}-{spec.artifact_hash}"


class Runner:
    def __init__(self, plan: planning.Plan, progress: Progress, log: Callable[[str], None]):
        self.plan, self.progress, self.log = plan, progress, log
        self.store = Store(plan.db)
        self.results = plan.results_dir
        self.failures: dict[str, str] = {}
        self._pipe: Any = None
        self._model_folder: Path | None = None
        self.inputs = TrainingInputs(plan, self.pipe, self.world_folder, progress)

    # -- shared resources, loaded once and only when needed ---------------------------------------

    def world_folder(self) -> Path | None:
        preset = self.plan.runs[0].model.tiny_preset
        if preset is None:
            return None
        from bench.tiny import prepare

        return prepare.ensure(self.results, preset, self.progress, self.log)

    def pipe(self) -> Any:
        if self._pipe is None:
            spec = self.plan.runs[0].model
            folder = spec.folder or self.world_folder() / "pipeline"
            self._pipe = load_pipeline(folder, self.plan.device)
        return self._pipe

    def artifacts(self, method_id: str) -> Path:
        spec = next(r for r in self.plan.runs if r.method == method_id)
        return artifact_dir(self.results, spec)

    # -- phases ----------------------------------------------------------------------------------

    def execute(self) -> int:
        for spec in self.plan.runs:
            self.store.begin_run({
                "run_id": spec.run_id, "method": spec.method, "model": spec.model.name,
                "model_revision": spec.model_revision, "config_json": spec.config_json,
                "config_hash": spec.run_id.rsplit("-", 1)[-1], "artifact_hash": spec.artifact_hash,
                "sampler_key": spec.sampler_key, "versions_json": json.dumps(versions(), sort_keys=True),
                "git_sha": git_sha()})
        self.store.add_prompts(self.plan.suite.name, [
            {"prompt_id": p.prompt_id, "prompt": p.text, "category": p.category, "meta_json": json.dumps(p.meta)}
            for p in self.plan.suite.prompts])
        for spec in self.plan.runs:
            self._guarded(spec, self.train, spec)
        for spec in self.plan.runs:
            if spec.sample and spec.run_id not in self.failures:
                self._guarded(spec, self.sample, spec)
        self.score()
        for spec in self.plan.runs:
            if spec.run_id not in self.failures:
                self.store.finish_run(spec.run_id, "done")
        return 1 if self.failures else 0

    def _guarded(self, spec: planning.RunSpec, fn: Callable, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - record the failing run, go on with the others
            message = f"{type(e).__name__}: {e}"
            self.failures[spec.run_id] = message
            self.store.finish_run(spec.run_id, "failed", message + "\n" + traceback.format_exc(limit=8))
            self.log(f"[red]run {spec.run_id} failed:[/red] {message}")

    def train(self, spec: planning.RunSpec) -> None:
        if not spec.cls.trains:
            return
        out = artifact_dir(self.results, spec)
        if out.is_dir():
            return
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        method = spec.cls(spec.cfg)
        start = time.perf_counter()
        ctx = self.inputs.context(spec, tmp, self.artifacts,
                                  log=lambda step, values: self.store.add_train_log(
                                      spec.artifact_hash, spec.method, step, values))
        method.train(ctx)
        (tmp / "method_config.json").write_text(json.dumps(spec.config, indent=1, sort_keys=True, default=str))
        tmp.rename(out)
        self.store.add_phase_time(spec.run_id, "train", time.perf_counter() - start)

    def sample(self, spec: planning.RunSpec) -> None:
        suite = self.plan.suite
        stored = self.store.query("SELECT prompt_id, seed, path FROM images WHERE run_id = ? AND suite = ?",
                                  [spec.run_id, suite.name])
        # A row whose file was deleted is drawn again: same key, same pixels, same file name.
        have = {(r.prompt_id, r.seed) for r in stored.itertuples() if (self.results / r.path).is_file()}
        todo = [(p, s) for p in suite.prompts for s in self.plan.seeds if (p.prompt_id, s) not in have]
        if not todo:
            return
        pipe = self.pipe()
        artifact = artifact_dir(self.results, spec) if spec.cls.trains else None
        denoise = spec.cls(spec.cfg).denoiser(pipe, artifact, self.artifacts)
        image_dir = self.results / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        batch = spec.sampler.batch
        start = time.perf_counter()
        for i in range(0, len(todo), batch):
            chunk = todo[i:i + batch]
            seeds = [diffusion.seed_for(suite.name, p.prompt_id, s) for p, s in chunk]
            images = diffusion.generate(pipe, denoise, [p.text for p, _ in chunk], seeds, spec.sampler.steps,
                                        spec.sampler.name)
            rows = [self._write_png(spec, p, s, im) for (p, s), im in zip(chunk, diffusion.to_pil(images))]
            self.store.add_images(rows)
            self.progress(f"sample {spec.method}", i + len(chunk), len(todo))
        self.store.add_phase_time(spec.run_id, "sample", time.perf_counter() - start)

    def _write_png(self, spec: planning.RunSpec, prompt, seed: int, image) -> dict[str, Any]:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        path = self.results / "images" / digest[:2] / f"{digest}.png"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".png.tmp")
            tmp.write_bytes(data)
            tmp.rename(path)
        return {"image_id": image_id(spec.run_id, self.plan.suite.name, prompt.prompt_id, seed),
                "run_id": spec.run_id, "suite": self.plan.suite.name, "prompt_id": prompt.prompt_id,
                "prompt": prompt.text, "seed": seed, "path": str(path), "sha256": digest,
                "width": image.width, "height": image.height}

    def score(self) -> None:
        runs = [r for r in self.plan.runs if r.sample and r.run_id not in self.failures]
        for rid in self.plan.rewards:
            weights = planning.reward_weights(self.plan, rid)
            if weights is not None and not weights.exists():
                self.inputs.ensure_reward_weights(rid)
            reward = metrics.get(rid)(weights, self.plan.device)
            for spec in runs:
                if spec.run_id not in self.failures:
                    self._guarded(spec, self._score_run, spec, reward)

    def _score_run(self, spec: planning.RunSpec, reward) -> None:
        todo = self.store.images_without_score(reward.id, reward.version, [spec.run_id])
        if todo.empty:
            return
        if not getattr(reward, "_loaded", False):
            reward.load()
            reward._loaded = True
        start = time.perf_counter()
        for i in range(0, len(todo), 256):
            chunk = todo.iloc[i:i + 256]
            images = [self._read_png(row.path, row.sha256) for row in chunk.itertuples()]
            values = reward.score(images, list(chunk.prompt))
            self.store.add_scores([(iid, reward.id, reward.version, float(v)) for iid, v in zip(chunk.image_id, values)])
            self.progress(f"score {reward.id} {spec.method}", i + len(chunk), len(todo))
        self.store.add_phase_time(spec.run_id, "score", time.perf_counter() - start)

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


def execute(plan: planning.Plan, progress: Progress, log: Callable[[str], None]) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return Runner(plan, progress, log).execute()
