"""Shared fixtures: tiny offline SD1.5- and SDXL-layout pipelines (see tests/tiny_pipelines.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Set before diffusers / transformers are imported: nothing in the tests may touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402

import tiny_pipelines  # noqa: E402

torch.set_num_threads(1)  # tiny models: threads only contend (the CI box has 2 shared cores)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_pipelines.build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_pipelines.build_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture
def tiny_sd(tiny_sd_dir: Path):
    """A freshly loaded tiny SD pipeline (tests may modify it)."""
    return tiny_pipelines.load(tiny_sd_dir)


@pytest.fixture
def tiny_sdxl(tiny_sdxl_dir: Path):
    return tiny_pipelines.load(tiny_sdxl_dir)
