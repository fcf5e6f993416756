"""`bench run --methods METHOD@WEIGHTS` end to end: published weights of every layout sampled without training,
labelled in the store and the report; trained artifacts exported and evaluated back give the same images."""

from __future__ import annotations

import json

import pytest
from test_published import RANK, known_lora, perturbed, write_full, write_lora
from typer.testing import CliRunner

from bench.cli import app
from bench.store import Store

runner = CliRunner()


def _name(path) -> str:
    from bench.plan import _weights_name

    return _weights_name(path)


def _run(db, model, methods, *extra):
    return runner.invoke(app, ["run", "--model", str(model), "--methods", methods, "--seeds", "0", "--db", str(db),
                               "--device", "cpu", "--set", "sampler.steps=2", "--set", "sampler.batch=4", *extra])


@pytest.mark.parametrize("layout", ["tiny_sd_dir", "tiny_sdxl_dir"])
def test_every_layout_is_evaluated_without_training(layout, request, tmp_path):
    folder = request.getfixturevalue(layout)
    pipe = request.getfixturevalue(layout.removesuffix("_dir"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cat\na blue dog\na green photo\n")
    weights = tmp_path / "weights"
    sources = {}
    for i, full in enumerate(["unet-folder", "unet-root", "pipeline", "unet-state-dict"]):
        (weights / full).mkdir(parents=True)
        sources[f"finetuned@{full}"] = write_full(weights / full, perturbed(pipe.unet, seed=i), folder, full)
    for layout_name in ("diffusers", "peft", "kohya"):
        sources[f"dpo@{layout_name}"] = write_lora(weights / f"lora-{layout_name}", known_lora(pipe.unet), layout_name,
                                                   alpha=RANK)
    sources["npo@negative"] = write_lora(weights / "npo", known_lora(pipe.unet, seed=5), "diffusers")
    methods = ",".join(f"{label.split('@')[0]}@{path}" for label, path in sources.items())
    db = tmp_path / "results" / "bench.duckdb"
    result = _run(db, folder, methods, "--suite", str(prompts), "--rewards", "oracle")
    assert result.exit_code == 0, result.output
    store = Store(db)
    runs = store.query("SELECT method, status, train_s, config_json, artifact_hash FROM runs ORDER BY method")
    assert len(runs) == 1 + len(sources) and set(runs["status"]) == {"done"}
    published = runs[runs["method"] != "base"]
    # Labels are METHOD@<the weights' file or folder name>, each its own run; nothing was trained.
    assert sorted(published["method"].str.split("@").str[0]) == sorted(k.split("@")[0] for k in sources)
    assert published["train_s"].isna().all() and not (db.parent / "checkpoints").exists()
    for config in map(json.loads, published["config_json"]):
        assert config["trains"] is False and len(config["published_weights"]["fingerprint"]) == 64
    assert published["artifact_hash"].str.startswith("published-").all()
    images = store.query("SELECT r.method, count(*) AS n, count(DISTINCT i.sha256) AS distinct_images FROM images i "
                         "JOIN runs r USING (run_id) GROUP BY ALL")
    assert set(images["n"]) == {3}
    # One LoRA in three key layouts draws the same images; other weights draw others.
    per_run = store.query("SELECT r.method, string_agg(i.sha256, ',' ORDER BY i.prompt_id) AS s FROM images i "
                          "JOIN runs r USING (run_id) GROUP BY ALL")
    drawn = dict(zip(per_run["method"].str.replace(r"@.*", "", regex=True) + "@" + per_run["method"].map(
        lambda m: next(k.split("@")[1] for k, p in sources.items() if m == f"{k.split('@')[0]}@{_name(p)}")
        if "@" in m else "base"), per_run["s"]))
    assert drawn["dpo@diffusers"] == drawn["dpo@peft"] == drawn["dpo@kohya"]
    assert len(set(drawn.values())) == len(drawn) - 2
    report = runner.invoke(app, ["report", "--db", str(db), "--format", "json", "--out", str(tmp_path / "r.json")])
    assert report.exit_code == 0, report.output
    labels = {r["method"] for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    assert labels == set(runs["method"])


@pytest.mark.slow
def test_trained_dpo_and_npo_exported_and_evaluated_back_draw_the_same_images(tmp_path):
    db = tmp_path / "results" / "bench.duckdb"
    short = [x for m in ("dpo", "npo") for x in ("--set", f"{m}.steps=3")]
    trained = _run(db, "tiny-micro", "dpo,npo", "--rewards", "oracle", *short)
    assert trained.exit_code == 0, trained.output
    store = Store(db)
    run_ids = dict(store.query("SELECT method, run_id FROM runs").itertuples(index=False))
    labels = []
    for method in ("dpo", "npo"):
        out = tmp_path / "export" / method
        exported = runner.invoke(app, ["export", run_ids[method], "--out", str(out), "--db", str(db)])
        assert exported.exit_code == 0, exported.output
        assert f"bench run --methods {method}@{out}" in exported.output.replace("\n", "")
        labels.append(f"{method}@{out}")
    back = _run(db, "tiny-micro", ",".join(labels), "--rewards", "oracle")
    assert back.exit_code == 0, back.output
    images = store.query("SELECT r.method, i.prompt_id, i.seed, i.sha256 FROM images i JOIN runs r USING (run_id)")
    by_label = {m: dict(zip(zip(g.prompt_id, g.seed), g.sha256)) for m, g in images.groupby("method")}
    assert by_label["dpo@dpo"] == by_label["dpo"] and len(by_label["dpo"]) == 200
    assert by_label["npo@npo"] == by_label["npo"]
    assert by_label["dpo"] != by_label["base"]  # trained weights drew other images than base


def test_bad_published_weights_exit_2_before_any_work(tmp_path):
    db = tmp_path / "results" / "bench.duckdb"
    for methods, needle in [
        ("dpo@dpo-sdxl", "checkpoint dpo-sdxl (mhdang/dpo-sdxl-text2image-v1) is not on this machine"),
        ("contrastive@x", "contrastive cannot sample published weights"),
        ("dpo@", "name the weights after @"),
        ("nope@x", "unknown method 'nope'"),
        ("finetuned", "finetuned evaluates published weights"),
        ("dpo@wangfuyun/Diffusion-NPO", "holds several catalogued checkpoints"),
        ("dpo@" + str(tmp_path / "missing"), "missing"),
    ]:
        result = runner.invoke(app, ["run", "--model", "tiny-micro", "--methods", methods, "--db", str(db)])
        assert result.exit_code == 2, (methods, result.output)
        assert needle in " ".join(result.output.split()), (methods, result.output)
    assert not db.exists()
    missing = runner.invoke(app, ["run", "--model", "tiny-micro", "--methods", "dpo@dpo-sdxl", "--db", str(db)])
    assert "hf download mhdang/dpo-sdxl-text2image-v1 unet/config.json" in " ".join(missing.output.split())
