"""tiny-pickscore: a small learned preference model, the tiny world's analogue of PickScore.

PickScore is CLIP fine-tuned on Pick-a-Pic pairs with a Bradley-Terry objective. Here a small CNN
image tower and a bag-of-words caption tower are trained the same way on ``tiny-pickapic``
(bench/tiny/data.py): loss = -log sigmoid(s(winner) - s(loser)). It is a proxy learned from noisy
labels, never the truth, and it is the reward that online methods (TailorPO) may use in the loop.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from metrics.core.api import Reward
from metrics.oracle import pil_to_tensor

WEIGHTS = "tiny_pickscore.safetensors"
VOCAB = "tiny_pickscore_vocab.json"


class PreferenceNet(nn.Module):
    def __init__(self, vocab_size: int, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in (16, 32, 64):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1), nn.GELU(),
                       nn.AvgPool2d(2)]
            c_in = c
        self.image = nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, width))
        self.words = nn.EmbeddingBag(vocab_size + 1, width, mode="mean")  # index 0: unknown word
        self.head = nn.Sequential(nn.GELU(), nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, word_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        f = self.image(x * 2 - 1)
        t = self.words(word_ids, offsets)
        return self.head(torch.cat([f, f * t], dim=1)).squeeze(1)


def encode_words(vocab: dict[str, int], prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [[vocab.get(w, 0) for w in p.lower().split()] or [0] for p in prompts]
    offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
    return torch.tensor([i for row in ids for i in row]), offsets


def save(net: PreferenceNet, vocab: dict[str, int], folder: Path, **meta: float) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS))
    (folder / VOCAB).write_text(json.dumps({"vocab": vocab, **meta}, indent=1))


class TinyPickScore(Reward):
    id = "tiny-pickscore"
    role = "preference"
    learned_from = "tiny-pickapic"
    base_version = "tiny-pickscore-v1"
    display = "tiny-PickScore (learned from tiny-pickapic)"
    description = "tiny world: Bradley-Terry preference model trained on the simulated rater's pairs"

    @property
    def version(self) -> str:
        digest = hashlib.sha256((self.weights / WEIGHTS).read_bytes()).hexdigest()[:10]
        return f"{self.base_version}+{digest}"

    def missing(self) -> list[str]:
        return [str(self.weights / f) for f in (WEIGHTS, VOCAB) if not (self.weights / f).is_file()]

    def load(self) -> "TinyPickScore":
        from safetensors.torch import load_file

        self.vocab = json.loads((self.weights / VOCAB).read_text())["vocab"]
        self.net = PreferenceNet(len(self.vocab)).eval()
        self.net.load_state_dict(load_file(str(self.weights / WEIGHTS)))
        return self

    def score_tensor(self, x: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Differentiable scores of (N, 3, H, W) images in [0, 1]; for methods that guide with the reward."""
        return self.net(x, *encode_words(self.vocab, prompts))

    def score(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        with torch.no_grad():
            return self.score_tensor(pil_to_tensor(images), prompts).double().numpy()


REWARD = TinyPickScore
