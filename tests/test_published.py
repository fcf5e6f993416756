"""Published checkpoints: the catalogue, loading every layout into the tiny SD1.5- and SDXL-layout pipelines,
NPO negatives, fingerprints, missing files, and export -> load round trips. Weights are random, written here in
each layout; the expected UNet is always built by hand (merging a known LoRA delta, perturbing known weights)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from hf_cache import isolated, snapshot
from safetensors.torch import save_file

from bench import checkpoints, export, integrity, published
from bench.published import PublishedWeightsError

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
RANK = 2


@pytest.fixture(params=["tiny_sd", "tiny_sdxl"])
def pipe(request):
    return request.getfixturevalue(request.param)


def forward(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 5, unet.config.cross_attention_dim, generator=g)
    extra = {}
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled text embedding + 6 micro-conditioning ids
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 16, generator=g),
                                      "time_ids": torch.randn(1, 6, generator=g)}
    with torch.no_grad():
        return unet(x, 500, ctx, **extra).sample


def perturbed(unet, seed: int):
    """A copy of ``unet`` with every weight moved by known noise: a stand-in for a published fine-tune."""
    out = copy.deepcopy(unet)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return out


def same_weights(a, b, atol: float = 0.0) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=atol, rtol=0) for k in sa)


def known_lora(unet, seed: int = 1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module name -> (A (r, in), B (out, r)) on every attention projection."""
    g = torch.Generator().manual_seed(seed)
    layers = [(n, m) for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(TARGETS)]
    return {n: (0.3 * torch.randn(RANK, m.in_features, generator=g),
                0.3 * torch.randn(m.out_features, RANK, generator=g)) for n, m in layers}


def merged_by_hand(unet, lora, scale: float):
    out = copy.deepcopy(unet)
    with torch.no_grad():
        for name, (a, b) in lora.items():
            out.get_submodule(name).weight.add_(scale * b @ a)
    return out


