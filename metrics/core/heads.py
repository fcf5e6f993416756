"""The scoring head shared by the LAION aesthetic predictor v2 and ImageReward.

Both use the same five linear layers (in -> 1024 -> 128 -> 64 -> 16 -> 1) with dropout between the
first four and no activation at all: the ReLUs are commented out in both originals
(improved-aesthetic-predictor/simple_inference.py ``MLP``; ImageReward/ImageReward.py ``MLP``), so
the head is an affine map. The module layout is kept so their state dicts (``layers.0/2/4/6/7``)
load unchanged; dropout is inactive in ``eval()``.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearMLPHead(nn.Module):
    def __init__(self, input_size: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)  # (B, in) -> (B,)
