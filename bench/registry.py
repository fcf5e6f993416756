"""Where methods and rewards come from: one module each in ``methods/`` and ``metrics/``, and in the
user's own packages.

A method is a module defining ``METHOD`` (its id is the module name); a reward is a module defining
``REWARD`` (its id is the module name with '_' written as '-'). Packages of your own, importable and
named in ``BENCH_METHOD_PACKAGES`` / ``BENCH_REWARD_PACKAGES`` (comma-separated), are searched after
the built-in one; an id may not be defined twice. ``available()`` imports nothing; ``get(id)``
imports only the module asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Registry:
    kind: str  # "method" or "reward": what error messages call an entry
    package: str  # the built-in package
    attribute: str  # what a module defines to register its class
    env: str  # the variable naming the user's packages
    id_of: Callable[[str], str] = lambda module: module

    def _modules(self) -> dict[str, str]:
        """id -> module name, the built-in package first."""
        found: dict[str, str] = {}
        for package in [self.package, *(p.strip() for p in os.environ.get(self.env, "").split(",") if p.strip())]:
            spec = importlib.util.find_spec(package)
            if spec is None or spec.submodule_search_locations is None:
                raise KeyError(f"{self.env} names {package!r}, which is not an importable package")
            for m in pkgutil.iter_modules(spec.submodule_search_locations):
                if m.ispkg:
                    continue
                key = self.id_of(m.name)
                if key in found:
                    raise KeyError(f"{self.kind} {key!r} is defined twice: {found[key]} and {package}.{m.name}")
                found[key] = f"{package}.{m.name}"
        return found

    def available(self) -> list[str]:
        return sorted(self._modules())

    def get(self, key: str) -> Any:
        modules = self._modules()
        if key not in modules:
            raise KeyError(f"unknown {self.kind} {key!r}; available: {', '.join(sorted(modules))}")
        cls = getattr(importlib.import_module(modules[key]), self.attribute)
        assert cls.id == key, f"{modules[key]} registers {cls.id!r}"
        return cls


METHODS = Registry("method", "methods", "METHOD", "BENCH_METHOD_PACKAGES")
REWARDS = Registry("reward", "metrics", "REWARD", "BENCH_REWARD_PACKAGES", id_of=lambda m: m.replace("_", "-"))
