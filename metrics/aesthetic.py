"""LAION aesthetic predictor v2 ("improved aesthetic predictor") — C. Schuhmann, 2022,
https://github.com/christophschuhmann/improved-aesthetic-predictor (no paper; LAION-5B, arXiv:2210.08402,
describes its v1 predecessor).

A linear head trained with MSE on SAC + LAION-Logos + AVA ratings, applied to the L2-normalised
OpenAI CLIP ViT-L/14 image embedding: ``sac+logos+ava1-l14-linearMSE.pth`` (768 -> 1024 -> 128 -> 64
-> 16 -> 1, no activations, metrics/core/heads.py). Scale: AVA-like 1-10; generated images mostly
5-6.5. Image only: the prompt is ignored. Not the v1 ``sa_0_4_vit_l_14_linear.pth`` head that HEIM
and the HPSv3 benchmark call "aesthetic".

The reference script encodes with the ``clip`` package's ViT-L/14 and its preprocessing (shorter side
to 224 bicubic, centre crop, OpenAI mean/std); here the same encoder weights are read from
``openai/clip-vit-large-patch14`` (the Hugging Face conversion of that checkpoint) and the same
preprocessing is applied (metrics/core/preprocess.py). The head runs in float32, as in the script.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from metrics.core import hfclip, preprocess
from metrics.core.heads import LinearMLPHead
from metrics.core.hub import HubReward
from metrics.core.weights import Source

ENCODER = Source("openai/clip-vit-large-patch14", ("config.json", "model.safetensors"))
HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"
HEAD = Source("christophschuhmann/improved-aesthetic-predictor", (HEAD_FILE,),
              urls=("https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
                    "sac%2Blogos%2Bava1-l14-linearMSE.pth",))


class Aesthetic(HubReward):
    id = "aesthetic"
    role = "preference"
    learned_from = "laion-aesthetic-ratings"
    base_version = "aesthetic-v2-linearmse-clipl14-v1"
    display = "LAION aesthetic v2 (1-10)"
    description = "LAION improved aesthetic predictor v2 on CLIP ViT-L/14 image embeddings, 1-10 (prompt ignored)"
    sources = (ENCODER, HEAD)

    def load(self) -> "Aesthetic":
        self.encoder = hfclip.load_model(self.folder(ENCODER), self.device, self.torch_dtype)
        state = torch.load(self.folder(HEAD) / HEAD_FILE, map_location="cpu", weights_only=True)
        self.head = LinearMLPHead(self.encoder.config.projection_dim)
        self.head.load_state_dict(state, strict=True)
        self.head = self.head.eval().to(self.device)
        return self

    @torch.no_grad()
    def score(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        size = self.encoder.config.vision_config.image_size
        out = []
        for b in self.batches(len(images)):
            pixels = preprocess.clip_center_crop(images[b], size).to(self.device, self.torch_dtype)
            emb = hfclip.embedding(self.encoder.get_image_features(pixel_values=pixels)).float()
            emb = emb / emb.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # the script maps a zero norm to 1
            out.append(self.head(emb).cpu())
        return torch.cat(out).double().numpy()


REWARD = Aesthetic
