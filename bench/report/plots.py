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


def _figure(n_panels: int, panel_h: float, max_cols: int = _MAX_COLS):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(max_cols, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(_PANEL_W * cols, panel_h * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _fixed_figure(n_panels: int, panel_w: float, panel_h: float, max_cols: int = _MAX_COLS, top: float = 0.35):
    """``_figure`` with margins fixed in inches instead of a layout engine, for panels whose labels are short
    (numbers, steps, reward names): constrained layout measures every tick label, about half a chart's time.
    ``top``: inches above the first row (a title, a figure title)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(max_cols, n_panels)
    rows = math.ceil(n_panels / cols)
    left, right, bottom, wspace, hspace = 0.75, 0.15, 0.55, 0.75, 0.8  # inches
    width = left + right + cols * panel_w + (cols - 1) * wspace
    height = top + bottom + rows * panel_h + (rows - 1) * hspace
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=wspace / panel_w, hspace=hspace / panel_h)
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


def curves_chart(panels: list[dict[str, Any]], path: Path) -> tuple[int, int]:
    """Win rate against base over training steps, one panel per final run, one line per reward with its 95% CI
    as a band; a proxy reward (one the run is not held out from) dashed, a held-out one solid.

    ``panels``: [{"title", "lines": [{"label", "steps", "win_rate", "ci_low", "ci_high": [fractions], "proxy":
    bool, "colour": index}]}].
    """
    from matplotlib.lines import Line2D

    fig, axes = _fixed_figure(len(panels), 3.9, 2.7)
    palette = colours(1 + max((ln["colour"] for p in panels for ln in p["lines"]), default=0))
    for ax, p in zip(axes, panels):
        for ln in p["lines"]:
            c = palette[ln["colour"]]
            ax.fill_between(ln["steps"], [100 * v for v in ln["ci_low"]], [100 * v for v in ln["ci_high"]],
                            color=c, alpha=0.15, linewidth=0)
            ax.plot(ln["steps"], [100 * v for v in ln["win_rate"]], color=c, marker="o", markersize=4,
                    linestyle="--" if ln["proxy"] else "-", linewidth=1.6, label=_text(ln["label"]))
        ax.axhline(50, color="0.4", linestyle=":", linewidth=1)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("training step")
        ax.set_ylabel("win rate vs base, % (95% CI)")
        ax.set_title(_text(p["title"]), fontsize=10)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        styles = [Line2D([], [], color="0.3", linestyle="-", label="solid: held out"),
                  Line2D([], [], color="0.3", linestyle="--", label="dashed: proxy (trained on / same data)")]
        ax.legend(handles + styles, labels + [s.get_label() for s in styles], fontsize=7, frameon=False)
    return _save(fig, path)


def frontier_chart(panel: dict[str, Any], path: Path) -> tuple[int, int]:
    """Win rate against base over cost per image, one point per run with its 95% CI, best_of_n points joined in
    order of N. ``panel``: {"title", "xlabel", "points": [{"label", "cost", "win_rate", "ci_low", "ci_high" (None
    for base), "colour": index}], "line": [(cost, win_rate)] of the best_of_n points, "log": bool}."""
    fig, (ax,) = _fixed_figure(1, 6.1, 3.3)
    palette = colours(1 + max((p["colour"] for p in panel["points"]), default=0))
    if panel["line"]:
        ax.plot([x for x, _ in panel["line"]], [100 * y for _, y in panel["line"]], color="0.45", linewidth=1.2,
                linestyle="-", zorder=1, label="best_of_n, by N")
    for p in panel["points"]:
        c = palette[p["colour"]]
        y = 100 * p["win_rate"]
        err = None if p["ci_low"] is None else [[y - 100 * p["ci_low"]], [100 * p["ci_high"] - y]]
        ax.errorbar([p["cost"]], [y], yerr=err, fmt="s" if p["best_of_n"] else "o", color=c, capsize=3,
                    markersize=6, zorder=2)
        ax.annotate(_text(p["label"]), (p["cost"], y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if panel["log"]:
        ax.set_xscale("log")
    ax.axhline(50, color="0.4", linestyle=":", linewidth=1)
    ax.set_xlabel(_text(panel["xlabel"]), fontsize=8)
    ax.set_ylabel("win rate vs base, % (95% CI)")
    ax.set_title(_text(panel["title"]), fontsize=10)
    ax.grid(alpha=0.3)
    if panel["line"]:
        ax.legend(fontsize=7, frameon=False)
    return _save(fig, path)


def training_chart(panels: list[dict[str, Any]], title: str, path: Path) -> tuple[int, int]:
    """Training metrics over steps, one panel per metric, one line per run. ``panels``: [{"title", "lines":
    [{"label", "steps", "values", "colour": index, "style": matplotlib linestyle}], "zero": draw y = 0}]."""
    fig, axes = _fixed_figure(len(panels), 3.9, 2.2, max_cols=2 if len(panels) == 4 else _MAX_COLS, top=0.65)
    fig.suptitle(_text(title), fontsize=11)  # 4 panels: 2 x 2
    palette = colours(1 + max((ln["colour"] for p in panels for ln in p["lines"]), default=0))
    for ax, p in zip(axes, panels):
        for ln in p["lines"]:
            ax.plot(ln["steps"], ln["values"], color=palette[ln["colour"]], linestyle=ln["style"], linewidth=1.4,
                    label=_text(ln["label"]))
        if p.get("zero"):  # a relative error: 0 is the reference's
            ax.axhline(0, color="0.4", linestyle=":", linewidth=1)
        ax.set_title(_text(p["title"]), fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    return _save(fig, path)
