"""The report's charts, drawn with matplotlib's Agg canvas (no pyplot, no display, no global backend).

matplotlib is imported inside each function: ``bench --help`` and the JSON report never pay for it.
Every chart is one PNG per suite with one panel per reward version; colours follow the order of the
runs, so a method has the same colour in every chart of a report. PNG metadata is dropped so that
the same data gives the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

DPI = 100
_PANEL_W = 4.6  # inches per panel
_MAX_COLS = 3


def _text(s: str) -> str:
    """A label as matplotlib shows it literally: '$' would start mathtext."""
    return s.replace("$", r"\$")


def _figure(n_panels: int, panel_h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(_MAX_COLS, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(_PANEL_W * cols, panel_h * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig, path: Path) -> tuple[int, int]:
    fig.savefig(path, format="png", metadata={"Software": None})
    w, h = fig.canvas.get_width_height()
    return int(w), int(h)


def colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def winrate_chart(panels: list[dict[str, Any]], path: Path) -> tuple[int, int]:
    """Win rate against base with 95% CI whiskers, one panel per reward version.

    ``panels``: [{"title", "labels": [method label], "win_rate", "ci_low", "ci_high": [fractions],
    "significant": [bool], "colours": [colour index]}]. A filled marker is significant after Holm
    (p < 0.05), a hollow one is not. Returns the PNG's (width, height) in pixels.
    """
    n_methods = max(len(p["labels"]) for p in panels)
    fig, axes = _figure(len(panels), 1.2 + 0.42 * n_methods)
    palette = colours(1 + max(c for p in panels for c in p["colours"]))
    for ax, p in zip(axes, panels):
        y = list(range(len(p["labels"])))[::-1]
        for yi, i in zip(y, range(len(p["labels"]))):
            rate, lo, hi = (100 * p[k][i] for k in ("win_rate", "ci_low", "ci_high"))
            c = palette[p["colours"][i]]
            ax.errorbar([rate], [yi], xerr=[[rate - lo], [hi - rate]], fmt="o", color=c, capsize=4, markersize=7,
                        markerfacecolor=c if p["significant"][i] else "white", markeredgewidth=1.5)
        ax.axvline(50, color="0.4", linestyle="--", linewidth=1)
        ax.set_yticks(y, [_text(lab) for lab in p["labels"]])
        ax.set_ylim(-0.7, len(p["labels"]) - 0.3)
        ax.set_xlim(-3, 103)  # room for a marker or whisker end at 0% or 100%
        ax.set_xlabel("win rate vs base, % (95% CI)")
        ax.set_title(_text(p["title"]), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def distributions_chart(panels: list[dict[str, Any]], path: Path) -> tuple[int, int]:
    """Score histograms per run (share of images per bin), one panel per reward version.

    ``panels``: [{"title", "xlabel", "edges": (bins+1,), "series": [(label, counts (bins,), colour index)]}].
    """
    fig, axes = _figure(len(panels), 3.0)
    n_colours = 1 + max((s[2] for p in panels for s in p["series"]), default=0)
    palette = colours(n_colours)
    for ax, p in zip(axes, panels):
        edges = p["edges"]
        for label, counts, ci in p["series"]:
            total = sum(counts) or 1
            ax.stairs([c / total for c in counts], edges, label=_text(label), color=palette[ci], linewidth=1.6)
        ax.set_title(_text(p["title"]), fontsize=10)
        ax.set_xlabel(_text(p["xlabel"]))
        ax.set_ylabel("share of images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)