def write_lora(folder, lora, layout: str, alpha: float = RANK):
    """The LoRA in one key layout; its scale is alpha / rank (diffusers keys carry no alpha: scale 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "diffusers":
        state = {f"unet.{n}.lora.{w}.weight": t for n, (a, b) in lora.items() for w, t in (("down", a), ("up", b))}
        path = folder / "pytorch_lora_weights.safetensors"
    elif layout == "peft":
        from peft import LoraConfig

        LoraConfig(r=RANK, lora_alpha=alpha, target_modules=list(TARGETS)).save_pretrained(str(folder))
        state = {f"base_model.model.{n}.lora_{w}.weight": t
                 for n, (a, b) in lora.items() for w, t in (("A", a), ("B", b))}
        path = folder / "adapter_model.safetensors"
    else:  # kohya: module path with '_' for '.', lora_down/lora_up and a per-module alpha
        state = {}
        for n, (a, b) in lora.items():
            key = "lora_unet_" + n.replace(".", "_")
            state |= {f"{key}.lora_down.weight": a, f"{key}.lora_up.weight": b, f"{key}.alpha": torch.tensor(alpha)}
        path = folder / "kohya.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


# ---------------------------------------------------------------------------------------------------
# Full UNets


def write_full(tmp_path, unet, pipe_dir, layout: str):
    if layout == "unet-folder":
        unet.save_pretrained(tmp_path / "unet")
        return tmp_path
    if layout == "unet-root":
        unet.save_pretrained(tmp_path)
        return tmp_path
    if layout == "pipeline":
        shutil.copytree(pipe_dir, tmp_path / "pipe")
        shutil.rmtree(tmp_path / "pipe" / "unet")
        unet.save_pretrained(tmp_path / "pipe" / "unet")
        return tmp_path / "pipe"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(tmp_path / "unet.safetensors"))
    return tmp_path / "unet.safetensors"


@pytest.mark.parametrize("layout", ["unet-folder", "unet-root", "pipeline", "unet-state-dict"])
def test_each_full_layout_is_detected_and_yields_its_weights(pipe, layout, tmp_path, request):
    folder = request.getfixturevalue("tiny_sdxl_dir" if pipe.unet.config.addition_embed_type else "tiny_sd_dir")
    want = perturbed(pipe.unet, seed=3)
    path = write_full(tmp_path, want, folder, layout)
    assert published.detect(path).layout == layout
    before = copy.deepcopy(pipe.unet.state_dict())
    unet = published.load_unet(pipe, path)
    assert unet is not pipe.unet and same_weights(unet, want)
    assert torch.allclose(forward(unet), forward(want), atol=1e-5)  # same weights (bitwise, above)
    assert (unet.device, unet.dtype) == (pipe.unet.device, pipe.unet.dtype)
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())  # the pipeline is untouched


def test_a_unet_of_another_base_model_is_refused_by_its_config(tiny_sd, tiny_sdxl, tmp_path):
    tiny_sdxl.unet.save_pretrained(tmp_path / "unet")
    with pytest.raises(PublishedWeightsError, match="does not fit the pipeline's.*cross_attention_dim 32 vs 16"):
        published.load_unet(tiny_sd, tmp_path)


# ---------------------------------------------------------------------------------------------------
# LoRA layouts


@pytest.mark.parametrize("layout, alpha", [("diffusers", RANK), ("peft", 4.0), ("kohya", 1.0)])
def test_each_lora_layout_gives_the_unet_merged_by_hand(pipe, layout, alpha, tmp_path):
    lora = known_lora(pipe.unet)
    path = write_lora(tmp_path, lora, layout, alpha)
    found = published.detect(tmp_path if layout != "kohya" else path)
    assert (found.layout, found.lora_layout) == ("lora", layout)
    want = merged_by_hand(pipe.unet, lora, alpha / RANK)
    unet = published.load_unet(pipe, found)
    assert same_weights(unet, want, atol=1e-6)
    assert torch.allclose(forward(unet), forward(want), atol=1e-5)
    assert not getattr(pipe.unet, "peft_config", None)  # fused into a copy; the pipeline's UNet has no adapter


def test_a_kohya_file_and_the_equivalent_diffusers_file_give_the_same_unet(pipe, tmp_path):
    lora = known_lora(pipe.unet, seed=5)
    a = published.load_unet(pipe, write_lora(tmp_path / "k", lora, "kohya", alpha=RANK))
    b = published.load_unet(pipe, write_lora(tmp_path / "d", lora, "diffusers"))
    assert same_weights(a, b, atol=1e-6)


def test_loras_that_cannot_be_used_as_published_are_refused(tiny_sd, tiny_sdxl, tmp_path):
    sdxl_lora = write_lora(tmp_path / "xl", known_lora(tiny_sdxl.unet), "diffusers")
    with pytest.raises(PublishedWeightsError, match="could not load|modules this UNet does not have"):
        published.load_unet(tiny_sd, sdxl_lora)  # another base model: shapes or module names differ
    lora = known_lora(tiny_sd.unet) | {"down_blocks.9.attentions.0.proj_x": (torch.zeros(RANK, 8),
                                                                             torch.zeros(8, RANK))}
    with pytest.raises(PublishedWeightsError, match="1 of its 33 LoRA layers name modules this UNet does not have"):
        published.load_unet(tiny_sd, write_lora(tmp_path / "extra", lora, "kohya"))
    state = {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight": torch.zeros(2, 16)}
    save_file(state, str(tmp_path / "te.safetensors"))
    with pytest.raises(PublishedWeightsError, match="also changes the text encoder"):
        published.load_unet(tiny_sd, tmp_path / "te.safetensors")
    peft_file = write_lora(tmp_path / "p", known_lora(tiny_sd.unet), "peft")
    (tmp_path / "p" / "adapter_config.json").unlink()
    with pytest.raises(PublishedWeightsError, match="needs the adapter_config.json"):
        published.detect(peft_file)
    torch.save({}, tmp_path / "w.pth")
    with pytest.raises(PublishedWeightsError, match="only .safetensors"):
        published.detect(tmp_path / "w.pth")


# ---------------------------------------------------------------------------------------------------
# NPO negatives: θ_neg = m·θ_base + (1 − m)·θ_pos + s·δ


def test_an_npo_lora_negative_is_base_plus_delta_mixed_as_gen_py_does(pipe, tmp_path):
    lora = known_lora(pipe.unet, seed=7)
    path = write_lora(tmp_path, lora, "diffusers")
    base, delta_only = pipe.unet, merged_by_hand(pipe.unet, lora, 1.0)
    assert same_weights(published.negative_unet(pipe, path), delta_only, atol=1e-6)  # positive = base: θ_base + δ
    positive, m = perturbed(pipe.unet, seed=8), 0.3
    want = copy.deepcopy(base)
    with torch.no_grad():
        for (name, p), pb, pp, pd in zip(want.named_parameters(), base.parameters(), positive.parameters(),
                                         delta_only.parameters()):
            p.copy_(m * pb + (1 - m) * pp + (pd - pb))
    got = published.negative_unet(pipe, path, positive=positive, merge_weight=m)
    assert same_weights(got, want, atol=1e-5)
    half = published.negative_unet(pipe, path, delta_scale=0.5)  # Self-NPO's θ_base + β·δ
    assert same_weights(half, merged_by_hand(pipe.unet, lora, 0.5), atol=1e-6)
    with pytest.raises(ValueError, match="merge_weight must be in"):
        published.negative_unet(pipe, path, merge_weight=1.5)


def test_a_full_negative_contributes_its_difference_from_the_base(tiny_sd, tmp_path):
    neg, pos = perturbed(tiny_sd.unet, seed=9), perturbed(tiny_sd.unet, seed=10)
    neg.save_pretrained(tmp_path / "unet")
    assert same_weights(published.negative_unet(tiny_sd, tmp_path), neg)
    got = published.negative_unet(tiny_sd, tmp_path, positive=pos, merge_weight=0.0)
    want = {k: pos.state_dict()[k] + neg.state_dict()[k] - v for k, v in tiny_sd.unet.state_dict().items()}
    assert all(torch.allclose(got.state_dict()[k], w, atol=1e-6) for k, w in want.items())


# ---------------------------------------------------------------------------------------------------
# Fingerprints


def test_fingerprint_is_stable_and_changes_with_any_file_used(tiny_sd, tmp_path):
    lora = known_lora(tiny_sd.unet)
    a = write_lora(tmp_path / "a", lora, "diffusers")
    b = write_lora(tmp_path / "b", lora, "diffusers")  # same bytes, same name, another folder
    assert published.fingerprint(a) == published.fingerprint(a) == published.fingerprint(b)
    c = write_lora(tmp_path / "c", known_lora(tiny_sd.unet, seed=2), "diffusers")
    assert published.fingerprint(c) != published.fingerprint(a)
    p1, p2 = write_lora(tmp_path / "p1", lora, "peft", alpha=2.0), write_lora(tmp_path / "p2", lora, "peft", alpha=4.0)
    assert published.fingerprint(p1) != published.fingerprint(p2)  # only adapter_config.json differs: alpha
    tiny_sd.unet.save_pretrained(tmp_path / "full" / "unet")
    before = published.fingerprint(tmp_path / "full")
    (tmp_path / "full" / "unet" / "notes.txt").write_text("not read")  # a file loading does not read
    assert published.fingerprint(tmp_path / "full") == before
    perturbed(tiny_sd.unet, seed=1).save_pretrained(tmp_path / "full" / "unet")
    assert published.fingerprint(tmp_path / "full") != before
    assert published.detect(tmp_path / "full").relative() == ["unet/config.json",
                                                              "unet/diffusion_pytorch_model.safetensors"]


# ---------------------------------------------------------------------------------------------------
# Catalogue entries on this machine (or not)


def test_a_missing_checkpoint_names_its_files_and_the_hf_download_command(tmp_path, monkeypatch):
    isolated(tmp_path, monkeypatch, "BENCH_WEIGHTS", "weights")
    entry = checkpoints.get("dpo-sdxl")
    with pytest.raises(PublishedWeightsError) as info:
        published.locate(entry)
    e = info.value
    assert e.missing == ("mhdang/dpo-sdxl-text2image-v1/unet/config.json",
                         "mhdang/dpo-sdxl-text2image-v1/unet/diffusion_pytorch_model.safetensors")
    assert e.command == checkpoints.fetch_command(entry) and e.command in str(e)
    assert e.command == ("hf download mhdang/dpo-sdxl-text2image-v1 unet/config.json "
                         f"unet/diffusion_pytorch_model.safetensors --local-dir '{tmp_path / 'weights'}/"
                         "mhdang/dpo-sdxl-text2image-v1'")
    with pytest.raises(PublishedWeightsError, match="hf download someone/nothing"):
        published.locate("someone/nothing")


def test_catalogue_entries_are_found_in_bench_weights_and_in_the_hf_cache(tiny_sd, tiny_sd_dir, tmp_path, monkeypatch):
    dirs = isolated(tmp_path, monkeypatch, "BENCH_WEIGHTS", "weights")
    npo = checkpoints.get("npo-sd15")  # what fetch_command's --local-dir writes: $BENCH_WEIGHTS/<repo>/<file>
    lora = known_lora(tiny_sd.unet)
    path = write_lora(tmp_path / "x", lora, "diffusers")
    (dirs["root"] / npo.repo / npo.files[0]).parent.mkdir(parents=True)
    shutil.copyfile(path, dirs["root"] / npo.repo / npo.files[0])
    neg = published.negative_unet(tiny_sd, "npo-sd15", merge_weight=npo.merge_weight)
    assert same_weights(neg, merged_by_hand(tiny_sd.unet, lora, 1.0), atol=1e-6)
    assert published.fingerprint("npo-sd15") == published.fingerprint(dirs["root"] / npo.repo / npo.files[0])

    want = perturbed(tiny_sd.unet, seed=4)  # dpo-sd15 in the Hugging Face cache layout
    snap = snapshot(dirs["cache"], "mhdang/dpo-sd1.5-text2image-v1")
    want.save_pretrained(snap / "unet")
    assert same_weights(published.load_unet(tiny_sd, "dpo-sd15"), want)

    spo = checkpoints.get("spo-sd15")  # a whole pipeline folder: only its unet/ is read
    (dirs["root"] / spo.repo).mkdir(parents=True)
    shutil.copyfile(tiny_sd_dir / "model_index.json", dirs["root"] / spo.repo / "model_index.json")
    want.save_pretrained(dirs["root"] / spo.repo / "unet")
    assert published.locate(spo).layout == "pipeline" and same_weights(published.load_unet(tiny_sd, spo), want)

    self_npo = checkpoints.get("self-npo-sd15")  # file names unknown: with several candidates, ask for one
    for name in ("a.safetensors", "b.safetensors"):
        (dirs["root"] / self_npo.repo / "weights_self_npo").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dirs["root"] / self_npo.repo / "weights_self_npo" / name)
    with pytest.raises(PublishedWeightsError, match="matches 2 files.*a.safetensors, b.safetensors.*pass the one"):
        published.negative_unet(tiny_sd, self_npo)

    kohya = checkpoints.get("spo-sd15-lora")  # the catalogue says diffusers keys: other keys are refused
    write_lora(dirs["root"] / kohya.repo, lora, "kohya").rename(dirs["root"] / kohya.repo / kohya.files[0])
    with pytest.raises(PublishedWeightsError, match=r"catalogue says lora \(diffusers keys\).*kohya"):
        published.load_unet(tiny_sd, kohya)


def test_the_catalogue_is_complete_and_consistent():
    names = set(checkpoints.CATALOGUE)
    assert {"dpo-sd15", "dpo-sdxl", "mapo-sdxl", "spo-sd15", "spo-sd15-lora", "spo-sdxl", "spo-sdxl-lora",
            "npo-sd15", "npo-sdxl", "self-npo-sd15", "kto-sd15"} <= names
    for c in checkpoints.CATALOGUE.values():
        cmd = checkpoints.fetch_command(c)
        assert cmd.startswith(f"hf download {c.repo} ") and "--local-dir" in cmd
        assert all(f in cmd for f in c.files) and c.check_note and c.sampler.source
        assert c.format != "lora" or c.lora_layout in checkpoints.LORA_LAYOUTS
    assert [r["name"] for r in checkpoints.rows()] == list(checkpoints.CATALOGUE)
    assert all(isinstance(v, str) for r in checkpoints.rows() for v in r.values())
    assert not checkpoints.get("self-npo-sd15").checked and checkpoints.get("npo-sdxl").merge_weight == 0.0
    with pytest.raises(checkpoints.CheckpointError, match="unknown checkpoint 'dpo'; available: dpo-sd15"):
        checkpoints.get("dpo")
    assert {n.checkpoint for n in checkpoints.PAPER_NUMBERS} <= names
    assert all(n.statistic in checkpoints.STATISTICS and n.source for n in checkpoints.PAPER_NUMBERS)
    hps = next(n for n in checkpoints.PAPER_NUMBERS if n.reward == "hpsv2")
    assert hps.harness_value == pytest.approx(0.2816)


def test_compare_says_whether_the_papers_value_is_in_our_interval():
    assert checkpoints.compare(0.70, 0.66, 0.62, 0.70) == "within CI"  # the ends belong to the interval
    assert checkpoints.compare(0.70, 0.60, 0.55, 0.65) == "differs"
    assert checkpoints.compare(0.50, 0.60, 0.55, 0.65) == "differs"
    with pytest.raises(ValueError, match="swapped"):
        checkpoints.compare(0.5, 0.5, 0.6, 0.4)
    with pytest.raises(ValueError, match="finite"):
        checkpoints.compare(float("nan"), 0.5, 0.4, 0.6)


# ---------------------------------------------------------------------------------------------------
# Export -> load


def artifact(tmp_path, pipe, lora: bool, seed: int = 11):
    """A harness artifact folder as the runner leaves it: save_unet's layout, method_config.json, manifest."""
    from methods.core.training import attach_lora, save_unet

    out = tmp_path / "checkpoints" / "m-123"
    if lora:
        unet = copy.deepcopy(pipe.unet)
        attach_lora(unet, RANK, torch.Generator().manual_seed(seed))
        with torch.no_grad():  # a trained LoRA: B is no longer 0
            for n, p in unet.named_parameters():
                if "lora_B" in n:
                    p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
        save_unet(unet, pipe, out, lora=True)
    else:
        save_unet(perturbed(pipe.unet, seed), pipe, out, lora=False)
    (out / "method_config.json").write_text(json.dumps({"beta": 5000.0, "merge_weight": 0.25}))
    integrity.write_manifest(out)
    return out


