"""The tiny world: a procedurally generated, seeded world of 32x32 RGB images of one coloured shape.

A caption fixes the shape, its colour, the background and a coarse size
("a small red triangle on a gray background"). Everything else is drawn freely, and is what a
preference method can learn to change: position, tilt, edge softness, pixel noise, colour
desaturation and brightness. The ground-truth preference (metrics/oracle.py) is measured from
pixels and moves with those free attributes (centring, edge softness, saturation, pixel noise), so
the base model that imitates the data does not maximise it.

Everything is vectorised torch on the CPU and deterministic for a given seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLOURS = {
    "red": (0.90, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.95, 0.88, 0.10),
    "green": (0.10, 0.72, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "purple": (0.58, 0.15, 0.80),
}
BACKGROUNDS = {
    "white": (0.95, 0.95, 0.95),
    "black": (0.05, 0.05, 0.05),
    "gray": (0.50, 0.50, 0.50),
    "beige": (0.80, 0.72, 0.55),
}
SIZES = {"small": (5.0, 6.5), "": (6.5, 8.5), "large": (8.5, 10.5)}  # radius range in pixels
IMAGE_SIZE = 32


@dataclass(frozen=True)
class Caption:
    shape: str
    colour: str
    background: str
    size: str

    @property
    def text(self) -> str:
        size = f"{self.size} " if self.size else ""
        return f"a {size}{self.colour} {self.shape} on a {self.background} background"

    @property
    def category(self) -> str:
        return self.shape


def all_captions() -> list[Caption]:
    """Every caption of the grammar (5 shapes x 6 colours x 4 backgrounds x 3 sizes = 360), in a fixed order."""
    return [Caption(s, c, b, z) for s in SHAPES for c in COLOURS for b in BACKGROUNDS for z in SIZES]


def split_captions(n_eval: int = 200, seed: int = 0) -> tuple[list[Caption], list[Caption]]:
    """Disjoint (train, eval) caption lists: a seeded permutation, the first ``n_eval`` are eval.

    Stratified so that every shape appears in both suites in equal proportion.
    """
    caps = all_captions()
    order = torch.randperm(len(caps), generator=torch.Generator().manual_seed(seed)).tolist()
    by_shape = {s: [caps[i] for i in order if caps[i].shape == s] for s in SHAPES}
    per_shape = n_eval // len(SHAPES)
    evals = [c for s in SHAPES for c in by_shape[s][:per_shape]]
    trains = [c for s in SHAPES for c in by_shape[s][per_shape:]]
    return trains, evals


def parse_caption(text: str) -> Caption:
    """Inverse of ``Caption.text``; raises ValueError for a caption outside the grammar."""
    words = text.strip().lower().split()
    try:
        shape = next(w for w in words if w in SHAPES)
        colour = next(w for w in words if w in COLOURS)
        background = words[words.index("on") + 2]
        size = next((w for w in words if w in SIZES and w), "")
    except (StopIteration, ValueError, IndexError):
        raise ValueError(f"not a tiny-world caption: {text!r}") from None
    if background not in BACKGROUNDS:
        raise ValueError(f"not a tiny-world caption: {text!r}")
    return Caption(shape, colour, background, size)


# ---------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class FreeAttributes:
    """Ranges of the attributes no caption fixes (the room a preference method has to move)."""

    max_offset: float = 7.0  # centre offset in pixels, per axis, limited so the shape stays inside
    # Tilt in degrees either way. Not a full turn: averaged over every angle a square is a disc, and the
    # 8x8-latent denoiser trained within the CPU budget drew "a square" as a disc (square fidelity 0.38
    # with full turns, 0.75 with a 15 degree tilt, at the same training cost).
    max_tilt: float = 15.0
    softness: tuple[float, float] = (0.25, 1.6)  # edge blur, pixels
    noise: tuple[float, float] = (0.0, 0.06)  # Gaussian pixel noise std
    desaturation: tuple[float, float] = (0.0, 0.4)  # mix of the colour towards its grey
    brightness: tuple[float, float] = (0.85, 1.05)


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _box(px: torch.Tensor, py: torch.Tensor, hx: torch.Tensor, hy: torch.Tensor) -> torch.Tensor:
    qx, qy = px.abs() - hx, py.abs() - hy
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    return outside + torch.maximum(qx, qy).clamp(max=0)


def _triangle(px: torch.Tensor, py: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # Equilateral triangle with circumradius r pointing up (signed distance, Inigo Quilez's form).
    k = math.sqrt(3.0)
    side = r * k / 2  # half the side length
    py = -py + r / 4  # y grows downwards in images; centre the centroid
    px = px.abs() - side
    py = py + side / k
    flip = px + k * py > 0
    px2 = torch.where(flip, (px - k * py) / 2, px)
    py2 = torch.where(flip, (-k * px - py) / 2, py)
    px2 = px2 - torch.clamp(px2, -2 * side, torch.zeros_like(px2))
    return -torch.sqrt(px2**2 + py2**2) * torch.sign(py2)


def signed_distance(shape_idx: torch.Tensor, px: torch.Tensor, py: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) of each image's shape; all arguments broadcast to (N, H, W)."""
    radius = torch.sqrt(px**2 + py**2)
    sdf = {
        "circle": radius - r,
        "ring": (radius - 0.75 * r).abs() - 0.25 * r,
        "square": _box(px, py, 0.8 * r, 0.8 * r),
        "triangle": _triangle(px, py, 1.15 * r),
        "cross": torch.minimum(_box(px, py, r, 0.33 * r), _box(px, py, 0.33 * r, r)),
    }
    out = torch.zeros_like(px)
    for i, name in enumerate(SHAPES):
        out = torch.where(shape_idx == i, sdf[name], out)
    return out


