"""Tiny-world fidelity: does the image show the shape and the colour its caption asks for?

A small CNN classifier with two heads (shape, colour), trained by ``bench prepare tiny`` on rendered
ground-truth images with blur, noise and colour-jitter augmentation (bench/tiny/pretrain.py), and
validated there on fresh renders (accuracy is stored beside the weights). The score of an image is
1.0 when both predicted labels match the caption and 0.0 otherwise, so its mean is the fraction
of faithful images. Label names are stored with the weights, so this file knows no vocabulary.
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

WEIGHTS = "fidelity.safetensors"
LABELS = "fidelity_labels.json"


class FidelityNet(nn.Module):
    """3 x (conv-BN-ReLU x 2 + maxpool) with 16/32/64 channels, then a shape and a colour head."""

    def __init__(self, n_shapes: int, n_colours: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in (16, 32, 64):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.shape_head = nn.Linear(64, n_shapes)
        self.colour_head = nn.Linear(64, n_colours)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 64) pooled features, the input of both heads."""
        return self.features(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(x)
        return self.shape_head(h), self.colour_head(h)


def predict(net: FidelityNet, x: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) in [0, 1] -> (shape index (N,), colour index (N,))."""
    net.eval()
    shapes, colours = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            s, c = net(x[i:i + batch])
            shapes.append(s.argmax(1))
            colours.append(c.argmax(1))
    return torch.cat(shapes), torch.cat(colours)


def save(net: FidelityNet, shapes: Sequence[str], colours: Sequence[str], folder: Path, **meta: float) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS))
    (folder / LABELS).write_text(json.dumps({"shapes": list(shapes), "colours": list(colours), **meta}, indent=1))


class Fidelity(Reward):
    id = "fidelity"
    role = "faithfulness"
    base_version = "fidelity-v1"
    display = "Fidelity (shape and colour correct)"
    description = "tiny world: 1 if a CNN classifier finds the caption's shape and colour, else 0"

    @property
    def version(self) -> str:
        digest = hashlib.sha256((self.weights / WEIGHTS).read_bytes()).hexdigest()[:10]
        return f"{self.base_version}+{digest}"

    def missing(self) -> list[str]:
        return [str(self.weights / f) for f in (WEIGHTS, LABELS) if not (self.weights / f).is_file()]

    def load(self) -> "Fidelity":
        from safetensors.torch import load_file

        labels = json.loads((self.weights / LABELS).read_text())
        self.shapes, self.colours = labels["shapes"], labels["colours"]
        self.net = FidelityNet(len(self.shapes), len(self.colours))
        self.net.load_state_dict(load_file(str(self.weights / WEIGHTS)))
        return self

    def _target(self, prompt: str) -> tuple[int, int]:
        words = prompt.lower().split()
        shape = next((self.shapes.index(w) for w in words if w in self.shapes), -1)
        colour = next((self.colours.index(w) for w in words if w in self.colours), -1)
        return shape, colour

    def image_features(self, images: Sequence, batch: int = 512) -> np.ndarray:
        """(N, 64) float32 penultimate features of the classifier (metrics/core/diversity.py's space)."""
        x = pil_to_tensor(images)
        self.net.eval()  # BatchNorm on running statistics: an image's features do not depend on its batch
        with torch.no_grad():
            return torch.cat([self.net.embed(x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()

    def score(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        shape, colour = predict(self.net, pil_to_tensor(images))
        target = torch.tensor([self._target(p) for p in prompts])
        return ((shape == target[:, 0]) & (colour == target[:, 1])).double().numpy()


REWARD = Fidelity
