"""Diversity rows: per (suite, run, space), how varied a run's images of one prompt are across seeds.

Per prompt, over the images of its seeds: the mean pairwise cosine distance and the Vendi score of
their embeddings (metrics/core/diversity.py). A run's value is the mean over prompts; a method run is
compared with its base run on the prompts both have, and the interval of the difference is a 95%
percentile cluster bootstrap over prompts (one per-prompt difference each, so every prompt weighs the
same), seeded as the other rows are, so a row's numbers do not depend on which other rows are shown.

Two subsets: ``all`` images, and ``faithful`` ones only (where the frame has a ``faithful`` column:
in the tiny world, fidelity = 1, i.e. the classifier finds the caption's shape and colour). A method
can look diverse by drawing the wrong thing; the faithful subset asks whether it stays diverse among
images that show the caption. A prompt counts in a subset only with at least ``MIN_IMAGES`` images
in it: one image has no diversity to measure, and scoring it 0 would mix a fidelity effect into the
diversity one. ``n_prompts`` says how many prompts a value rests on.

``per_prompt`` and ``rows`` are pure: a pandas frame in, plain dicts out. The input frame has one row per
image and embedding space: run_id, suite, prompt_id, seed, embedding (a vector), and optionally space,
space_version, faithful. ``build`` feeds them from the store (``data.embeddings``): the runs a report
shows, each compared with its base run, per (suite, space, space_version); an image is faithful where its
fidelity score is at least ``FAITHFUL_AT``, and the faithful subset is shown where some image has one.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from bench.report import data
from bench.report import rows as report_rows
from bench.store import Store
from metrics.core.diversity import diversity_by_group

METRICS = ("mean_pairwise_distance", "vendi")  # both: higher is more diverse
SUBSETS = ("all", "faithful")
MIN_IMAGES = 2  # images of a prompt in a subset for the prompt to count
ROW_KEYS = ("suite", "run_id", "method", "base_run_id", "space", "space_version", "subset", "metric", "mean",
            "base_mean", "diff", "diff_ci_low", "diff_ci_high", "n_prompts")
_REQUIRED = ("run_id", "suite", "prompt_id", "seed", "embedding")
FAITHFUL_AT = 0.5  # fidelity score from which an image counts as faithful (the tiny world's is 0 or 1)


def embedding_matrix(column: pd.Series) -> np.ndarray:
    """(N, d) array of a column of equally long vectors (numpy arrays or lists), float32 kept as is."""
    values = column.to_numpy()
    if values.size == 0:
        raise ValueError("no embeddings")
    try:
        out = np.stack(values)
    except ValueError as err:
        raise ValueError(f"embeddings differ in length: {err}") from None
    if out.ndim != 2 or not np.issubdtype(out.dtype, np.number):
        raise ValueError(f"embeddings must be numeric vectors, got an array of shape {out.shape} and {out.dtype}")
    return out if out.dtype in (np.float32, np.float64) else out.astype(np.float64)


def _space_keys(frame: pd.DataFrame, space: str | None) -> tuple[pd.DataFrame, list[str]]:
    """The frame with a ``space`` column (from the argument if it has none) and the space key columns."""
    if "space" in frame.columns:
        if space is not None:
            raise ValueError("the frame has a 'space' column: do not pass space= as well")
    elif space is None:
        raise ValueError("name the embedding space: a 'space' column or space=")
    else:
        frame = frame.assign(space=space)
    return frame, ["space"] + (["space_version"] if "space_version" in frame.columns else [])


def _check(frame: pd.DataFrame, keys: list[str]) -> None:
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"the embeddings frame lacks {missing}; it needs {list(_REQUIRED)} "
                         f"(optional: space, space_version, faithful)")
    if frame[[c for c in frame.columns if c != "embedding"]].isna().any().any():
        raise ValueError("the embeddings frame has missing values (an unscored image's faithful flag?)")
    if "faithful" in frame.columns and frame["faithful"].dtype != bool:
        raise ValueError(f"'faithful' must be a bool column, got {frame['faithful'].dtype}")
    dup = frame.duplicated(["suite", "run_id", *keys, "prompt_id", "seed"])
    if dup.any():
        first = frame[dup].iloc[0]
        raise ValueError(f"an image appears twice: run {first['run_id']}, suite {first['suite']}, "
                         f"prompt {first['prompt_id']}, seed {first['seed']}")


def per_prompt(frame: pd.DataFrame, space: str | None = None) -> pd.DataFrame:
    """One row per (suite, run_id, space[, space_version], subset, prompt_id) with at least ``MIN_IMAGES``
    images: n_images and both metrics. Vectorised: one group code per image, then one batched pass."""
    frame, space_keys = _space_keys(frame, space)
    _check(frame, space_keys)
    keys = ["suite", "run_id", *space_keys, "prompt_id"]
    emb = embedding_matrix(frame["embedding"])
    parts = []
    for subset in SUBSETS:
        if subset == "faithful":
            if "faithful" not in frame.columns:
                continue
            mask = frame["faithful"].to_numpy(bool)
        else:
            mask = np.ones(len(frame), dtype=bool)
        if not mask.any():
            continue
        sub = frame.loc[mask, keys]
        grouped = sub.groupby(keys, sort=True, observed=True)
        values = diversity_by_group(emb[mask], grouped.ngroup().to_numpy())
        table = grouped.size().reset_index(name="n_images")  # same (sorted) order as ngroup's codes
        table.insert(len(keys) - 1, "subset", subset)
        for m in METRICS:
            table[m] = values[m]
        parts.append(table[table["n_images"] >= MIN_IMAGES])
    cols = ["suite", "run_id", *space_keys, "subset", "prompt_id", "n_images", *METRICS]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def rows(
    frame: pd.DataFrame,
    base_of: Mapping[str, str | None],
    space: str | None = None,
    methods: Mapping[str, str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Diversity rows (keys ``ROW_KEYS``), one per (suite, run, space, subset, metric).

    ``base_of`` maps every run_id of the frame to its base run_id, None for a base run itself (whose
    row has no base_mean, diff nor interval). For a method run, ``mean`` and ``base_mean`` are over the
    prompts both runs have in the subset, so ``diff`` = mean − base_mean up to rounding; ``n_prompts``
    counts them (0, with None values, when there are none). ``methods`` (run_id -> method id) fills the
    ``method`` key when given.
    """
    frame, space_keys = _space_keys(frame, space)
    _check(frame, space_keys)
    runs = sorted(frame["run_id"].unique())
    lacking = [r for r in runs if r not in base_of]
    if lacking:
        raise ValueError(f"base_of has no entry for runs {lacking} (map a base run to None)")
    if methods is not None and any(r not in methods for r in runs):
        raise ValueError(f"methods has no entry for runs {[r for r in runs if r not in methods]}")
    where = ["suite", *space_keys]
    # (suite, space.., run); deduplicated first: iterating a row per image costs more than all the rest
    present = set(frame[[*where, "run_id"]].drop_duplicates().itertuples(index=False, name=None))
    for *place, run in sorted(present):
        base = base_of[run]
        if base is not None and base != run and (*place, base) not in present:
            raise ValueError(f"run {run} is compared with base run {base}, which has no embeddings in "
                             f"{dict(zip(where, place))}")
    table = per_prompt(frame, None)
    subsets = SUBSETS if "faithful" in frame.columns else SUBSETS[:1]
    out: list[dict[str, Any]] = []
    jobs: list = []
    for place in sorted({tuple(p[:-1]) for p in present}):
        fields = dict(zip(where, place))
        here = table[np.logical_and.reduce([table[c] == v for c, v in fields.items()])]
        for subset in subsets:
            g = here[here["subset"] == subset]
            by_run = {run: p.set_index("prompt_id") for run, p in g.groupby("run_id", sort=True)}
            for run in sorted(r for *pl, r in present if tuple(pl) == place):
                out += _run_rows(run, by_run, base_of[run], {**fields, "subset": subset}, methods, jobs)
    # Intervals of as many prompts share their resamples, which is what each would draw alone (they depend on K).
    report_rows.run_bootstraps(jobs, n_boot, seed)
    for r in out:
        if r["diff"] is not None and r["diff_ci_low"] == r["diff_ci_high"]:
            r["diff"] = r["diff_ci_low"]  # a point interval is the difference itself, not an ulp beside it
    return out


