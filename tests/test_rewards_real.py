"""The published reward models, on tiny random weights written in the official file formats.

Every model is built here in-process and saved the way its real checkpoint is stored (a CLIPModel
folder with safetensors; HPSv2's ``{'state_dict': ...}`` torch file; ImageReward's state dict plus
``med_config.json`` and a BERT ``vocab.txt``; the aesthetic head's ``.pth``), into a fake Hugging Face
cache or the local weights root. The rewards then load them through the same code path as the real
files, and their scores are checked against computations written out here. Agreement with the
official packages at full size is checked by benchmarks/parity/, not here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_pipelines
from hf_cache import isolated, snapshot
from metrics.core import preprocess

OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])


def normalised(*rgb: float) -> torch.Tensor:
    """A colour in [0, 1] as OpenAI CLIP's normalisation maps it."""
    return (torch.tensor(rgb) - OPENAI_MEAN) / OPENAI_STD


@pytest.fixture(autouse=True)
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    return isolated(tmp_path, monkeypatch, "BENCH_WEIGHTS", "weights")


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(64, 48), (48, 64), (40, 40)]  # (width, height): landscape, portrait, square
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


PROMPTS = ["a photo of a cat", "a dog", "photo of a dog and a cat"]


# -- CLIP-family rewards (transformers CLIPModel) ----------------------------------------------------
def save_tiny_clip(folder: Path, seed: int, logit_scale: float = math.log(50.0)) -> Path:
    """A tiny CLIPModel with its processor files, laid out like openai/clip-vit-large-patch14."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    tok = tiny_pipelines.tiny_tokenizer(folder)  # vocab.json + merges.txt
    tok.save_pretrained(str(folder))
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(image_size=32, patch_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    with torch.no_grad():
        model.logit_scale.fill_(logit_scale)
    model.save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


def by_hand_clip_cosine(folder: Path, imgs, prompts) -> torch.Tensor:
    """Cosine from the saved model, preprocessing written out: shorter side to 32 (PIL bicubic), centre crop."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(str(folder)).eval()
    pix = []
    for im in imgs:
        w, h = im.size
        short = min(w, h)
        im = im.resize((int(32 * w / short) if w > h else 32, int(32 * h / short) if h > w else 32), Image.BICUBIC)
        left, top = (im.size[0] - 32) // 2, (im.size[1] - 32) // 2
        x = torch.from_numpy(np.asarray(im.crop((left, top, left + 32, top + 32)), dtype=np.float32) / 255)
        pix.append(((x - OPENAI_MEAN) / OPENAI_STD).permute(2, 0, 1))
    tok = CLIPTokenizer.from_pretrained(str(folder))(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=torch.stack(pix)).pooler_output
        txt = model.get_text_features(**tok).pooler_output
    return torch.nn.functional.cosine_similarity(img, txt, dim=-1)


@pytest.fixture
def clip_in_cache(tmp_path: Path, hub: dict[str, Path]) -> Path:
    folder = save_tiny_clip(tmp_path / "clip", seed=0)
    snapshot(hub["cache"], "openai/clip-vit-large-patch14", files=folder)
    return folder


def test_pickscore_is_the_learned_logit_scale_times_the_cosine(tmp_path: Path, hub: dict[str, Path]):
    from metrics.pickscore import PickScore

    folder = save_tiny_clip(tmp_path / "pick", seed=1)
    snapshot(hub["cache"], "yuvalkirstain/PickScore_v1", files=folder)
    snapshot(hub["cache"], "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", files=folder)  # the processor comes from here
    reward = PickScore(None).load()
    got = reward.score(images(), PROMPTS)
    np.testing.assert_allclose(got, 50.0 * by_hand_clip_cosine(folder, images(), PROMPTS).numpy(), atol=1e-4)
    one_at_a_time = [reward.score([im], [p])[0] for im, p in zip(images(), PROMPTS)]
    np.testing.assert_allclose(got, one_at_a_time, atol=1e-5)  # no dependence on batch composition


def test_clip_score_is_100_cosine_clipped_at_zero(clip_in_cache: Path):
    from metrics.clip import ClipScore, from_cosine

    got = ClipScore(None).load().score(images(), PROMPTS)
    expected = np.maximum(100 * by_hand_clip_cosine(clip_in_cache, images(), PROMPTS).numpy(), 0)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_array_equal(from_cosine(torch.tensor([-0.3, 0.0, 0.25])).numpy(), [0.0, 0.0, 25.0])