def render(captions: list[Caption], seed: int, free: FreeAttributes = FreeAttributes()) -> torch.Tensor:
    """Render one image per caption: (N, 3, 32, 32) in [0, 1]. Deterministic for (captions, seed)."""
    n = len(captions)
    g = torch.Generator().manual_seed(seed)
    shape_idx = torch.tensor([SHAPES.index(c.shape) for c in captions]).view(n, 1, 1)
    fg = torch.tensor([COLOURS[c.colour] for c in captions])
    bg = torch.tensor([BACKGROUNDS[c.background] for c in captions])
    lo = torch.tensor([SIZES[c.size][0] for c in captions])
    hi = torch.tensor([SIZES[c.size][1] for c in captions])
    r = lo + (hi - lo) * torch.rand(n, generator=g)
    limit = torch.clamp(15.5 - r, min=0.0).clamp(max=free.max_offset)
    cx = 15.5 + limit * (2 * torch.rand(n, generator=g) - 1)
    cy = 15.5 + limit * (2 * torch.rand(n, generator=g) - 1)
    theta = math.radians(free.max_tilt) * (2 * torch.rand(n, generator=g) - 1)
    soft = _uniform(g, n, *free.softness)
    noise_std = _uniform(g, n, *free.noise)
    desat = _uniform(g, n, *free.desaturation)
    bright = _uniform(g, n, *free.brightness)

    ys, xs = torch.meshgrid(torch.arange(IMAGE_SIZE, dtype=torch.float32),
                            torch.arange(IMAGE_SIZE, dtype=torch.float32), indexing="ij")
    dx, dy = xs - cx.view(n, 1, 1), ys - cy.view(n, 1, 1)
    cos, sin = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
    px, py = cos * dx + sin * dy, -sin * dx + cos * dy
    sdf = signed_distance(shape_idx, px, py, r.view(n, 1, 1))
    alpha = torch.sigmoid(-sdf / soft.view(n, 1, 1)).unsqueeze(1)  # (N, 1, H, W)

    grey = fg.mean(dim=1, keepdim=True)
    colour = (fg + desat.view(n, 1) * (grey - fg)) * bright.view(n, 1)
    img = bg.view(n, 3, 1, 1) * (1 - alpha) + colour.view(n, 3, 1, 1) * alpha
    img = img + noise_std.view(n, 1, 1, 1) * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1)


def render_dataset(captions: list[Caption], per_caption: int, seed: int, chunk: int = 4096) -> tuple[torch.Tensor, list[int]]:
    """``per_caption`` images of every caption, shuffled: (images (N, 3, 32, 32), caption index per image)."""
    idx = torch.arange(len(captions)).repeat(per_caption)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))].tolist()
    parts = [render([captions[i] for i in idx[s:s + chunk]], seed=seed * 1000 + k)
             for k, s in enumerate(range(0, len(idx), chunk))]
    return torch.cat(parts), idx
