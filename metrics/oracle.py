"""Ground-truth utility of the tiny world: what a perfect rater of the tiny world likes.

The utility is measured from pixels only and is the mean of four components in [0, 1]:

- centring:    1 - distance(object centroid, image centre) / 10 px
- sharpness:   how steeply the object's edges rise (its 24 steepest mask steps)
- saturation:  mean HSV saturation of the object
- cleanliness: 1 - estimated pixel-noise std of the background / 0.06

None of them is fixed by a caption, and the tiny world's data draws every one of them at random
(bench/tiny/world.py), so a model that imitates its data does not maximise the utility: there is
room to align, and a method that aligns moves the truth, not only a learned proxy of it.
The object mask is found as the pixels far from the median border colour.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from metrics.core.api import Reward

COMPONENTS = ("centring", "sharpness", "saturation", "cleanliness")


def pil_to_tensor(images: Sequence) -> torch.Tensor:
    """PIL images -> (N, 3, H, W) float in [0, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2)


def median3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median filter per channel: removes pixel noise, keeps edges where they are."""
    n, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3)  # (N, C*9, H*W)
    return patches.view(n, c, 9, h * w).median(dim=2).values.view(n, c, h, w)


def object_mask(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) -> (soft mask (N, H, W) in [0, 1], background colour (N, 3)), noise-insensitive."""
    x = median3(x)
    border = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    bg = border.median(dim=2).values
    dist = (x - bg[:, :, None, None]).norm(dim=1)
    scale = torch.quantile(dist.flatten(1), 0.98, dim=1).clamp(min=0.05)
    mask = ((dist / scale[:, None, None]) - 0.35).div(0.3).clamp(0, 1)
    return mask, bg


def components(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four utility components, each (N,) in [0, 1]."""
    n, _, h, w = x.shape
    mask, bg = object_mask(x)
    weight = mask.flatten(1).sum(1).clamp(min=1e-6)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    cy = (mask * ys).flatten(1).sum(1) / weight
    cx = (mask * xs).flatten(1).sum(1) / weight
    centre_dist = torch.sqrt((cx - (w - 1) / 2) ** 2 + (cy - (h - 1) / 2) ** 2)
    centring = (1 - centre_dist / 10).clamp(0, 1)

    # Edge steepness of the (noise-insensitive) soft mask: a crisp edge steps from 0 to 1 within a pixel.
    gx = (mask[:, :, 1:] - mask[:, :, :-1]).abs().flatten(1)
    gy = (mask[:, 1:, :] - mask[:, :-1, :]).abs().flatten(1)
    sharpness = torch.cat([gx, gy], dim=1).topk(24, dim=1).values.mean(1).clamp(0, 1)

    mx, mn = x.max(dim=1).values, x.min(dim=1).values
    sat = (mx - mn) / mx.clamp(min=1e-3)
    saturation = (sat * mask).flatten(1).sum(1) / weight

    local_mean = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    residual = (x - local_mean).abs().mean(dim=1)  # (N, H, W)
    bg_weight = (mask < 0.05).float() * F.max_pool2d(mask[:, None], 5, 1, 2)[:, 0].lt(0.05).float()
    noise = (residual * bg_weight).flatten(1).sum(1) / bg_weight.flatten(1).sum(1).clamp(min=1.0)
    # For Gaussian noise, the mean |x - 3x3 mean| is about 0.75 sigma.
    cleanliness = (1 - noise / 0.75 / 0.06).clamp(0, 1)
    return {"centring": centring, "sharpness": sharpness, "saturation": saturation, "cleanliness": cleanliness}


def utility(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N,) ground-truth utility in [0, 1]."""
    parts = components(x)
    return torch.stack([parts[c] for c in COMPONENTS]).mean(0)


class Oracle(Reward):
    id = "oracle"
    role = "gold"
    base_version = "oracle-v1"
    display = "Oracle (ground truth)"
    description = "tiny world's ground-truth utility: centring, sharpness, saturation, cleanliness"

    def score(self, images: Sequence, prompts: Sequence[str]) -> np.ndarray:
        return utility(pil_to_tensor(images)).numpy().astype(np.float64)


REWARD = Oracle