def test_aesthetic_applies_the_linear_head_to_the_normalised_image_embedding(clip_in_cache: Path,
                                                                           hub: dict[str, Path]):
    from transformers import CLIPModel

    from metrics.aesthetic import Aesthetic
    from metrics.core.heads import LinearMLPHead

    torch.manual_seed(2)
    head = LinearMLPHead(16)
    path = hub["root"] / "christophschuhmann/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth"
    path.parent.mkdir(parents=True)
    torch.save(head.state_dict(), path)
    got = Aesthetic(None).load().score(images(), ["ignored"] * 3)

    model = CLIPModel.from_pretrained(str(clip_in_cache)).eval()
    with torch.no_grad():
        emb = model.get_image_features(pixel_values=preprocess.clip_center_crop(images(), 32)).pooler_output
        emb = emb / emb.norm(dim=-1, keepdim=True)
        w = [head.layers[i] for i in (0, 2, 4, 6, 7)]
        expected = emb
        for layer in w:  # no activations between the layers
            expected = expected @ layer.weight.T + layer.bias
    np.testing.assert_allclose(got, expected[:, 0].numpy(), atol=1e-5)


def test_openai_clip_preprocessing_resizes_the_short_side_and_crops_the_centre():
    left_red_right_blue = np.zeros((32, 48, 3), dtype=np.uint8)  # 48 wide, 32 high: no resize, crop 8 px per side
    left_red_right_blue[:, :24, 0] = 255
    left_red_right_blue[:, 24:, 2] = 255
    x = preprocess.clip_center_crop([Image.fromarray(left_red_right_blue)], 32)[0]
    red, blue = normalised(1.0, 0, 0), normalised(0, 0, 1.0)
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x[:, :, :16], red[:, None, None].expand(3, 32, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(x[:, :, 16:], blue[:, None, None].expand(3, 32, 16), atol=1e-5, rtol=0)


# -- HPS v2 / v2.1 (open_clip) ------------------------------------------------------------------------
TINY_OPEN_CLIP = {"embed_dim": 16,
                  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def save_hps(folder: Path, name: str, seed: int, prefix: str = "") -> Path:
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPEN_CLIP)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "state_dict": {prefix + k: v for k, v in model.state_dict().items()}}, folder / name)
    return folder


def test_hps_preprocessing_resizes_the_long_side_and_pads_black_with_the_odd_row_at_the_bottom():
    wide = Image.new("RGB", (300, 200), (255, 0, 0))  # -> 224 x 149, 75 rows of padding: 37 on top, 38 below
    tall = Image.new("RGB", (100, 300), (0, 0, 255))  # -> 75 x 224, 149 columns: 74 left, 75 right
    x = preprocess.hps_pad_square([wide, tall], 224)
    black = normalised(0, 0, 0)
    red, blue = normalised(1.0, 0, 0), normalised(0, 0, 1.0)
    assert x.shape == (2, 3, 224, 224)
    for rows, colour in ((slice(0, 37), black), (slice(37, 186), red), (slice(186, 224), black)):
        torch.testing.assert_close(x[0, :, rows], colour[:, None, None].expand_as(x[0, :, rows]), atol=1e-4, rtol=0)
    for cols, colour in ((slice(0, 74), black), (slice(74, 149), blue), (slice(149, 224), black)):
        part = x[1, :, :, cols]
        torch.testing.assert_close(part, colour[:, None, None].expand_as(part), atol=1e-4, rtol=0)


def test_hps_scores_are_the_cosine_of_open_clip_features_from_each_versions_own_checkpoint(tmp_path: Path,
                                                                                         hub: dict[str, Path]):
    import open_clip

    from metrics.hpsv2 import HPSv2
    from metrics.hpsv21 import HPSv21

    folder = save_hps(tmp_path / "hps", "HPS_v2_compressed.pt", seed=3)
    save_hps(folder, "HPS_v2.1_compressed.pt", seed=4, prefix="module.")  # as saved from DDP
    snapshot(hub["cache"], "xswu/HPSv2", files=folder)
    v2, v21 = HPSv2(None, arch=TINY_OPEN_CLIP).load(), HPSv21(None, arch=TINY_OPEN_CLIP).load()
    s2, s21 = v2.score(images(), PROMPTS), v21.score(images(), PROMPTS)

    model = open_clip.CLIP(**TINY_OPEN_CLIP)
    model.load_state_dict(torch.load(folder / "HPS_v2_compressed.pt")["state_dict"])
    with torch.no_grad():
        img = model.encode_image(preprocess.hps_pad_square(images(), 32), normalize=True)
        txt = model.encode_text(open_clip.tokenize(PROMPTS), normalize=True)
    np.testing.assert_allclose(s2, (img * txt).sum(-1).numpy(), atol=1e-5)
    assert np.abs(s2 - s21).max() > 1e-3  # v2.1 read its own file
    assert v2.version.startswith("hpsv2-v1+") and v21.version.startswith("hpsv21-v1+")


