"""PickScore v1 — Kirstain et al., "Pick-a-Pic: An Open Dataset of User Preferences for Text-to-Image
Generation", NeurIPS 2023, arXiv:2305.01569.

CLIP ViT-H/14 (initialised from LAION's laion2B-s32B-b79K) fine-tuned on Pick-a-Pic v1 with a
Bradley-Terry objective over the CLIP logits: the score is the logit ``exp(logit_scale) · cos(image,
prompt)``, with the learned logit scale (≈ 100), so SDXL-class images score ≈ 21–23. (DiffusionDPO's and
Diffusion-SDPO's scripts report the raw cosine instead, ≈ 0.21–0.23: divide by the scale to compare.)

As in the PickScore README: weights from ``yuvalkirstain/PickScore_v1`` (``CLIPModel``), image
processor and tokenizer from ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (shorter side to 224 bicubic,
centre crop, OpenAI mean/std; prompts truncated to 77 tokens). The image processor runs on its PIL
backend (the transformers 4 behaviour the published numbers come from).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from metrics.core import hfclip
from metrics.core.hub import HubReward
from metrics.core.weights import Source

MODEL = Source("yuvalkirstain/PickScore_v1", ("config.json", "model.safetensors"))
PROCESSOR = Source("laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
                   ("preprocessor_config.json", "tokenizer_config.json", "vocab.json", "merges.txt"))


class PickScore(HubReward):
    id = "pickscore"
    role = "preference"
    learned_from = "pickapic-v2"
    base_version = "pickscore-v1"  # logit_scale.exp() * cos; PIL image processor
    display = "PickScore v1 (x100 logit)"
    description = "Pick-a-Pic preference model: CLIP ViT-H/14 logit exp(s)*cos, about 21-23 for good images"
    sources = (MODEL, PROCESSOR)

    def load(self) -> "PickScore":
        self.model = hfclip.load_model(self.folder(MODEL), self.device, self.torch_dtype)
        self.image_processor, self.tokenizer = hfclip.load_processor(self.folder(PROCESSOR))
        return self

    def score(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        scale = self.model.logit_scale.detach().float().exp().cpu()
        out = [hfclip.cosine(self.model, self.image_processor, self.tokenizer, images[b], prompts[b]).cpu()
               for b in self.batches(len(images))]
        return (scale * torch.cat(out)).double().numpy()


REWARD = PickScore
