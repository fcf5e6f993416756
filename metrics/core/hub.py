"""The part every published reward model shares: its files, where they are, and what its version is.

A subclass lists its ``sources`` (metrics.core.weights.Source) and implements ``load`` and
``score``. This class answers ``missing`` and ``fetch_hint`` for the preflight, finds each source's
folder, and builds the stored version: the code version, a fingerprint of every file read, the
dtype when it is not float32, and a tag of the architecture when a test overrides the official one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Iterator

from metrics.core import weights as hubfiles
from metrics.core.api import Reward


class HubReward(Reward):
    sources: ClassVar[tuple[hubfiles.Source, ...]]
    batch_size: ClassVar[int] = 16  # images per forward pass; the runner hands over up to 256 at a time

    def __init__(self, weights: Path | None = None, device: str = "cpu", dtype: Any = None):
        super().__init__(weights, device, dtype)
        self._version: str | None = None

    # -- files -------------------------------------------------------------------------------------
    def folder(self, source: hubfiles.Source) -> Path:
        found = hubfiles.find(source, self.weights)
        if found is None:
            raise FileNotFoundError(f"reward {self.id!r} is missing files: "
                                    f"{', '.join(hubfiles.missing(source, self.weights))}\n"
                                    + hubfiles.fetch_hint([source], self.weights))
        return found

    def files(self) -> list[Path]:
        """Every file this reward reads, in a fixed order (the version's fingerprint covers them all)."""
        out: list[Path] = []
        for source in self.sources:
            folder = self.folder(source)
            for name in source.files:
                out += sorted(folder.glob(name))
        return out

    def missing(self) -> list[str]:
        return [m for s in self.sources for m in hubfiles.missing(s, self.weights)]

    @property
    def fetch_hint(self) -> str:
        lacking = [s for s in self.sources if hubfiles.missing(s, self.weights)]
        return hubfiles.fetch_hint(lacking or self.sources, self.weights)

    # -- identity ----------------------------------------------------------------------------------
    def architecture(self) -> Any:
        """A non-default architecture (tests build small ones), or None for the official one."""
        return None

    @property
    def version(self) -> str:
        if self._version is None:
            parts = [f"{self.base_version}+{hubfiles.fingerprint(self.files())}"]
            if self.torch_dtype != _torch().float32:
                parts.append(str(self.torch_dtype).removeprefix("torch."))
            if self.architecture() is not None:
                arch = json.dumps(self.architecture(), sort_keys=True, default=str)
                parts.append("arch" + hashlib.sha256(arch.encode()).hexdigest()[:8])
            self._version = "-".join(parts)
        return self._version

    # -- running -----------------------------------------------------------------------------------
    @property
    def torch_dtype(self):
        """The dtype passed in, float32 when none was."""
        torch = _torch()
        if self.dtype is None:
            return torch.float32
        if not isinstance(self.dtype, torch.dtype):
            raise TypeError(f"reward {self.id!r}: dtype must be a torch.dtype or None, got {self.dtype!r}")
        return self.dtype

    def batches(self, n: int) -> Iterator[slice]:
        for i in range(0, n, self.batch_size):
            yield slice(i, min(n, i + self.batch_size))


def _torch():
    import torch

    return torch