def test_hps_loading_is_strict(tmp_path: Path, hub: dict[str, Path]):
    from metrics.hpsv2 import HPSv2

    folder = save_hps(tmp_path / "hps", "HPS_v2_compressed.pt", seed=3)
    ckpt = torch.load(folder / "HPS_v2_compressed.pt")
    ckpt["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(ckpt, folder / "HPS_v2_compressed.pt")
    snapshot(hub["cache"], "xswu/HPSv2", files=folder)
    with pytest.raises(RuntimeError, match="extra.weight"):
        HPSv2(None, arch=TINY_OPEN_CLIP).load()


# -- ImageReward (BLIP + MED BERT) ---------------------------------------------------------------------
WORDS = ["a", "photo", "of", "cat", "dog", "and", "red", "blue"]


def save_imagereward(tmp_path: Path, hub: dict[str, Path], seed: int = 5, head_bias: float | None = None):
    from metrics.core import blip
    from metrics.imagereward import ImageRewardNet

    vit = blip.VitConfig(image_size=32, patch_size=16, width=32, depth=1, heads=2)
    bert = tmp_path / "bert"
    bert.mkdir(exist_ok=True)
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    med = {"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 32, "num_hidden_layers": 1,
           "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 40,
           "layer_norm_eps": 1e-12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": len(WORDS) + 5 + 2,
           "encoder_width": 768, "add_cross_attention": True}  # +2: BLIP's [DEC] and [ENC]
    ckpt = tmp_path / "ir"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "med_config.json").write_text(json.dumps(med))
    torch.manual_seed(seed)
    net = ImageRewardNet(vit, blip.TextConfig.from_med_config(ckpt / "med_config.json", vit.width))
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised parameters (cls token, positions) too
            p.copy_(torch.randn_like(p) * 0.2)
        if head_bias is not None:  # a constant head: the score is the normalised bias whatever the input
            for layer in net.mlp.layers:
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.zero_()
                    layer.bias.zero_()
            net.mlp.layers[7].bias.fill_(head_bias)
    torch.save(net.state_dict(), ckpt / "ImageReward.pt")
    snapshot(hub["cache"], "THUDM/ImageReward", files=ckpt)
    snapshot(hub["cache"], "bert-base-uncased", files=bert)  # the alias the official code downloads under
    return vit, net


