"""CLIP score — Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning",
EMNLP 2021, arXiv:2104.08718; here in the torchmetrics convention used by text-to-image papers.

Backbone: OpenAI CLIP ViT-L/14 (``openai/clip-vit-large-patch14``, torchmetrics' default), with its
own processor (shorter side to 224 bicubic, centre crop, OpenAI mean/std) on the PIL backend, prompts
truncated to 77 tokens (the tokenizer keeps the end-of-text token).
Score: ``max(100 · cos(image, prompt), 0)`` per image, i.e. torchmetrics' ``clip_score`` computed
per pair (its module form averages first and clips the average). Typical values 25–35. The paper's
original form ``2.5 · max(cos, 0)`` is this divided by 40.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from metrics.core import hfclip
from metrics.core.hub import HubReward
from metrics.core.weights import Source

CLIP_L14 = Source("openai/clip-vit-large-patch14", ("config.json", "model.safetensors", "preprocessor_config.json",
                                                    "tokenizer_config.json", "vocab.json", "merges.txt"))


def from_cosine(cos: torch.Tensor) -> torch.Tensor:
    """torchmetrics' scaling: 100 · cos, clipped at 0."""
    return (100 * cos).clamp(min=0)


class ClipScore(HubReward):
    id = "clip"
    role = "faithfulness"
    base_version = "clip-vitl14-openai-100xrelu-v1"  # backbone, then the scale: max(100*cos, 0)
    display = "CLIP score (ViT-L/14, max(100 cos, 0))"
    description = "image-prompt agreement: max(100*cos, 0) with OpenAI CLIP ViT-L/14, about 25-35"
    sources = (CLIP_L14,)

    def load(self) -> "ClipScore":
        folder = self.folder(CLIP_L14)
        self.model = hfclip.load_model(folder, self.device, self.torch_dtype)
        self.image_processor, self.tokenizer = hfclip.load_processor(folder)
        return self

    def score(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        out = [hfclip.cosine(self.model, self.image_processor, self.tokenizer, images[b], prompts[b]).cpu()
               for b in self.batches(len(images))]
        return from_cosine(torch.cat(out)).double().numpy()

    def image_embeddings(self, images: Sequence) -> np.ndarray:
        """(N, 768) float32 projected image embeddings (not normalised), the vectors ``score`` compares
        with the prompt: metrics/core/diversity.py's CLIP space."""
        out = [hfclip.image_embeddings(self.model, self.image_processor, images[b]).cpu()
               for b in self.batches(len(images))]
        return torch.cat(out).numpy()


REWARD = ClipScore