def _run_rows(run: str, by_run: dict[str, pd.DataFrame], base: str | None, fields: dict[str, Any],
              methods: Mapping[str, str] | None, jobs: list) -> list[dict[str, Any]]:
    """The rows of one run in one (suite, space, subset): one per metric; their intervals queued on ``jobs``."""
    empty = pd.DataFrame(columns=list(METRICS))
    mine = by_run.get(run, empty)
    common = None
    if base is not None and base != run:
        theirs = by_run.get(base, empty)
        prompts = mine.index.intersection(theirs.index)
        common = (mine.loc[prompts, list(METRICS)].to_numpy(np.float64),
                  theirs.loc[prompts, list(METRICS)].to_numpy(np.float64))  # (K, 2) each
    values = mine[list(METRICS)].to_numpy(np.float64) if common is None else common[0]
    k = len(values)
    diffs = common[0] - common[1] if common is not None and k else None  # (K, 2) per prompt, one cluster each
    rows_out = []
    for j, metric in enumerate(METRICS):
        row = {
            "suite": fields["suite"], "run_id": run, "method": methods[run] if methods is not None else None,
            "base_run_id": base if base != run else None, "space": fields["space"],
            "space_version": fields.get("space_version"), "subset": fields["subset"], "metric": metric,
            "mean": float(values[:, j].mean()) if k else None,
            "base_mean": float(common[1][:, j].mean()) if diffs is not None else None,
            "diff": float(diffs[:, j].mean()) if diffs is not None else None, "diff_ci_low": None,
            "diff_ci_high": None, "n_prompts": k,
        }
        if diffs is not None:
            jobs.append((row, ("diff_ci_low", "diff_ci_high"), diffs[:, j], np.ones(k),
                         (float(diffs[:, j].min()), float(diffs[:, j].max()))))
        rows_out.append(row)
    return rows_out


