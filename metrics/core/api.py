"""The one interface every reward model implements.

A reward scores (image, prompt) pairs; higher is better unless ``higher_is_better`` says otherwise.
Heavy imports and weight loading happen in ``load``; ``missing`` names what is not on disk so that
the runner can stop before any work with a message that says how to fetch it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np


class Reward:
    id: ClassVar[str]
    base_version: ClassVar[str]  # bump whenever the computation changes: it keys the stored scores
    higher_is_better: ClassVar[bool] = True
    # What it measures (bench.store.ROLES): "gold" (the truth preference labels are drawn from), "preference"
    # (a learned stand-in for human preference) or "faithfulness" (does the image show the prompt).
    role: ClassVar[str] = "preference"
    learned_from: ClassVar[str] = ""  # the preference data a learned reward was trained on (a dataset id)
    display: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, weights: Path | None, device: str = "cpu", dtype: Any = None):
        self.weights = weights  # folder or file holding this reward's weights (None if it needs none)
        self.device = device
        self.dtype = dtype

    @property
    def version(self) -> str:
        """The stored version: the code version, plus a fingerprint of the weights when there are any."""
        return self.base_version

    def missing(self) -> list[str]:
        """Files that must exist before ``load`` can work; empty when everything is present."""
        return []

    def load(self) -> "Reward":
        """Load weights (once). Returns self."""
        return self

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> np.ndarray:
        """(B,) float scores for PIL images and their prompts."""
        raise NotImplementedError
