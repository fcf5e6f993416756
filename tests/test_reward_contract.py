"""The contract every registered reward keeps; runs over ``REWARDS.available()`` automatically.

Registration (id = module name, a docstring first, a version, a direction, a description); with
nothing on disk, ``missing`` names files and the reward says how to get them (the tiny world's own
rewards are built with the world); a reward that needs no files scores PIL images with one finite
float each, the same whatever batch an image is scored in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.registry import REWARDS
from bench.tiny.files import REWARDS as TINY_WORLD_REWARDS
from hf_cache import isolated

ALL = REWARDS.available()


@pytest.fixture(autouse=True)
def empty_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolated(tmp_path, monkeypatch, "BENCH_WEIGHTS", "weights")


@pytest.mark.parametrize("reward_id", ALL)
def test_registered_with_version_direction_and_description(reward_id):
    cls = REWARDS.get(reward_id)
    assert cls.id == reward_id
    assert (sys.modules[cls.__module__].__doc__ or "").strip(), "the module docstring comes first: what it measures"
    assert isinstance(cls.base_version, str) and cls.base_version, "a version keys the stored scores"
    assert isinstance(cls.higher_is_better, bool)
    assert cls.description, "bench list rewards shows it"


@pytest.mark.parametrize("reward_id", ALL)
def test_missing_files_are_named_with_how_to_get_them(reward_id, tmp_path):
    reward = REWARDS.get(reward_id)(tmp_path / "nothing-here" if reward_id in TINY_WORLD_REWARDS else None)
    missing = reward.missing()
    assert isinstance(missing, list) and all(isinstance(m, str) and m for m in missing)
    if missing and reward_id not in TINY_WORLD_REWARDS:  # the tiny world builds its own on first use
        assert getattr(reward, "fetch_hint", ""), f"{reward_id} names missing files without saying how to fetch them"


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


NOWHERE = Path("/nonexistent/weights")  # an explicit folder is the only place a reward looks in


@pytest.mark.parametrize("reward_id", [r for r in ALL if not REWARDS.get(r)(NOWHERE).missing()])
def test_a_reward_without_files_scores_each_image_alone(reward_id):
    reward = REWARDS.get(reward_id)(NOWHERE).load()
    images, prompts = _images(4), ["a red circle on a white background"] * 4
    together = np.asarray(reward.score(images, prompts), dtype=np.float64)
    alone = np.concatenate([np.asarray(reward.score(images[i:i + 1], prompts[i:i + 1]), dtype=np.float64)
                            for i in range(4)])
    assert together.shape == (4,) and np.isfinite(together).all()
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    assert isinstance(reward.version, str) and reward.version
