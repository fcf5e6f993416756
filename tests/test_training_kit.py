"""The training kit (methods/core/training.py): the loop configs' checks, the optimizer step with
gradient accumulation, the run loop, what every method declares, and the import structure."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.registry import METHODS
from methods.core.api import TrainContext
from methods.core.pairs import PairTrainConfig
from methods.core.parallel import DataParallel
from methods.core.training import LoopConfig, OptimizerConfig, Trainer, WarmupConfig, micro_batches
from methods.core.types import IMAGES, PAIRS, PROMPTS, REWARD

ROOT = Path(__file__).resolve().parent.parent


# -- configs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, field, value, message", [
    (LoopConfig, "lr", 0.0, "lr must be > 0, got 0.0"),
    (LoopConfig, "steps", 0, "steps must be >= 1, got 0"),
    (LoopConfig, "weight_decay", -1e-3, "weight_decay must be >= 0, got -0.001"),
    (LoopConfig, "grad_clip", 0.0, "grad_clip must be > 0, got 0.0"),
    (LoopConfig, "guidance_scale", -1.0, "guidance_scale must be >= 0"),
    (WarmupConfig, "warmup_steps", -1, "warmup_steps must be >= 0, got -1"),
    (OptimizerConfig, "optimizer", "sgd", "unknown optimizer 'sgd'; available: adamw, adamw8bit, adafactor"),
    (PairTrainConfig, "lr", -1.0, "lr must be > 0"),  # the loop's checks run for every config built on it
    (PairTrainConfig, "warmup_steps", -5, "warmup_steps must be >= 0"),
    (PairTrainConfig, "optimizer", "sgd", "available: adamw, adamw8bit, adafactor"),
    (PairTrainConfig, "micro_batch_pairs", 4096, "micro_batch_pairs must be in [0, batch_pairs=2048]"),
])
def test_loop_config_checks_name_the_field(cls, field, value, message):
    cls().validate()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        dataclasses.replace(cls(), **{field: value}).validate()


def test_each_config_keeps_exactly_its_fields():
    """Every field goes into the run's identity: a config inherits only the loop fields it always had."""
    loop = {"guidance_scale", "lr", "steps", "weight_decay", "grad_clip", "seed"}
    dpo = loop | {"warmup_steps", "optimizer", "gradient_checkpointing", "batch_pairs", "micro_batch_pairs",
                  "keep_ties", "prompt_dropout", "lora_rank", "random_flip", "latent_sample", "beta", "beta_convention"}
    want = {
        "dpo": dpo,
        "sdpo": dpo | {"mu"},
        "npo": dpo | {"stack_on", "merge_weight"},
        "contrastive": dpo | {"variant", "strength"},  # beta: pgd's DPO module
        "self_npo": loop | {"optimizer", "gradient_checkpointing", "teacher_steps", "grid_steps", "teacher_guidance",
                            "ema_decay", "huber_c", "batch_size", "micro_batch", "neg_weight"},
        "tailorpo": loop | {"warmup_steps", "beta", "batch_size", "lora_rank", "rollout_steps", "eta",
                            "train_guidance_scale", "gradient_guidance", "guidance_eta"},
    }
    for method_id, names in want.items():
        assert {f.name for f in dataclasses.fields(METHODS.get(method_id).Config)} == names, method_id


def test_method_defaults_override_the_loop_defaults():
    self_npo, tailorpo = METHODS.get("self_npo").Config(), METHODS.get("tailorpo").Config()
    assert (self_npo.lr, self_npo.weight_decay, self_npo.steps) == (1e-6, 1e-3, 1000)
    assert (tailorpo.lr, tailorpo.weight_decay, tailorpo.warmup_steps) == (6e-5, 1e-4, 0)
    assert (PairTrainConfig().lr, PairTrainConfig().warmup_steps) == (2.048e-5, 500)


def test_packages_come_from_the_optimizer_setting():
    assert OptimizerConfig(optimizer="adamw8bit").packages() == {"bitsandbytes": "optimizer 'adamw8bit'"}
    assert OptimizerConfig(optimizer="adafactor").packages() == {} and LoopConfig().packages() == {}


# -- what each method declares ------------------------------------------------------------------------

NEEDS = {"base": set(), "dpo": {PAIRS}, "sdpo": {PAIRS}, "npo": {PAIRS}, "contrastive": {PAIRS},
         "self_npo": {IMAGES}, "tailorpo": {PROMPTS, REWARD}, "best_of_n": set(), "finetuned": set()}


def test_every_registered_method_is_listed_here():
    assert set(NEEDS) == set(METHODS.available())


@pytest.mark.parametrize("method_id", sorted(NEEDS))
def test_needs_and_packages(method_id):
    cls = METHODS.get(method_id)
    assert cls(cls.Config()).needs() == NEEDS[method_id]
    for family, values in cls.defaults.items():
        method = cls(cls.Config(**values))
        eight_bit = values.get("optimizer") == "adamw8bit"
        assert method.packages() == ({"bitsandbytes": "optimizer 'adamw8bit'"} if eight_bit else {}), family


def test_pgd_trains_its_dpo_module_on_pairs_with_its_optimizer():
    cls = METHODS.get("contrastive")
    pgd = cls(cls.Config(variant="pgd", optimizer="adamw8bit"))
    assert pgd.needs() == frozenset({PAIRS}) and pgd.requires() == []  # its own DPO module, not dpo's
    assert pgd.packages() == {"bitsandbytes": "optimizer 'adamw8bit'"}
    assert cls(cls.Config(optimizer="adamw8bit")).packages() == {"bitsandbytes": "optimizer 'adamw8bit'"}


