"""HPS v2 — Wu et al., "Human Preference Score v2: A Solid Benchmark for Evaluating Human Preferences
of Text-to-Image Synthesis", arXiv:2306.09341.

open_clip ViT-H/14 (initialised from laion2B-s32B-b79K) fine-tuned on HPD v2's 798k human choices.
The score is the raw cosine between the normalised image and prompt embeddings (no logit scale):
≈ 0.25–0.35; the HPS benchmark tables print it ×100. HPS v2 and v2.1 (metrics/hpsv21.py) are
different checkpoints whose scores are not comparable.

Weights: ``xswu/HPSv2`` ``HPS_v2_compressed.pt``, a torch file whose ``state_dict`` holds the
open_clip weights; loaded with ``weights_only=True`` and ``strict=True`` into stock open_clip's
ViT-H-14, so the 3.9 GB LAION base that the ``hpsv2`` package downloads first is never needed.
Preprocessing is HPSv2's own validation transform (longer side to 224, black padding; see
metrics/core/preprocess.py), prompts through open_clip's tokenizer (77 tokens). The official
``hpsv2.score`` runs under CUDA autocast (fp16 matmuls); here the dtype passed in is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from metrics.core import preprocess
from metrics.core.hub import HubReward
from metrics.core.weights import Source

ARCH = "ViT-H-14"  # the open_clip model config both HPS checkpoints were trained with
REPO = "xswu/HPSv2"


class HPSv2(HubReward):
    id = "hpsv2"
    role = "preference"
    learned_from = "hpdv2"
    base_version = "hpsv2-v1"  # raw cosine; HPS pad-to-square preprocessing
    display = "HPS v2 (cosine)"
    description = "Human Preference Score v2: open_clip ViT-H/14 cosine, about 0.25-0.35"
    checkpoint: ClassVar[str] = "HPS_v2_compressed.pt"
    sources = (Source(REPO, (checkpoint,)),)

    def __init__(self, weights: Path | None = None, device: str = "cpu", dtype: Any = None,
                 arch: dict | None = None):
        """``arch``: an open_clip model config (embed_dim, vision_cfg, text_cfg) replacing ViT-H-14 (tests)."""
        super().__init__(weights, device, dtype)
        self.arch = arch

    def architecture(self) -> dict | None:
        return self.arch

    def load(self) -> "HPSv2":
        import open_clip

        cfg = self.arch if self.arch is not None else open_clip.get_model_config(ARCH)
        model = open_clip.CLIP(**cfg, output_dict=True)
        ckpt = torch.load(self.folder(self.sources[0]) / self.checkpoint, map_location="cpu", weights_only=True)
        state = ckpt.get("state_dict", ckpt)
        if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
            state = {k[len("module."):]: v for k, v in state.items()}
        model.load_state_dict(state, strict=True)
        self.model = model.eval().to(self.device, self.torch_dtype)
        self.tokenizer = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"].get("context_length", 77))
        self.image_size = cfg["vision_cfg"]["image_size"]
        return self

    @torch.no_grad()
    def score(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        out = []
        for b in self.batches(len(images)):
            pixels = preprocess.hps_pad_square(images[b], self.image_size).to(self.device, self.torch_dtype)
            tokens = self.tokenizer(list(prompts[b])).to(self.device)
            img = self.model.encode_image(pixels, normalize=True).float()
            txt = self.model.encode_text(tokens, normalize=True).float()
            out.append((img * txt).sum(-1).cpu())
        return torch.cat(out).double().numpy()


REWARD = HPSv2
