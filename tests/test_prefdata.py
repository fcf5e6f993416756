"""Pick-a-Pic v2 reading, writing, tie and flip handling, malformed rows, encoding cache."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from bench import prefdata
from bench.prefdata import read_pickapic, write_pickapic


def _img(value: int, size=(20, 16)) -> Image.Image:
    return Image.new("RGB", size, (value, 255 - value, value // 2))


def _rows():
    # label_0 = 1: keep order; 0: flip; 0.5: tie
    return [
        {"caption": "a cat", "jpg_0": _img(10), "jpg_1": _img(200), "label_0": 1.0, "label_1": 0.0, "ranking_id": 7},
        {"caption": "a dog", "jpg_0": _img(30), "jpg_1": _img(120), "label_0": 0.0, "label_1": 1.0, "ranking_id": 8},
        {"caption": "a cat", "jpg_0": _img(50), "jpg_1": _img(90), "label_0": 0.5, "label_1": 0.5, "ranking_id": 9},
    ]


def _color(image: Image.Image) -> int:
    return image.getpixel((0, 0))[0]


def test_round_trip_flip_and_ties(tmp_path):
    path = write_pickapic(tmp_path / "shard.parquet", _rows())
    assert set(pq.read_schema(path).names) >= {"caption", "jpg_0", "jpg_1", "label_0", "label_1", "ranking_id",
                                               "image_0_uid", "image_1_uid"}
    pairs = read_pickapic(path)
    assert pairs.captions == ["a cat", "a dog"] and pairs.ids == ["7", "8"]
    assert pairs.label == [1.0, 1.0] and pairs.ties_dropped == 1 and pairs.flipped == 1 and pairs.skipped == {}
    assert [_color(pairs.image_w(i)) for i in range(2)] == [10, 120]  # row 2 flipped: image_1 won
    assert [_color(pairs.image_l(i)) for i in range(2)] == [200, 30]
    assert pairs.image_w(0).size == (20, 16)  # PNG: lossless round trip

    kept = read_pickapic(tmp_path, keep_ties=True)  # a folder of shards works too
    assert kept.label == [1.0, 1.0, 0.5] and kept.ties_dropped == 0
    assert _color(kept.image_w(2)) == 50  # a tie keeps the file's order


def test_malformed_rows_are_counted(tmp_path):
    rows = _rows()[:2] + [
        {"caption": "x", "jpg_0": b"not an image", "jpg_1": _img(1), "label_0": 1.0, "label_1": 0.0},
        {"caption": "y", "jpg_0": _img(2), "jpg_1": _img(3), "label_0": 0.7, "label_1": 0.3},
        {"caption": "z", "jpg_0": _img(2), "jpg_1": _img(3), "label_0": 1.0, "label_1": 1.0},
        {"caption": "w", "jpg_0": _img(2), "jpg_1": _img(3), "label_0": float("nan"), "label_1": 0.0},
    ]
    pairs = read_pickapic(write_pickapic(tmp_path / "s.parquet", rows))
    assert len(pairs) == 2
    assert pairs.skipped == {"undecodable image": 1, "label outside {0, 0.5, 1}": 2, "label_0 + label_1 != 1": 1}


def test_missing_columns_error_names_file_and_columns(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"caption": ["a"], "jpg_0": [b"x"], "label_0": [1.0]}), path)
    with pytest.raises(ValueError, match=r"bad\.parquet.*\['jpg_1', 'label_1'\]"):
        read_pickapic([path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no parquet shards"):
        read_pickapic(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_pickapic(tmp_path / "nope.parquet")


def test_to_pixels_resize_and_center_crop():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white left quarter is cropped away at 16 px
    px = prefdata.to_pixels(image, 16)
    assert px.shape == (3, 16, 16) and px.min() >= -1 and px.max() <= 1
    assert px[:, :, 8:].max() == -1  # right half black
    assert px[:, :, 0].mean() > -1  # the crop starts at x = 8 of a 32-wide image: edge of the white band


def test_encode_pairs_caches_and_skips_encoders(tiny_sd, tmp_path, monkeypatch):
    pairs = read_pickapic(write_pickapic(tmp_path / "d" / "s.parquet", _rows()), keep_ties=True)
    data = prefdata.encode_pairs(tiny_sd, pairs, "cpu", 16, tmp_path / "cache")
    assert data.latents_w.shape == data.latents_l.shape == (3, 4, 8, 8)
    assert data.label.tolist() == [1.0, 1.0, 0.5] and data.captions == pairs.captions
    assert data.cond.embeds.shape == (3, 77, 16)
    assert torch.equal(data.cond.embeds[0], data.cond.embeds[2])  # same caption, encoded once

    calls = []

    def spy(name, fn):
        return lambda *a, **k: calls.append(name) or fn(*a, **k)

    monkeypatch.setattr(tiny_sd.vae, "encode", spy("vae", tiny_sd.vae.encode))
    monkeypatch.setattr(tiny_sd.text_encoder, "forward", spy("text", tiny_sd.text_encoder.forward))
    again = prefdata.encode_pairs(tiny_sd, pairs, "cpu", 16, tmp_path / "cache")
    assert calls == []
    assert torch.equal(again.latents_w, data.latents_w) and torch.equal(again.cond.embeds, data.cond.embeds)

    # another subset of the data is another cache entry: the spies see the encoders run
    sub = prefdata.encode_pairs(tiny_sd, pairs.subset([0, 1]), "cpu", 16, tmp_path / "cache")
    assert "vae" in calls and "text" in calls and len(sub) == 2
    torch.testing.assert_close(sub.latents_w, data.latents_w[:2])


def test_encode_pairs_matches_direct_encoding(tiny_sdxl, tmp_path):
    from methods.core.diffusion import encode_images, encode_prompts

    pairs = read_pickapic(write_pickapic(tmp_path / "s.parquet", _rows()))
    data = prefdata.encode_pairs(tiny_sdxl, pairs, "cpu", 16, tmp_path / "cache")
    px = prefdata.to_pixels(pairs.image_l(1), 16)[None]
    torch.testing.assert_close(data.latents_l[1:2], encode_images(tiny_sdxl.vae, px))
    c = encode_prompts(tiny_sdxl, ["a dog"])
    torch.testing.assert_close(data.cond.embeds[1:2], c.embeds)
    assert data.cond.added["time_ids"].shape == (2, 6) and data.cond.added["text_embeds"].shape == (2, 16)


def test_cache_holds_each_image_and_its_flip_posterior(tiny_sd, tmp_path):
    """For each image of a pair: the posterior mean and std of its pixels and of its mirrored pixels (the
    official code flips pixels before the VAE, train.py:760), kept through the cache."""
    from methods.core.diffusion import encode_images

    left_right = Image.new("RGB", (16, 16), (250, 20, 20))
    left_right.paste((10, 40, 230), (0, 0, 5, 16))  # a blue band on the left only: not mirror-symmetric
    rows = [{"caption": "a cat", "jpg_0": _img(10, (16, 16)), "jpg_1": left_right, "label_0": 0.0, "label_1": 1.0}]
    pairs = read_pickapic(write_pickapic(tmp_path / "s.parquet", rows))
    data = prefdata.encode_pairs(tiny_sd, pairs, "cpu", 16, tmp_path / "cache")
    px = prefdata.to_pixels(left_right, 16)[None]  # the winner (image_1 won)
    assert not torch.equal(px, px.flip(-1))
    vae, scale = tiny_sd.vae, tiny_sd.vae.config.scaling_factor
    with torch.no_grad():
        std, std_flipped = (vae.encode(x).latent_dist.std * scale for x in (px, px.flip(-1)))
    torch.testing.assert_close(data.latents_w, encode_images(vae, px))
    torch.testing.assert_close(data.flipped_w, encode_images(vae, px.flip(-1)))  # the flipped pixels' encoding
    torch.testing.assert_close(data.std_w, std)
    torch.testing.assert_close(data.flipped_std_w, std_flipped)
    assert (data.std_w > 0).all() and not torch.allclose(data.flipped_w, data.latents_w.flip(-1))  # not a latent flip
    again = prefdata.encode_pairs(tiny_sd, pairs, "cpu", 16, tmp_path / "cache")  # from the cache
    for name in ("latents_w", "latents_l", "std_w", "std_l", "flipped_w", "flipped_l", "flipped_std_w",
                 "flipped_std_l"):
        assert torch.equal(getattr(again, name), getattr(data, name)), name


def test_encode_images_data(tiny_sd, tmp_path):
    pairs = read_pickapic(write_pickapic(tmp_path / "s.parquet", _rows()))
    winners = pairs.winners()
    data = prefdata.encode_images_data(tiny_sd, winners, "cpu", 16, tmp_path / "cache")
    assert data.latents.shape == (2, 4, 8, 8) and data.captions == ["a cat", "a dog"]
    pair_data = prefdata.encode_pairs(tiny_sd, pairs, "cpu", 16, tmp_path / "cache")
    torch.testing.assert_close(data.latents, pair_data.latents_w)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_model_fingerprint_follows_weights_not_location(tiny_sd_dir, tmp_path):
    import tiny_pipelines

    a, b = tiny_pipelines.load(tiny_sd_dir), tiny_pipelines.load(tiny_sd_dir)
    assert prefdata.model_fingerprint(a) == prefdata.model_fingerprint(b)
    with torch.no_grad():
        b.vae.decoder.conv_out.bias[0] += 1e-3
    assert prefdata.model_fingerprint(a) != prefdata.model_fingerprint(b)
