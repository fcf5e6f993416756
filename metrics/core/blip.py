"""BLIP's image encoder and its "MED" text encoder, as ImageReward uses them — Li et al., "BLIP:
Bootstrapping Language-Image Pre-training for Unified Vision-Language Understanding and Generation",
ICML 2022, arXiv:2201.12086.

Written on plain torch with the parameter names of the originals (ImageReward/models/BLIP/vit.py and
med.py, themselves adapted from timm and transformers 4.15's BERT), so their state dicts load with
``strict=True``. Only the inference path ImageReward takes is implemented:

- ``VisionTransformer``: ViT with a class token, learned positions, pre-norm blocks (LayerNorm
  eps 1e-6, exact GELU, qkv with bias); returns every token after the final norm. ImageReward uses
  ViT-L/16 at 224 px (BLIP's ``create_vit('large', 224)``: width 1024, depth 24, 16 heads).
- ``MedTextEncoder``: BERT embeddings (word + absolute position, no token types) and layers of
  bidirectional self-attention, cross-attention to the image tokens, and a feed-forward block, each
  post-norm; no pooler. The self-attention mask is additive ``(1 - mask) · -10000`` as in the
  original; the cross-attention attends to every image token. Sizes come from ``med_config.json``;
  the cross-attention key/value width is the ViT's width (the original overrides the file's
  ``encoder_width`` with it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VitConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0


VIT_LARGE = VitConfig()  # ViT-L/16, 224 px: what ImageReward-v1.0 was trained with


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    layer_norm_eps: float
    pad_token_id: int
    encoder_width: int  # width of the image tokens the cross-attention reads

    @classmethod
    def from_med_config(cls, path: Path, encoder_width: int) -> "TextConfig":
        cfg = json.loads(Path(path).read_text())
        if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only hidden_act 'gelu' and absolute positions are supported (BLIP's MED)")
        if not cfg.get("add_cross_attention", False):
            raise ValueError(f"{path}: add_cross_attention must be true (ImageReward reads the image through it)")
        return cls(cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
                   cfg["intermediate_size"], cfg["max_position_embeddings"], cfg.get("layer_norm_eps", 1e-12),
                   cfg.get("pad_token_id", 0), encoder_width)


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, c = x.shape  # (B, T, C) -> (B, n, T, C/n)
    return x.view(b, t, n, c // n).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, n, t, d = x.shape  # (B, n, T, d) -> (B, T, n*d)
    return x.transpose(1, 2).reshape(b, t, n * d)


# -- image encoder ---------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, cfg: VitConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, 3, H, W) -> (B, N, C)


class VitAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class VitMlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class VitBlock(nn.Module):
    def __init__(self, cfg: VitConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.attn = VitAttention(cfg.width, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.mlp = VitMlp(cfg.width, int(cfg.width * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VitConfig = VIT_LARGE):
        super().__init__()
        self.cfg = cfg
        n_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, cfg.width))
        self.blocks = nn.ModuleList(VitBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed[:, :x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # (B, 1 + N, C)


# -- text encoder ----------------------------------------------------------------------------------
class BertEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        # A persistent buffer in the original, so it is in ImageReward.pt and is what positions are read from.
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings).expand((1, -1)))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, :input_ids.shape[1]]
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: TextConfig, kv_width: int):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q = _heads(self.query(x), self.heads)
        k, v = _heads(self.key(context), self.heads), _heads(self.value(context), self.heads)
        return _merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


class BertResidualOutput(nn.Module):  # the original's BertSelfOutput and BertOutput: dense, add, norm
    def __init__(self, d_in: int, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: TextConfig, kv_width: int):
        super().__init__()
        self.self = BertSelfAttention(cfg, kv_width)
        self.output = BertResidualOutput(cfg.hidden_size, cfg)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, context, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.attention = BertAttention(cfg, cfg.hidden_size)
        self.crossattention = BertAttention(cfg, cfg.encoder_width)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertResidualOutput(cfg.intermediate_size, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x, mask)
        x = self.crossattention(x, image, None)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))


class MedTextEncoder(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens, (B, T) 0/1 mask, (B, N, encoder_width) image tokens -> (B, T, hidden)."""
        x = self.embeddings(input_ids)
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0  # (B, 1, 1, T), additive
        for layer in self.encoder.layer:
            x = layer(x, mask, image)
        return x


class BLIP(nn.Module):
    """The part of BLIP's pre-training model that ImageReward keeps (vision_proj/text_proj are unused
    for scoring but are in the checkpoint)."""

    def __init__(self, vit: VitConfig, text: TextConfig, embed_dim: int = 256):
        super().__init__()
        self.visual_encoder = VisionTransformer(vit)
        self.text_encoder = MedTextEncoder(text)
        self.vision_proj = nn.Linear(vit.width, embed_dim)
        self.text_proj = nn.Linear(text.hidden_size, embed_dim)
