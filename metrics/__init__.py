"""Reward models, one module each; the module name is the reward id with '-' written as '_'.

``available()`` lists them without importing any; ``get(id)`` imports only the one asked for.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from metrics.core.api import Reward


def available() -> list[str]:
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.ispkg)


def get(reward_id: str) -> type[Reward]:
    if reward_id not in available():
        raise KeyError(f"unknown reward {reward_id!r}; available: {', '.join(available())}")
    cls = importlib.import_module(f"metrics.{reward_id.replace('-', '_')}").REWARD
    assert cls.id == reward_id, f"metrics/{reward_id}.py registers {cls.id!r}"
    return cls