def test_an_exported_full_unet_loads_with_plain_diffusers_and_back_identically(pipe, tmp_path):
    from diffusers import UNet2DConditionModel

    art = artifact(tmp_path, pipe, lora=False)
    out = export.export(art, tmp_path / "export", method="dpo", base_model="sdxl")
    trained = UNet2DConditionModel.from_pretrained(art / "unet")
    assert same_weights(UNet2DConditionModel.from_pretrained(out / "unet"), trained)
    assert same_weights(published.load_unet(pipe, out), trained)
    card = (out / "README.md").read_text()
    sha = integrity.sha256_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert "base_model: stabilityai/stable-diffusion-xl-base-1.0" in card and "`dpo`" in card and sha in card
    assert '"beta": 5000.0' in card and integrity.manifest_problems(out) == []
    with pytest.raises(export.ExportError, match="not empty"):
        export.export(art, out, method="dpo", base_model="sdxl")


def test_an_exported_lora_loads_with_load_lora_weights_and_reads_back_as_the_npo_negative(pipe, tmp_path):
    from methods.core.training import load_trained_unet
    from methods.npo import negative_weights

    art = artifact(tmp_path, pipe, lora=True)
    out = export.export(art, tmp_path / "export", method="npo", base_model="sd15")
    trained = load_trained_unet(pipe, art)  # how the harness samples with its own artifact
    copy_pipe = copy.deepcopy(pipe)
    copy_pipe.load_lora_weights(out)  # plain diffusers, from the exported folder
    copy_pipe.fuse_lora()
    copy_pipe.unload_lora_weights()
    assert same_weights(copy_pipe.unet, trained, atol=1e-6)
    assert same_weights(published.load_unet(pipe, out), trained, atol=1e-6)
    positive = perturbed(pipe.unet, seed=12)
    neg = published.negative_unet(pipe, out, positive=positive, merge_weight=0.25)
    want = negative_weights(pipe.unet.state_dict(), positive.state_dict(), trained.state_dict(), 0.25)
    assert all(torch.allclose(neg.state_dict()[k], v, atol=1e-5) for k, v in want.items())
    info = json.loads((out / "bench_export.json").read_text())
    assert info["role"] == "negative" and "unconditional branch" in (out / "README.md").read_text()


def test_a_damaged_or_empty_artifact_is_not_exported(tiny_sd, tmp_path):
    art = artifact(tmp_path, tiny_sd, lora=False)
    (art / "unet" / "config.json").write_text("{}")
    with pytest.raises(export.ExportError, match="does not match its manifest"):
        export.export(art, tmp_path / "out", method="dpo", base_model="sd15")
    empty = tmp_path / "empty"
    empty.mkdir()
    integrity.write_manifest(empty)
    with pytest.raises(export.ExportError, match="nothing to export"):
        export.export(empty, tmp_path / "out", method="contrastive", base_model="sd15")
    assert not (tmp_path / "out").exists()
