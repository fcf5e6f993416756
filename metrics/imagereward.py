"""ImageReward v1.0 — Xu et al., "ImageReward: Learning and Evaluating Human Preferences for
Text-to-Image Generation", NeurIPS 2023, arXiv:2304.05977.

BLIP (ViT-L/16 image encoder, BERT-base "MED" text encoder with cross-attention to the image; see
metrics/core/blip.py) fine-tuned on 137k expert comparisons, with a linear head on the text encoder's
first token (metrics/core/heads.py). As in the official ``ImageReward.score``:

- image: shorter side to 224 bicubic, centre crop, OpenAI mean/std (metrics/core/preprocess.py);
- prompt: ``bert-base-uncased`` tokenizer plus BLIP's ``[DEC]``/``[ENC]`` special tokens, padded and
  truncated to **35** tokens;
- score: ``(head(h_[CLS]) − 0.16717) / 1.03334``, the authors' z-normalisation (≈ N(0, 1) on SD 1.4
  images; zai-org/ImageReward#40). Higher is better; typical range −2 to 2.

Weights: ``THUDM/ImageReward`` ``ImageReward.pt`` (a plain state dict, loaded with
``weights_only=True`` and ``strict=True``) and ``med_config.json`` (the text encoder's sizes), plus
``vocab.txt`` of ``google-bert/bert-base-uncased``. The official package is not used: it pins
timm 0.6 and does not import on transformers 5 (research/stack.md); benchmarks/parity/ checks this
port against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from metrics.core import blip, preprocess
from metrics.core.heads import LinearMLPHead
from metrics.core.hub import HubReward
from metrics.core.weights import Source

CHECKPOINT = Source("THUDM/ImageReward", ("ImageReward.pt", "med_config.json"), aliases=("zai-org/ImageReward",))
TOKENIZER = Source("google-bert/bert-base-uncased", ("vocab.txt",), aliases=("bert-base-uncased",))
MAX_TOKENS = 35  # ImageReward.score: padding='max_length', truncation=True, max_length=35
MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.__init__: self.mean, self.std


class ImageRewardNet(nn.Module):
    """Module layout of the official ``ImageReward`` (``blip.*``, ``mlp.layers.*``)."""

    def __init__(self, vit: blip.VitConfig, text: blip.TextConfig):
        super().__init__()
        self.blip = blip.BLIP(vit, text)
        self.mlp = LinearMLPHead(text.hidden_size)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image = self.blip.visual_encoder(pixels)
        hidden = self.blip.text_encoder(input_ids, attention_mask, image)
        return (self.mlp(hidden[:, 0].float()) - MEAN) / STD  # (B,)


class ImageReward(HubReward):
    id = "imagereward"
    role = "preference"
    learned_from = "imagerewarddb"
    base_version = "imagereward-v1"  # 35 tokens, z-normalised with the official mean/std
    display = "ImageReward v1.0 (z-score)"
    description = "ImageReward: BLIP ViT-L/16 + BERT cross-attention reward, z-normalised, about -2..2"
    sources = (CHECKPOINT, TOKENIZER)

    def __init__(self, weights: Path | None = None, device: str = "cpu", dtype: Any = None,
                 vit: blip.VitConfig | None = None):
        """``vit``: an image-encoder size replacing ViT-L/16 at 224 px (tests build small ones)."""
        super().__init__(weights, device, dtype)
        self.vit = vit

    def architecture(self) -> dict | None:
        return None if self.vit is None else vars(self.vit)

    def load(self) -> "ImageReward":
        from transformers import BertTokenizer

        folder = self.folder(CHECKPOINT)
        vit = self.vit or blip.VIT_LARGE
        text = blip.TextConfig.from_med_config(folder / "med_config.json", encoder_width=vit.width)
        net = ImageRewardNet(vit, text)
        net.load_state_dict(torch.load(folder / "ImageReward.pt", map_location="cpu", weights_only=True), strict=True)
        self.net = net.eval().to(self.device, self.torch_dtype)
        self.net.mlp.float()  # the head runs in float32, as the official .float() before it
        tokenizer = BertTokenizer.from_pretrained(str(self.folder(TOKENIZER)))
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # BLIP's init_tokenizer
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        self.tokenizer = tokenizer
        return self

    @torch.no_grad()
    def score(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        size = self.net.blip.visual_encoder.cfg.image_size
        out = []
        for b in self.batches(len(images)):
            pixels = preprocess.clip_center_crop(images[b], size).to(self.device, self.torch_dtype)
            text = self.tokenizer(list(prompts[b]), padding="max_length", truncation=True, max_length=MAX_TOKENS,
                                  return_tensors="pt").to(self.device)
            out.append(self.net(pixels, text["input_ids"], text["attention_mask"]).cpu())
        return torch.cat(out).double().numpy()


REWARD = ImageReward
