"""Inputs for `bench run` on a tiny test pipeline of a real layout: a prompt file and a Pick-a-Pic shard."""

from __future__ import annotations

from pathlib import Path

import torch


def run_inputs(root: Path) -> tuple[Path, Path]:
    """A prompt file and a small Pick-a-Pic shard (16 px images), for a run on the tiny test pipeline."""
    from PIL import Image

    from bench.prefdata import write_pickapic

    root.mkdir(parents=True, exist_ok=True)
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(f"a {c} {s}" for c in ("red", "blue", "green") for s in ("cat", "dog", "photo",
                                                                                           "cat photo")) + "\n")
    g = torch.Generator().manual_seed(0)

    def image() -> Image.Image:
        return Image.fromarray((torch.rand(16, 16, 3, generator=g) * 255).byte().numpy())

    rows = [{"caption": c, "jpg_0": image(), "jpg_1": image(), "label_0": float(i % 2), "label_1": float(1 - i % 2)}
            for i, c in enumerate(["a cat", "a dog", "a photo of a cat", "dog photo"] * 2)]
    return prompts, write_pickapic(root / "pickapic" / "train-0.parquet", rows).parent
