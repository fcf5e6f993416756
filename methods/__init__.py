"""Alignment methods, one module each; the module name is the method id.

``available()`` lists them without importing any; ``get(id)`` imports only the one asked for.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from methods.core.api import Method


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.ispkg)


def get(method_id: str) -> type[Method]:
    if method_id not in available():
        raise KeyError(f"unknown method {method_id!r}; available: {', '.join(available())}")
    cls = importlib.import_module(f"methods.{method_id}").METHOD
    assert cls.id == method_id, f"methods/{method_id}.py registers {cls.id!r}"
    return cls
