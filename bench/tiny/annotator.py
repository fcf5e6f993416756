"""A simulated human rater: Bradley-Terry choices on the ground-truth utility, with ties.

For two images with utilities u0 and u1 the rater calls a tie when |u0 - u1| < ``tie_band``
(people cannot tell near-equal images apart), and otherwise prefers image 0 with probability
sigmoid((u0 - u1) / temperature). Labels follow Pick-a-Pic: label_0 in {1, 0.5, 0}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Annotator:
    temperature: float = 0.04  # utility units; smaller = a more consistent rater
    tie_band: float = 0.01

    def label(self, u0: torch.Tensor, u1: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N,) utilities of both images -> (N,) label_0 in {1.0, 0.5, 0.0}."""
        p0 = torch.sigmoid((u0 - u1) / self.temperature)
        pick0 = torch.rand(u0.shape, generator=generator) < p0
        label = pick0.double()
        return torch.where((u0 - u1).abs() < self.tie_band, torch.full_like(label, 0.5), label)


def agreement(label_0: torch.Tensor, u0: torch.Tensor, u1: torch.Tensor) -> float:
    """Share of non-tied labels that agree with the utility order."""
    keep = label_0 != 0.5
    return float(((label_0[keep] == 1.0) == (u0[keep] > u1[keep])).double().mean())
