"""Where each part of a tiny world lives: the one place that knows the folder's layout.

A world is built for a preset into ``<results>/models/tiny-<preset>-<hash>/`` (bench/tiny/prepare.py);
the base pipeline and the fidelity classifier come first, the data methods train on and
tiny-pickscore are derived from them on first use (bench/tiny/data.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REWARDS = {"fidelity": "rewards/fidelity", "tiny-pickscore": "rewards/tiny-pickscore"}  # reward id -> folder


@dataclass(frozen=True)
class WorldFiles:
    folder: Path

    @property
    def pipeline(self) -> Path:
        """The base model: a StableDiffusionPipeline folder."""
        return self.folder / "pipeline"

    @property
    def manifest(self) -> Path:
        """sha256 of every file of the build, the preset, timings and the classifier's accuracy."""
        return self.folder / "manifest.json"

    @property
    def pairs(self) -> Path:
        """tiny-pickapic, in the Pick-a-Pic v2 parquet layout."""
        return self.folder / "pickapic" / "train-00000-of-00001.parquet"

    @property
    def pair_stats(self) -> Path:
        """count, ties, agreement with the oracle, annotator, seconds."""
        return self.folder / "pickapic" / "stats.json"

    @property
    def captioned(self) -> Path:
        """Ground-truth renders of the train captions, for methods that train without labels."""
        return self.folder / "captioned" / "train-00000-of-00001.parquet"

    def reward(self, reward_id: str) -> Path:
        """The weights folder of one of the world's own rewards (``REWARDS``)."""
        return self.folder / REWARDS[reward_id]
