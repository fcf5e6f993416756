"""`bench run --model <folder>` end to end on tiny random pipelines saved in the SD1.5 and SDXL
layouts: a full fine-tune (dpo) and a LoRA (npo) trained from a Pick-a-Pic shard, then sampling and
scoring, through the loader that reads real checkpoints."""

from __future__ import annotations

import json

import duckdb
import pytest
from run_inputs import run_inputs
from typer.testing import CliRunner

from bench.cli import app

SHORT = ("steps=2", "batch_pairs=2", "micro_batch_pairs=0", "warmup_steps=0")


@pytest.mark.parametrize("layout", ["tiny_sd_dir", "tiny_sdxl_dir"])
def test_bench_run_trains_full_and_lora_then_samples_and_scores(layout, request, tmp_path):
    folder = request.getfixturevalue(layout)
    prompts, data = run_inputs(tmp_path / "inputs")
    db = tmp_path / "results" / "bench.duckdb"
    sets = [f"{m}.{f}" for m in ("dpo", "npo") for f in SHORT] + [f"data.pickapic={data}", "sampler.steps=2",
                                                                    "sampler.batch=4"]
    sets.append("npo.optimizer=adamw")  # the SD1.5 recipe's 8-bit AdamW needs the optional bitsandbytes
    result = CliRunner().invoke(app, ["run", "--model", str(folder), "--methods", "dpo,npo", "--suite", str(prompts),
                                      "--seeds", "0", "--rewards", "oracle", "--device", "cpu", "--db", str(db),
                                      *[x for s in sets for x in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert "Loading pipeline components" not in result.output  # the harness's progress, not the libraries'
    assert "Loading weights" not in result.output

    with duckdb.connect(str(db), read_only=True) as con:
        runs = dict(con.execute("SELECT method, status FROM runs").fetchall())
        images = con.execute("SELECT count(*) FROM images").fetchone()[0]
        scores = con.execute("SELECT count(*) FROM scores WHERE reward = 'oracle' AND isfinite(value)").fetchone()[0]
        steps = dict(con.execute("SELECT method, max(step) FROM train_log GROUP BY method").fetchall())
    assert runs == {"base": "done", "dpo": "done", "npo": "done"}
    assert images == scores == 3 * 12  # 3 runs x 12 prompts x 1 seed
    assert steps == {"dpo": 2, "npo": 2}
    artifacts = [d for d in (db.parent / "checkpoints").iterdir() if d.is_dir()]
    assert any((d / "unet" / "config.json").is_file() for d in artifacts)  # dpo: the full UNet
    assert any((d / "lora" / "pytorch_lora_weights.safetensors").is_file() for d in artifacts)  # npo: LoRA only


def test_vae_replaces_the_pipelines_own_and_is_part_of_the_revision(tiny_sdxl_dir, tmp_path, monkeypatch):
    import tiny_pipelines
    import torch

    from bench import models

    torch.manual_seed(1)
    vae_dir = tmp_path / "my-vae"
    tiny_pipelines._vae().save_pretrained(vae_dir)
    plain, swapped = models.resolve(str(tiny_sdxl_dir)), models.resolve(str(tiny_sdxl_dir), str(vae_dir))
    assert swapped.vae == vae_dir.resolve()
    assert models.revision(swapped).startswith(models.revision(plain) + "+vae=")  # other weights, other runs

    pipe = models.load_pipeline(swapped.folder, "cpu", swapped.vae)
    want = type(pipe.vae).from_pretrained(vae_dir).state_dict()
    assert all(torch.equal(v, want[k]) for k, v in pipe.vae.state_dict().items())

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(models.ModelError, match=r"(?s)madebyollin/sdxl-vae-fp16-fix.*hf download"):
        models.resolve(str(tiny_sdxl_dir), "fp16-fix")
    with pytest.raises(models.ModelError, match="trains its own autoencoder"):
        models.resolve("tiny", str(vae_dir))
    with pytest.raises(models.ModelError, match="not a diffusers AutoencoderKL folder; missing config.json"):
        models.resolve(str(tiny_sdxl_dir), str(tmp_path))
    with pytest.raises(models.ModelError, match="no such folder"):
        models.resolve(str(tiny_sdxl_dir), str(tmp_path / "nowhere"))


def test_precision_is_part_of_a_runs_identity_and_auto_picks_bf16_for_real_models_on_a_gpu(tiny_sd_dir, tmp_path):
    from bench.plan import make_plan

    def plan(**kw):
        return make_plan("dpo", str(tiny_sd_dir), "tiny-eval", "0", "oracle", tmp_path / "bench.duckdb", {}, **kw)

    fp32, bf16 = plan(precision="fp32"), plan(precision="bf16")
    assert plan().precision == "fp32" and plan(device="cuda").precision == "bf16"  # auto: CPU / GPU
    assert make_plan("dpo", "tiny-micro", "tiny-eval", "0", "oracle", tmp_path / "b.duckdb", {},
                     device="cuda").precision == "fp32"  # the tiny world trains in fp32 everywhere
    assert fp32.runs[0].config == plan().runs[0].config and "precision" not in fp32.runs[0].config  # fp32 ids kept
    for a, b in zip(fp32.runs, bf16.runs):
        assert (a.run_id, a.artifact_hash, a.sampler_key) != (b.run_id, b.artifact_hash, b.sampler_key)
        assert b.config["precision"] == "bf16"


def test_bench_run_in_bf16_finishes_and_records_its_precision(tiny_sd_dir, tmp_path):
    prompts, data = run_inputs(tmp_path / "inputs")
    db = tmp_path / "results" / "bench.duckdb"
    sets = [f"dpo.{f}" for f in SHORT] + [f"data.pickapic={data}", "sampler.steps=2", "sampler.batch=4"]
    result = CliRunner().invoke(app, ["run", "--model", str(tiny_sd_dir), "--methods", "dpo", "--suite", str(prompts),
                                      "--seeds", "0", "--rewards", "oracle", "--device", "cpu", "--precision", "bf16",
                                      "--db", str(db), *[x for s in sets for x in ("--set", s)]])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(db), read_only=True) as con:
        assert dict(con.execute("SELECT method, status FROM runs").fetchall()) == {"base": "done", "dpo": "done"}
        config = con.execute("SELECT config_json FROM runs WHERE method = 'dpo'").fetchone()[0]
        assert con.execute("SELECT count(*) FROM scores WHERE isfinite(value)").fetchone()[0] == 2 * 12
    assert json.loads(config)["precision"] == "bf16"


@pytest.mark.parametrize("method, sets, needle", [
    ("dpo", [], "dpo trains on pairs: pass --set data.pickapic=PATH"),
    ("self_npo", ["self_npo.optimizer=adamw"], "self_npo trains on images: pass --set data.captioned=PATH"),
    ("tailorpo", ["data.pickapic={data}"], "reward 'pickscore' is missing files"),  # its in-loop reward
    ("contrastive", ["contrastive.variant=pgd"], "contrastive trains on pairs"),  # pgd trains its own dpo module
])
def test_preflight_asks_for_what_each_method_declares_it_needs(tiny_sd_dir, tmp_path, monkeypatch, method, sets,
                                                                needle):
    from hf_cache import isolated

    isolated(tmp_path, monkeypatch, "BENCH_WEIGHTS", "weights")
    _, data = run_inputs(tmp_path / "inputs")
    db = tmp_path / "results" / "bench.duckdb"
    result = CliRunner().invoke(app, ["run", "--model", str(tiny_sd_dir), "--methods", method, "--rewards", "oracle",
                                      "--device", "cpu", "--db", str(db),
                                      *[x for s in sets for x in ("--set", s.format(data=data))]])
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split())
    assert not db.exists()