def test_imagereward_state_dict_has_the_official_layout(tmp_path: Path, hub: dict[str, Path]):
    _, net = save_imagereward(tmp_path, hub)
    vit = {f"blip.visual_encoder.{k}" for k in ("cls_token", "pos_embed", "patch_embed.proj.weight",
                                                "patch_embed.proj.bias", "norm.weight", "norm.bias")}
    vit |= {f"blip.visual_encoder.blocks.0.{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1",
                                                             "mlp.fc2") for p in ("weight", "bias")}
    emb = {f"blip.text_encoder.embeddings.{k}" for k in ("word_embeddings.weight", "position_embeddings.weight",
                                                         "LayerNorm.weight", "LayerNorm.bias", "position_ids")}
    layer = {f"blip.text_encoder.encoder.layer.0.{a}.{m}.{p}" for a in ("attention", "crossattention")
             for m in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm")
             for p in ("weight", "bias")}
    layer |= {f"blip.text_encoder.encoder.layer.0.{m}.{p}" for m in ("intermediate.dense", "output.dense",
                                                                   "output.LayerNorm") for p in ("weight", "bias")}
    heads = {f"blip.{m}.{p}" for m in ("vision_proj", "text_proj") for p in ("weight", "bias")}
    heads |= {f"mlp.layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}
    assert set(net.state_dict()) == vit | emb | layer | heads
    assert net.state_dict()["blip.text_encoder.encoder.layer.0.crossattention.self.key.weight"].shape == (32, 32)


def test_imagereward_is_z_normalised_with_the_official_constants(tmp_path: Path, hub: dict[str, Path]):
    from metrics.imagereward import ImageReward

    vit, _ = save_imagereward(tmp_path, hub, head_bias=1.5)
    got = ImageReward(None, vit=vit).load().score(images(), PROMPTS)
    np.testing.assert_allclose(got, (1.5 - 0.16717362830052426) / 1.0333394966054072, rtol=1e-6)


def test_imagereward_reads_only_the_first_35_tokens(tmp_path: Path, hub: dict[str, Path]):
    from metrics.imagereward import ImageReward

    vit, _ = save_imagereward(tmp_path, hub)
    reward = ImageReward(None, vit=vit).load()
    words = [WORDS[i % len(WORDS)] for i in range(60)]
    im = images()[:1] * 4
    s = reward.score(im, [" ".join(words), " ".join(words[:33]), " ".join(words[:20]), " ".join(words[:19])])
    assert s[0] == pytest.approx(s[1], abs=1e-6)  # [CLS] + 33 words + [SEP] = 35 tokens
    assert abs(s[2] - s[3]) > 1e-4  # below the limit every word counts
    batch = reward.score(images(), PROMPTS)
    np.testing.assert_allclose(batch, [reward.score([i], [p])[0] for i, p in zip(images(), PROMPTS)], atol=1e-5)
    assert reward.tokenizer.tokenize("a [ENC] cat") == ["a", "[ENC]", "cat"]  # BLIP's special tokens are kept


def test_imagereward_loading_is_strict(tmp_path: Path, hub: dict[str, Path]):
    from metrics.imagereward import ImageReward

    vit, net = save_imagereward(tmp_path, hub)
    state = net.state_dict()
    state["blip.text_encoder.pooler.dense.weight"] = torch.zeros(32, 32)  # BertModel's pooler: not in BLIP's MED
    snap = snapshot(hub["cache"], "THUDM/ImageReward", files=tmp_path / "ir")
    torch.save(state, snap / "ImageReward.pt")
    with pytest.raises(RuntimeError, match="pooler"):
        ImageReward(None, vit=vit).load()


# -- what every published reward shares: missing files, fetch hints, versions ----------------------------
def test_missing_files_are_named_with_the_command_that_fetches_them():
    from bench.registry import REWARDS

    expect = {
        "pickscore": ["yuvalkirstain/PickScore_v1/model.safetensors", "hf download yuvalkirstain/PickScore_v1 "
                      "config.json model.safetensors", "hf download laion/CLIP-ViT-H-14-laion2B-s32B-b79K"],
        "hpsv2": ["xswu/HPSv2/HPS_v2_compressed.pt", "hf download xswu/HPSv2 HPS_v2_compressed.pt"],
        "hpsv21": ["xswu/HPSv2/HPS_v2.1_compressed.pt", "hf download xswu/HPSv2 HPS_v2.1_compressed.pt"],
        "imagereward": ["THUDM/ImageReward/med_config.json", "hf download THUDM/ImageReward ImageReward.pt "
                        "med_config.json", "hf download google-bert/bert-base-uncased vocab.txt"],
        "clip": ["openai/clip-vit-large-patch14/model.safetensors", "hf download openai/clip-vit-large-patch14"],
        "aesthetic": ["christophschuhmann/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth",
                      "curl -L", "raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth"],
    }
    for rid, needles in expect.items():
        reward = REWARDS.get(rid)(None)
        text = "\n".join(reward.missing()) + "\n" + reward.fetch_hint
        for needle in needles:
            assert needle in text, (rid, needle, text)
        with pytest.raises(FileNotFoundError, match="missing files"):
            reward.version


def test_version_follows_the_weight_content_and_the_dtype_not_the_location(tmp_path: Path, hub: dict[str, Path]):
    from metrics.hpsv2 import HPSv2

    folder = save_hps(tmp_path / "a", "HPS_v2_compressed.pt", seed=3)
    snapshot(hub["cache"], "xswu/HPSv2", files=folder)
    in_cache = HPSv2(None, arch=TINY_OPEN_CLIP).version
    explicit = tmp_path / "explicit"
    (explicit / "xswu/HPSv2").mkdir(parents=True)
    (explicit / "xswu/HPSv2/HPS_v2_compressed.pt").write_bytes((folder / "HPS_v2_compressed.pt").read_bytes())
    assert HPSv2(explicit, arch=TINY_OPEN_CLIP).version == in_cache  # same bytes elsewhere: same version
    save_hps(explicit / "xswu/HPSv2", "HPS_v2_compressed.pt", seed=9)
    assert HPSv2(explicit, arch=TINY_OPEN_CLIP).version != in_cache  # other weights: another version
    assert HPSv2(None, dtype=torch.bfloat16, arch=TINY_OPEN_CLIP).version.split("-")[-2] == "bfloat16"
    assert HPSv2(None).version != in_cache  # the official architecture is not this one


def test_an_explicit_folder_is_the_only_place_looked_in(tmp_path: Path, hub: dict[str, Path]):
    from metrics.hpsv2 import HPSv2

    snapshot(hub["cache"], "xswu/HPSv2", files=save_hps(tmp_path / "a", "HPS_v2_compressed.pt", seed=3))
    reward = HPSv2(tmp_path / "elsewhere")
    assert reward.missing() == ["xswu/HPSv2/HPS_v2_compressed.pt"]
    assert f"--local-dir '{tmp_path / 'elsewhere' / 'xswu/HPSv2'}'" in reward.fetch_hint