def build(store: Store, run_ids: list[str], suites: list[str] | None = None, n_boot: int = 1000,
          seed: int = 0, fidelity: bool = True, runs: dict[str, dict] | None = None,
          warnings: list[str] | None = None) -> list[dict[str, Any]]:
    """The diversity rows (``ROW_KEYS``) of these runs (with their base runs, which are added), per (suite, space,
    space_version) holding embeddings; [] where none is stored. A method run whose base run has no embeddings
    there gets a row of its own values, without a difference. ``fidelity=False``: the caller knows no image has a
    fidelity score (no faithful subset; the store is not searched for one). ``runs``: ``data.runs`` where the
    caller has it.

    Embeddings the measures refuse (vectors of different lengths in one space, an all-zero vector: SQL can store
    anything) leave their (suite, space, version) out, with a sentence appended to ``warnings``."""
    runs = data.runs(store) if runs is None else runs
    wanted = set(run_ids) | {runs[r]["base_run_id"] for r in run_ids if r in runs and runs[r]["base_run_id"]}
    frame = data.embeddings(store, sorted(wanted), suites, fidelity=fidelity)
    out: list[dict[str, Any]] = []
    for (suite, space, version), g in frame.groupby(["suite", "space", "space_version"], sort=True):
        scored = g["fidelity"].notna()
        g = g.drop(columns="fidelity").assign(faithful=(g["fidelity"] >= FAITHFUL_AT).to_numpy(bool)) \
            if scored.any() else g.drop(columns="fidelity")
        present = set(g["run_id"].unique())
        base_of = {r: None if runs[r]["method"] == "base" else
                   runs[r]["base_run_id"] if runs[r]["base_run_id"] in present else r for r in present}
        try:
            out += rows(g, base_of, methods={r: runs[r]["method"] for r in present}, n_boot=n_boot, seed=seed)
        except ValueError as err:
            if warnings is not None:
                warnings.append(f"the embeddings of suite {suite} in space {space} ({version}) were left out of the "
                                f"diversity tables: {err}")
    return out