@pytest.mark.parametrize("method_id, what", [("dpo", "its trained UNet"), ("sdpo", "its trained UNet"),
                                             ("tailorpo", "its trained UNet"), ("npo", "its trained negative model"),
                                             ("self_npo", "its trained negative model")])
def test_an_untrained_method_is_refused_by_name(method_id, what):
    cls = METHODS.get(method_id)
    with pytest.raises(ValueError, match=f"^{method_id} samples with {what}: train it first"):
        cls(cls.Config()).denoiser(None, None, lambda _: Path())


# -- the optimizer step --------------------------------------------------------------------------------


def _ctx(logs: list | None = None, progress: list | None = None) -> TrainContext:
    def unused():
        raise AssertionError("the kit reads no data")

    return TrainContext(pipe=None, device=torch.device("cpu"), dtype=torch.float32, out_dir=Path(), seed=0,
                        pairs=unused, images=unused, prompts=unused, reward=unused,
                        log=lambda step, values: (logs if logs is not None else []).append((step, values)),
                        progress=lambda done, total: (progress if progress is not None else []).append((done, total)))


ROWS = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0], [2.0, 1.0]])  # (4, 2) rows of a toy batch


def _parts(w: torch.nn.Parameter, layout: list[tuple[int, int, float]]):
    """The toy loss mean_rows (w·x − 1)² of each micro-batch, as a loop would yield it."""
    for lo, n, weight in layout:
        loss = ((ROWS[lo:lo + n] @ w - 1.0) ** 2).mean()
        yield loss, {"rows": float(n)}, weight


def test_step_accumulates_micro_batches_to_the_full_batch_step():
    cfg = LoopConfig(lr=0.1, weight_decay=0.0, grad_clip=100.0)
    w_full, w_acc = torch.nn.Parameter(torch.tensor([0.3, -0.2])), torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    full = Trainer(_ctx(), cfg, [w_full]).step(_parts(w_full, micro_batches(DataParallel(), 4, 0, "batch")))
    layout = micro_batches(DataParallel(), 4, 3, "batch")
    assert layout == [(0, 3, 0.75), (3, 1, 0.25)]  # weights n/batch
    acc = Trainer(_ctx(), cfg, [w_acc]).step(_parts(w_acc, layout))
    torch.testing.assert_close(w_acc, w_full)  # the same update as one forward over the whole batch
    assert acc["loss"] == pytest.approx(full["loss"]) and acc["grad_norm"] == pytest.approx(full["grad_norm"])
    assert acc["rows"] == pytest.approx(0.75 * 3 + 0.25 * 1)  # every log is the weighted mean of its parts
    assert acc["lr"] == 0.1


def test_step_clips_then_steps_adamw_and_logs_the_unclipped_norm():
    cfg = LoopConfig(lr=0.1, weight_decay=0.01, grad_clip=0.5)
    w = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    ref = torch.nn.Parameter(w.detach().clone())
    logs = Trainer(_ctx(), cfg, [w]).step(_parts(w, [(0, 4, 1.0)]))
    ((ROWS @ ref - 1.0) ** 2).mean().backward()
    norm = float(ref.grad.norm())
    assert logs["grad_norm"] == pytest.approx(norm) and norm > 0.5
    ref.grad *= 0.5 / (norm + 1e-6)  # clip_grad_norm_'s scale
    torch.optim.AdamW([ref], lr=0.1, weight_decay=0.01, foreach=False).step()
    torch.testing.assert_close(w, ref)


def test_run_logs_every_step_with_warmup_and_calls_after_step():
    logs, progress, after = [], [], []
    w = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    trainer = Trainer(_ctx(logs, progress), LoopConfig(lr=0.1, steps=3), [w], warmup_steps=2)
    trainer.run(lambda: _parts(w, [(0, 4, 1.0)]), after_step=lambda: after.append(w.detach().clone()))
    assert [s for s, _ in logs] == [1, 2, 3] and progress == [(1, 3), (2, 3), (3, 3)]
    assert [v["lr"] for _, v in logs] == pytest.approx([0.0, 0.05, 0.1])  # diffusers' constant_with_warmup
    assert {"loss", "rows", "grad_norm", "lr"} == set(logs[0][1])
    assert len(after) == 3 and not torch.equal(after[1], after[2])  # after each update


def test_run_refuses_a_non_finite_loss():
    w = torch.nn.Parameter(torch.tensor([0.3]))
    logs: list = []
    trainer = Trainer(_ctx(logs), LoopConfig(steps=2), [w])
    with pytest.raises(FloatingPointError, match="loss is nan at step 1"):
        trainer.run(lambda: iter([(w.sum() * float("nan"), {}, 1.0)]))
    assert logs == []


def test_micro_batches_refuse_a_split_that_leaves_a_process_without_rows():
    class Two(DataParallel):
        world = 2

    assert micro_batches(Two(), 6, 0, "batch") == [(0, 6, 1.0)]
    with pytest.raises(ValueError, match="batch_size / micro_batch: a batch of 1 cannot be split over 2"):
        micro_batches(Two(), 5, 2, "batch_size / micro_batch")  # the last micro-batch has one row


# -- imports ---------------------------------------------------------------------------------------------


def test_importing_the_methods_loads_no_diffusers():
    """``bench list`` and ``--help`` stay fast: diffusers is imported only by what builds a scheduler or loads."""
    code = ("import sys; from bench.registry import METHODS; [METHODS.get(m) for m in METHODS.available()]; "
            "print('diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

