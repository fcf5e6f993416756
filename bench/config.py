"""Parsing and hashing of what a user asks for: seeds, ``--set section.field=value``, config hashes.

Overrides arrive one way (``--set dpo.beta=2500``) and are checked against the field's type;
every error names the offending text and what is allowed. Numbers must be finite: ``nan`` passes every
range check a config makes (each comparison is false). Precedence, lowest first: the method config's
dataclass defaults, the method's per-model defaults, then ``--set``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import typing
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    """Bad user input: the CLI prints it and exits with code 2 before any work."""


MAX_SEEDS = 10_000  # seeds per run: each is an image per prompt and method, and a range is expanded in memory
MAX_SEED = 2**31 - 1  # the largest seed: images.seed is a 32-bit INTEGER column


def _seed_limits(text: str, n: int, hi: int, flag: str, max_n: int) -> None:
    """Refuse ``n`` seeds up to ``hi`` before anything is expanded."""
    if hi > MAX_SEED:
        raise UsageError(f"{flag} {text!r}: seed {hi} is too large; seeds go up to {MAX_SEED} (2**31 - 1)")
    if n > max_n:
        raise UsageError(f"{flag} {text!r} asks for {n:,} seeds; at most {max_n:,} per run")


def parse_seeds(text: str, flag: str = "--seeds", max_n: int = MAX_SEEDS) -> list[int]:
    """'0-3' -> [0, 1, 2, 3]; '0,2,5' -> [0, 2, 5]; '1' -> [1]. Sorted, unique, non-negative, at most
    ``max_n`` of them, none above ``MAX_SEED``; errors name ``flag``."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = (int(v) for v in part.split("-", 1))
                if lo > hi:
                    raise ValueError
            else:
                lo = hi = int(part)
        except ValueError:
            raise UsageError(f"malformed {flag} {text!r}: expected e.g. '0-3', '0,2,5' or '7'") from None
        _seed_limits(text, hi - lo + 1, hi, flag, max_n)  # before the range is expanded: '0-100000000' is 10^8 ints
        seeds.update(range(lo, hi + 1))
        _seed_limits(text, len(seeds), hi, flag, max_n)
    if not seeds or min(seeds) < 0:
        raise UsageError(f"malformed {flag} {text!r}: seeds must be non-negative integers")
    return sorted(seeds)


def parse_list(text: str | None, available: list[str], what: str) -> list[str] | None:
    """'a,b' -> ['a', 'b'], each checked against ``available``; None stays None (use the default)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"empty --{what}; available: {', '.join(available)}")
    for name in names:
        if name not in available:
            raise UsageError(f"unknown {what[:-1] if what.endswith('s') else what} {name!r}; "
                             f"available: {', '.join(available)}")
    return list(dict.fromkeys(names))


def parse_sets(items: list[str]) -> dict[str, dict[str, str]]:
    """['dpo.beta=2500', 'sampler.steps=30'] -> {'dpo': {'beta': '2500'}, 'sampler': {'steps': '30'}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise UsageError(f"malformed --set {item!r}: expected section.field=value, e.g. dpo.beta=2500")
        out.setdefault(section, {})[name] = value.strip()
    return out


def _coerce(value: str, kind: Any, where: str) -> Any:
    kind = typing.get_origin(kind) or kind
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            number = int(value)
            if not -2**63 <= number < 2**63:  # what torch (seeds, sizes) and the store (BIGINT) hold
                raise UsageError(f"--set {where}={value!r}: out of range; integers go from -2**63 to 2**63 - 1")
            return number
        if kind is float:
            number = float(value)
            if not math.isfinite(number):  # nan compares false with every bound a validate() checks
                raise UsageError(f"--set {where}={value!r}: expected a finite number, not {number}")
            return number
        if kind is str:
            return value
    except UsageError:
        raise
    except ValueError:
        pass
    raise UsageError(f"--set {where}={value!r}: expected {getattr(kind, '__name__', kind)}")


def build_config(cls: type, base: dict[str, Any], overrides: dict[str, str], section: str) -> Any:
    """Instantiate frozen dataclass ``cls`` from defaults ``base`` and string ``overrides``, type-checked."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(base)
    for name, text in overrides.items():
        if name not in fields:
            raise UsageError(f"unknown setting {section}.{name}; {section} has: {', '.join(sorted(fields))}")
        values[name] = _coerce(text, hints[name], f"{section}.{name}")
    try:
        cfg = cls(**values)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except (TypeError, ValueError) as e:
        raise UsageError(f"invalid {section} settings: {e}") from None
    return cfg


def canonical_json(obj: Any) -> str:
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SamplerConfig:
    """How images are drawn. Part of every run's identity; base and methods share it."""

    name: str = "ddim"  # 'ddim' (eta 0) or 'pipeline' (the model's own default scheduler)
    steps: int = 20
    batch: int = 64  # images per sampling batch; never changes pixels (noise is per image)

    def validate(self) -> None:
        if self.name not in ("ddim", "pipeline"):
            raise ValueError(f"sampler.name must be 'ddim' or 'pipeline', got {self.name!r}")
        if self.steps < 1 or self.batch < 1:
            raise ValueError("sampler.steps and sampler.batch must be >= 1")

    def key_fields(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps}


def versions() -> dict[str, str]:
    """Versions of the libraries that change numbers."""
    out = {}
    for pkg in ("diffusion-pref-bench", "torch", "diffusers", "transformers", "peft", "accelerate", "numpy",
                "pillow", "duckdb"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def git_sha(repo: Path = Path(__file__).resolve().parent.parent) -> str:
    """The commit of the harness code, with '+dirty' when the work tree has changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        # No optional locks: a run killed while git refreshes the index would leave .git/index.lock behind.
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty else "")
