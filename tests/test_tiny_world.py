"""The tiny world: generator, oracle, annotator, tokenizer, and the cached pipeline in the SD layout."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import torch

from bench import models, prefdata
from bench.tiny import data, prepare, pretrain, world
from bench.tiny.annotator import Annotator, agreement
from bench.tiny.files import WorldFiles
from bench.tiny.tokenizer import build_tokenizer
from metrics import oracle


@pytest.fixture(scope="module")
def micro_world(tmp_path_factory) -> WorldFiles:
    return WorldFiles(prepare.ensure(tmp_path_factory.mktemp("results"), "micro", log=lambda m: None))


def test_generator_is_deterministic_and_seed_dependent():
    caps = world.all_captions()[:20]
    a, b, c = world.render(caps, 5), world.render(caps, 5), world.render(caps, 6)
    assert a.shape == (20, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_shapes_tilt_within_the_bound():
    # Large triangles, centred, crisp and clean: the apex (top row of the shape) sits above the centre,
    # off the vertical axis by at most circumradius * sin(tilt), plus a pixel of rasterisation.
    caps = [world.Caption("triangle", "red", "black", "large")] * 64
    crisp = dict(max_offset=0.0, softness=(0.25, 0.25), noise=(0.0, 0.0), desaturation=(0.0, 0.0))
    upright = world.render(caps, 3, world.FreeAttributes(max_tilt=0.0, **crisp))
    assert torch.allclose(upright, upright.flip(3), atol=1e-5)  # no tilt: mirror-symmetric about the axis

    def apex_offsets(images: torch.Tensor) -> torch.Tensor:
        mask = images[:, 0] > 0.5
        top = mask.any(dim=2).float().argmax(dim=1)  # first row with shape pixels
        cols = torch.stack([mask[i, top[i]].float() for i in range(len(images))])
        x = (cols * torch.arange(32.0)).sum(1) / cols.sum(1)
        return (x - 15.5).abs()

    tilted = apex_offsets(world.render(caps, 3, world.FreeAttributes(**crisp)))
    turned = apex_offsets(world.render(caps, 3, world.FreeAttributes(max_tilt=180.0, **crisp)))
    bound = 1.15 * 10.5 * math.sin(math.radians(15)) + 1.0
    assert tilted.max() <= bound and tilted.max() > 0.5  # tilted, but within the bound
    assert turned.max() > bound  # free turns leave it (the bound is not vacuous)


def test_captions_split_into_disjoint_suites():
    caps = world.all_captions()
    assert len({c.text for c in caps}) == len(caps) == 360
    train, evals = world.split_captions()
    assert len(evals) >= 200 and len(train) >= 150
    assert not {c.text for c in train} & {c.text for c in evals}
    assert {c.shape for c in evals} == set(world.SHAPES) == {c.shape for c in train}
    for c in caps[::17]:
        assert world.parse_caption(c.text) == c


def test_oracle_prefers_centred_sharp_saturated_clean_images():
    caps = world.all_captions()[::3]
    ideal = world.FreeAttributes(max_offset=0.0, softness=(0.25, 0.25), noise=(0.0, 0.0),
                                 desaturation=(0.0, 0.0), brightness=(1.0, 1.0))
    worst = world.FreeAttributes(max_offset=7.0, softness=(1.6, 1.6), noise=(0.06, 0.06),
                                 desaturation=(0.4, 0.4), brightness=(0.85, 0.85))
    good, bad = oracle.components(world.render(caps, 1, ideal)), oracle.components(world.render(caps, 1, worst))
    for name in oracle.COMPONENTS:
        assert 0 <= good[name].min() and good[name].max() <= 1
        assert good[name].mean() > bad[name].mean() + 0.15, name
    # One free attribute at a time moves its own component.
    noisy = world.FreeAttributes(max_offset=0.0, softness=(0.25, 0.25), noise=(0.06, 0.06),
                                 desaturation=(0.0, 0.0), brightness=(1.0, 1.0))
    parts = oracle.components(world.render(caps, 1, noisy))
    assert parts["cleanliness"].mean() < good["cleanliness"].mean() - 0.4
    assert abs(parts["centring"].mean() - good["centring"].mean()) < 0.05


def test_data_leaves_room_to_align():
    caps = world.all_captions()
    u = torch.stack([oracle.utility(world.render(caps, s)) for s in range(8)])  # (8 samples, captions)
    assert u.std(0).mean() > 0.05  # within-caption spread: what a method can learn to move
    assert u.max(0).values.mean() > u.mean() + 0.1


def test_annotator_statistics():
    g = torch.Generator().manual_seed(0)
    u0, u1 = torch.rand(20000, generator=g), torch.rand(20000, generator=g)
    labels = Annotator(temperature=0.05, tie_band=0.02).label(u0, u1, torch.Generator().manual_seed(1))
    assert set(labels.unique().tolist()) == {0.0, 0.5, 1.0}
    tie_rate = float((labels == 0.5).double().mean())
    assert abs(tie_rate - (1 - (1 - 0.02) ** 2)) < 0.01  # P(|U0 - U1| < d) for uniforms
    assert 0.85 < agreement(labels, u0, u1) < 1.0
    # Far-apart utilities are (almost) always ordered right; a colder rater agrees more.
    far = (u0 - u1).abs() > 0.3
    assert agreement(labels[far], u0[far], u1[far]) > 0.99
    cold = Annotator(temperature=0.01, tie_band=0.02).label(u0, u1, torch.Generator().manual_seed(1))
    assert agreement(cold, u0, u1) > agreement(labels, u0, u1)
    again = Annotator(temperature=0.05, tie_band=0.02).label(u0, u1, torch.Generator().manual_seed(1))
    assert torch.equal(labels, again)


def test_tokenizer_keeps_caption_words_whole(tmp_path):
    words = ["a", "red", "circle", "on", "white", "background"]
    tok = build_tokenizer(tmp_path, words, 16)
    ids = tok("a red circle on a white background").input_ids
    assert len(ids) == 2 + 7  # start, one token per word, end
    assert tok.decode(ids, skip_special_tokens=True).strip() == "a red circle on a white background"
    assert len(tok("a green hexagon").input_ids) > 5  # unknown words fall back to bytes


def test_micro_world_is_a_stable_diffusion_folder(micro_world):
    pipe_dir = micro_world.pipeline
    for part in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                 "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json"):
        assert (pipe_dir / part).is_file(), part
    assert json.loads((pipe_dir / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert prepare.verify(micro_world.folder) is None
    spec = models.resolve(str(pipe_dir))
    assert spec.family == "sd15"  # the tiny model is loaded exactly as an SD1.5 folder would be
    pipe = models.load_pipeline(spec.folder)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    manifest = json.loads(micro_world.manifest.read_text())
    assert 0 <= manifest["classifier_accuracy"] <= 1 and manifest["times"]["total_s"] > 0


def test_world_names_are_pinned_and_preset_knobs_shape_the_unet():
    # Cached worlds are named by these hashes and results rows carry them: renaming a world (a preset
    # change, or WORLD_VERSION for a code change that moves the weights) must be a deliberate edit here.
    assert prepare.preset_hash(pretrain.PRESETS["default"]) == "56fda5d012"
    assert prepare.preset_hash(pretrain.PRESETS["micro"]) == "ae697eedc3"
    variant = replace(pretrain.PRESETS["micro"], unet_cross_attention=(0, 1, 1), unet_heads=8)
    assert prepare.preset_hash(variant) != prepare.preset_hash(pretrain.PRESETS["micro"])
    special = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    unet, _ = pretrain.build_unet_and_text_encoder(variant, 40, special)
    assert unet.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert unet.config.up_block_types == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    assert unet.config.attention_head_dim == 8


def test_training_timesteps_follow_the_preset():
    g = torch.Generator().manual_seed(0)
    uniform = pretrain.sample_timesteps("uniform", 20000, 1000, g)
    logit = pretrain.sample_timesteps("logit-normal", 20000, 1000, g)
    assert 0 <= int(logit.min()) and int(logit.max()) <= 999 and 0 <= int(uniform.min()) and int(uniform.max()) <= 999
    # sigmoid(N(0, 1)): median at t = 500 and about 68% of the mass within sigmoid(+-1) = [269, 731)
    assert abs(float(logit.float().median()) - 500) < 10
    assert abs(float(((logit >= 269) & (logit < 731)).float().mean()) - 0.683) < 0.01
    assert abs(float(((uniform >= 269) & (uniform < 731)).float().mean()) - 0.462) < 0.01
    with pytest.raises(ValueError, match="uniform, logit-normal"):
        pretrain.sample_timesteps("cosine", 4, 1000, g)


def test_corrupted_cache_is_rebuilt(tmp_path):
    messages = []
    folder = prepare.ensure(tmp_path, "micro", log=messages.append)
    weights = next((WorldFiles(folder).pipeline / "unet").glob("*.safetensors"))
    good = weights.read_bytes()
    weights.write_bytes(good[:-10] + b"corrupted!")
    assert "checksum mismatch" in prepare.verify(folder)
    again = prepare.ensure(tmp_path, "micro", log=messages.append)
    assert again == folder and prepare.verify(folder) is None
    assert any("corrupted" in m and "rebuilding" in m for m in messages)
    assert weights.read_bytes() == good  # deterministic rebuild: the same bytes again


def test_tiny_pickapic_uses_the_pickapic_v2_schema(micro_world, tmp_path):
    pipe = models.load_pipeline(micro_world.pipeline)
    files = WorldFiles(tmp_path)
    path = data.ensure_pairs(files, pipe, n_pairs=24)
    table = pq.read_table(path)
    for col in ("caption", "jpg_0", "jpg_1", "label_0", "label_1", "ranking_id", "image_0_uid", "image_1_uid"):
        assert col in table.column_names, col
    labels = table.column("label_0").to_pylist()
    assert set(labels) <= {0.0, 0.5, 1.0}
    assert all(a + b == 1.0 for a, b in zip(labels, table.column("label_1").to_pylist()))
    pairs = prefdata.read_pickapic(path, keep_ties=True)
    assert len(pairs) == 24
    assert prefdata.decode_image(pairs.images_w[0]).size == (32, 32)
    stats = json.loads(files.pair_stats.read_text())
    assert stats["pairs"] == 24 and 0 <= stats["agreement_with_oracle"] <= 1


def test_the_default_world_is_shipped_verified_and_part_of_the_revision(tmp_path):
    shipped = prepare.shipped_dir("default")
    assert shipped is not None and prepare.verify(shipped) is None
    assert prepare.world_dir(tmp_path, "default") == shipped  # every machine runs on these bytes
    listed = json.loads(WorldFiles(shipped).manifest.read_text())["files"]
    files = WorldFiles(shipped)
    for part in (files.pipeline / "unet", files.reward("fidelity"), files.reward("tiny-pickscore"), files.pairs,
                 files.pair_stats, files.captioned):
        assert any(rel.startswith(str(part.relative_to(shipped))) for rel in listed), part
    # Pinned: the shipped bytes change only by a deliberate edit here (and new run ids follow).
    assert prepare.content_id(shipped) == "b5fa61316407"
    assert prepare.revision("default") == "tiny-default@56fda5d012:b5fa61316407"
    assert prepare.revision("micro") == "tiny-micro@ae697eedc3"  # not shipped: built on first use


def test_a_damaged_shipped_world_is_an_error_naming_the_file(tmp_path, monkeypatch):
    copy = tmp_path / "shipped" / prepare.shipped_dir("default").name
    shutil.copytree(prepare.shipped_dir("default"), copy)
    monkeypatch.setattr(prepare, "SHIPPED", tmp_path / "shipped")
    weights = WorldFiles(copy).reward("fidelity") / "fidelity.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    weights.write_bytes(bytes(data))
    with pytest.raises(prepare.TinyWorldError, match=r"damaged \(checksum mismatch in rewards/fidelity/fidelity"):
        prepare.ensure(tmp_path / "results", "default", log=lambda m: None)
    assert not (tmp_path / "results").exists()  # never replaced by a local build


def test_data_derived_after_a_build_joins_its_manifest(micro_world, tmp_path):
    folder = tmp_path / micro_world.folder.name
    shutil.copytree(micro_world.folder, folder)
    path = data.ensure_captioned(WorldFiles(folder), per_caption=1)
    listed = json.loads(WorldFiles(folder).manifest.read_text())["files"]
    assert str(path.relative_to(folder)) in listed and prepare.verify(folder) is None
    path.write_bytes(path.read_bytes()[:-5])
    assert "checksum mismatch in captioned" in prepare.verify(folder)
