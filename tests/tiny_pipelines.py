"""Tiny random Stable Diffusion (1.5 and XL layout) pipelines, built in-process from configs.

Offline: the tokenizer is a byte-level CLIP BPE written to disk here (research/stack.md §3), every
model is randomly initialised under ``torch.manual_seed(0)``. The saved folders have exactly the
layout of the real checkpoints, so ``DiffusionPipeline.from_pretrained(dir)`` loads them.
Images are 16 px (latent 4×8×8, VAE scale factor 2).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

_MERGES = ["o f</w>", "p h", "ph o", "pho t", "phot o</w>", "c a", "ca t</w>", "d o", "do g</w>"]


def _bytes_to_unicode() -> dict[int, str]:
    # The GPT-2 / CLIP byte -> printable-unicode table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer_files(folder: Path) -> Path:
    """vocab.json + merges.txt of a CLIP-style BPE: 256 byte chars, each with '</w>', merges, specials."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in _MERGES]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab_list)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n")
    return folder


def tiny_tokenizer(folder: Path, pad_token: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                         pad_token=pad_token)


def _text_config(tok, hidden: int = 16, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    extra = {"projection_dim": projection_dim} if projection_dim else {}
    return CLIPTextConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, **extra,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=16,
    )


def _unet(cross_attention_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=8, in_channels=4,
        out_channels=4, cross_attention_dim=cross_attention_dim, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        **extra,
    )


def build_tiny_sd(out_dir: Path) -> Path:
    """A random SD1.5-layout pipeline (DDIM) saved to ``out_dir``; returns ``out_dir``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    out_dir = Path(out_dir)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tok = tiny_tokenizer(Path(tmp))
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(_text_config(tok)), tokenizer=tok, unet=_unet(16),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir)
    return out_dir


def build_tiny_sdxl(out_dir: Path) -> Path:
    """A random SDXL-layout pipeline (two text encoders, text_time conditioning, Euler) saved to ``out_dir``."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    out_dir = Path(out_dir)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tok, tok2 = tiny_tokenizer(Path(tmp)), tiny_tokenizer(Path(tmp), pad_token="!")
    te, te2 = CLIPTextModel(_text_config(tok)), CLIPTextModelWithProjection(_text_config(tok2, projection_dim=16))
    # text_embeds (pooled projection, 16) + 6 micro-conditioning ids, each embedded in 8 dims.
    unet = _unet(16 + 16, addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=16 + 6 * 8)
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2, unet=unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading"),
    )
    pipe.save_pretrained(out_dir)
    return out_dir


def load(folder: Path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe
