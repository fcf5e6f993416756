"""Image grids: the same prompt and seed (so the same initial noise) side by side across methods.

Which (prompt, seed) pairs are shown, per suite and base run:

* ``GRID_FIXED`` fixed prompts, each with its smallest stored seed: the prompt whose
  ``md5(prompt_id)`` sorts first in each category, then the second of each, and so on (so the
  categories take turns). The choice depends on neither scores nor methods, so reruns and later
  reports show the same prompts and can be compared by eye.
* per reward version, the ``GRID_EXTREMES`` largest wins and largest losses: each prompt's pair
  (method, seed) with the largest (smallest) gain over base (the score minus base's score, negated
  for a lower-is-better reward), the prompts with the largest (smallest) such gain, ties broken by
  prompt_id, seed and run_id. The difference shown is the score minus base's, whatever the
  direction. A (prompt, seed) chosen for several reasons is shown once, with all of them.

Images are copied into the report's folder as thumbnails (at most ``THUMB_MAX`` pixels a side,
named by their sha256) so the report is self-contained. An image whose file is missing or
unreadable is drawn as a grey placeholder with a cross and counted, never an error. So is one whose
file is not the bytes of its stored sha256 (damaged, truncated): ``damaged_notes`` names those.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bench.report import data
from bench.report import rows as report_rows
from bench.store import Store

GRID_FIXED = 4
GRID_EXTREMES = 2
THUMB_MAX = 256
PLACEHOLDER = "missing.png"


@dataclass
class Cell:
    run_id: str
    label: str
    source: Path | None  # the image file in the results folder; None when the run has no such image
    sha256: str | None
    scores: dict[str, float] = field(default_factory=dict)  # "reward (version)" -> value
    src: str | None = None  # file name in the report's folder, set by materialise()
    width: int = 0
    height: int = 0
    missing: bool = False  # shown as the placeholder: no file, an unreadable one, or a damaged one
    damaged: str | None = None  # what is wrong with a file that is not the bytes of its stored sha256


@dataclass
class Grid:
    suite: str
    prompt_id: str
    prompt: str
    category: str | None
    seed: int
    reasons: list[str]  # "fixed prompt", "largest win: dpo on pick (v1), +0.83", ...
    cells: list[Cell]


def _groups(rows: list[dict[str, Any]], labels: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """(suite, base_run_id, [column run_ids, base first]) for every suite and base run shown."""
    cols: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        base = r["run_id"] if r["method"] == "base" else r["base_run_id"]
        if base is None:
            continue  # a method run with no base to pair with: nothing to put beside it
        runs = cols.setdefault((r["suite"], base), [base])
        if r["run_id"] not in runs:
            runs.append(r["run_id"])
    return [(suite, base, [base] + sorted(runs[1:], key=lambda rid: labels.get(rid, rid)))
            for (suite, base), runs in sorted(cols.items())]


def _fmt_delta(x: float) -> str:
    return f"{x:+.4g}"


def _picks(g: pd.DataFrame, gain: str, seed: str, ascending: bool) -> list[tuple[str, int, str, float]]:
    """The GRID_EXTREMES (prompt_id, seed, run_id, gain) with the largest gains (the smallest when
    ``ascending``), each (prompt, seed) once; only gains above 0 (below 0 when ``ascending``)."""
    cands = g[g[gain] < 0] if ascending else g[g[gain] > 0]
    cands = cands.sort_values([gain, "prompt_id", seed, "run_id"], ascending=[ascending, True, True, True])
    picked: dict[tuple[str, int], tuple[str, int, str, float]] = {}
    for pid, s, run_id, x in zip(cands["prompt_id"], cands[seed], cands["run_id"], cands[gain]):
        picked.setdefault((pid, int(s)), (pid, int(s), run_id, float(x)))
        if len(picked) == GRID_EXTREMES:
            break
    return list(picked.values())


def _extremes(prompts: pd.DataFrame, labels: dict[str, str], versions: dict[str, set[str]],
              directions: data.Directions, marks: dict[tuple[str, str], str] | None = None) -> dict:
    """{(prompt_id, seed): [reasons]} of the largest wins and losses of each reward version in ``prompts``
    (the per-prompt rows of one suite's method runs, all paired with one base run); ``marks``: (run_id, reward)
    -> the † or ‡ of a run not held out from the reward."""
    marks = marks or {}
    chosen: dict[tuple[str, int], list[str]] = {}
    for (reward, version), g in prompts.groupby(["reward", "reward_version"], sort=True):
        name = reward if len(versions.get(reward, ())) == 1 else f"{reward} ({version})"
        sign = 1.0 if directions[(reward, version)] else -1.0  # gain back to score minus base's
        for kind, gain, seed, ascending in (("largest win", "best_gain", "best_seed", False),
                                            ("largest loss", "worst_gain", "worst_seed", True)):
            for pid, s, run_id, x in _picks(g, gain, seed, ascending):
                chosen.setdefault((pid, s), []).append(
                    f"{kind}: {labels.get(run_id, run_id)}{marks.get((run_id, reward), '')} on {name}, "
                    f"{_fmt_delta(sign * x)}")
    return chosen


def select(store: Store, rows: list[dict[str, Any]], labels: dict[str, str], prompts: pd.DataFrame | None = None,
           directions: data.Directions | None = None) -> list[Grid]:
    """The grids of the report rows' suites and runs (``labels``: run_id -> column title).

    ``prompts``: the ``data.per_prompt`` table of these suites when the caller already has it;
    ``directions``: ``data.directions`` when the caller already has it.
    """
    if prompts is None:
        prompts = data.per_prompt(store, sorted({r["suite"] for r in rows}))
    directions = data.directions(store) if directions is None else directions
    versions: dict[str, set[str]] = {}
    marks = {(r["run_id"], r["reward"]): report_rows.mark(r.get("reward_relation")) for r in rows}
    for r in rows:
        versions.setdefault(r["reward"], set()).add(r["reward_version"])
    grids: list[Grid] = []
    for suite, base, runs in _groups(rows, labels):
        chosen: dict[tuple[str, int], list[str]] = {}
        fixed = data.fixed_prompts(store, base, suite, GRID_FIXED)
        for pid, seed in zip(fixed["prompt_id"], fixed["seed"]):
            chosen.setdefault((pid, int(seed)), []).append("fixed prompt")
        paired = prompts[(prompts["suite"] == suite) & prompts["run_id"].isin(runs[1:]) & (prompts["n_pairs"] > 0)]
        for key, reasons in _extremes(paired, labels, versions, directions, marks).items():
            chosen.setdefault(key, []).extend(reasons)
        if chosen:
            grids += _fill(store, suite, runs, chosen, labels)
    return grids


def _fill(store: Store, suite: str, runs: list[str], chosen: dict[tuple[str, int], list[str]],
          labels: dict[str, str]) -> list[Grid]:
    pids = sorted({pid for pid, _ in chosen})
    cells = data.grid_images(store, suite, runs, pids)
    prompts = data.prompt_texts(store, suite, pids)
    texts = {p.prompt_id: (p.prompt, p.category if isinstance(p.category, str) else None)
             for p in prompts.itertuples(index=False)}
    found: dict[tuple[str, str, int], Cell] = {}
    for c in cells.itertuples(index=False):
        key = (c.run_id, c.prompt_id, int(c.seed))
        if (c.prompt_id, int(c.seed)) not in chosen:
            continue
        cell = found.get(key)
        if cell is None:
            cell = found[key] = Cell(c.run_id, labels.get(c.run_id, c.run_id), store.root / c.path,
                                     c.sha256 if isinstance(c.sha256, str) and c.sha256 else None)
        if isinstance(c.reward, str):
            cell.scores[f"{c.reward} ({c.reward_version})"] = float(c.value)
    prompt_of_image = dict(zip(cells["prompt_id"], cells["prompt"]))
    out = []
    for (pid, seed), reasons in chosen.items():
        text, category = texts.get(pid, (prompt_of_image.get(pid), None))
        text = text if isinstance(text, str) else pid  # images.prompt may be NULL when prompts lacks the suite
        row = [found.get((rid, pid, seed)) or Cell(rid, labels.get(rid, rid), None, None) for rid in runs]
        for cell in row:
            cell.scores = dict(sorted(cell.scores.items()))
        out.append(Grid(suite, pid, text, category, seed, reasons, row))
    return out


def _placeholder(folder: Path) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    path = folder / PLACEHOLDER
    if not path.is_file():
        im = Image.new("RGB", (64, 64), (200, 200, 200))
        draw = ImageDraw.Draw(im)
        draw.line((8, 8, 55, 55), fill=(110, 110, 110), width=3)
        draw.line((8, 55, 55, 8), fill=(110, 110, 110), width=3)
        im.save(path)
    return 64, 64


def _thumbnail(source: Path, sha256: str | None, folder: Path) -> tuple[str, int, int]:
    """Copy one image into the report folder, shrunk to THUMB_MAX; returns (file name, width, height)."""
    from PIL import Image

    name = f"img-{(sha256 or hashlib.sha256(str(source).encode()).hexdigest())[:24]}.png"
    target = folder / name
    if target.is_file():  # named by content: an earlier report (md beside html) wrote the same file
        with Image.open(target) as im:
            return name, im.width, im.height
    with Image.open(source) as im:
        im.load()
        thumb = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
    thumb.thumbnail((THUMB_MAX, THUMB_MAX))
    tmp = target.with_suffix(".png.tmp")
    thumb.save(tmp, format="PNG")
    tmp.replace(target)
    return name, thumb.width, thumb.height


def _damage(source: Path, sha256: str | None) -> str | None:
    """What is wrong with an image file that is readable but not the bytes of its stored sha256 (None when
    it is, or is gone or unreadable, or was stored without a sha256): checked before a thumbnail of it,
    new or from an earlier report, is shown."""
    if not sha256:
        return None
    try:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
    except OSError:
        return None  # gone or unreadable: the thumbnail fails and counts it as missing
    return None if digest == sha256 else "sha256 differs from the one stored when it was written"


def materialise(grids: list[Grid], folder: Path) -> int:
    """Write every grid image (or the placeholder) into ``folder``; returns how many were missing (gone or
    unreadable; a damaged one is shown as the placeholder too, but named by ``damaged_notes`` instead)."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = 0
    for grid in grids:
        for cell in grid.cells:
            try:
                if cell.source is None:
                    raise FileNotFoundError
                cell.damaged = _damage(cell.source, cell.sha256)
                if cell.damaged is not None:
                    raise ValueError(cell.damaged)
                cell.src, cell.width, cell.height = _thumbnail(cell.source, cell.sha256, folder)
            except (OSError, ValueError):  # missing, unreadable or not an image (PIL raises OSError subclasses)
                cell.src = PLACEHOLDER
                cell.width, cell.height = _placeholder(folder)
                cell.missing = True
                missing += cell.damaged is None
    return missing


def damaged_notes(grids: list[Grid], name: Callable[[Any], str] = str) -> list[str]:
    """One line naming the damaged image files of the grids (none when there are none); ``name`` escapes
    user data (run labels, prompt ids) for the renderer. Call after ``materialise``."""
    seen: dict[Path, str] = {}
    for grid in grids:
        for cell in grid.cells:
            if cell.damaged is not None and cell.source not in seen:
                seen[cell.source] = (f"{name(cell.source)} ({name(cell.label)}, prompt {name(grid.prompt_id)}, "
                                     f"seed {grid.seed})")
    if not seen:
        return []
    return [f"{len(seen)} grid image file(s) are damaged: not the bytes whose sha256 was stored when they were "
            f"written (changed or truncated since), so they appear as a grey cross: {'; '.join(seen.values())}. "
            "Running bench run again with the same options draws them again; bench verify checks every file."]
