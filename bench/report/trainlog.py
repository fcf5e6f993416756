"""Training curves from ``train_log``: loss, implicit accuracy and the pair errors against the reference.

A run reads the log of the weights it samples (``runs.artifact_hash``); runs sharing an artifact show it
once, under the first of them. Per method family one chart, one panel per metric, one line per run, so
that methods sharing a loss can be read on the same axes: in particular the winner's error relative to
the reference, ``rel_err_w`` = mean over the batch of (policy error − reference error) on the preferred
image. Diffusion-DPO can lower its loss while that error rises (both errors grow, the loser's faster);
SDPO's safeguard is meant to keep it from rising (Diffusion-SDPO, arXiv 2511.03317). Pair methods log
``rel_err_w`` and ``rel_err_l``; an older log has only the absolute ``err_w`` and ``err_l``, plotted
instead in panels of their own (an absolute error is not on the relative one's axis).

Long logs are averaged in SQL into at most about ``POINTS`` points per curve (``data.train_log``).
"""

from __future__ import annotations

from typing import Any

from bench.report import data
from bench.store import Store

POINTS = 300
METRICS = {  # name -> panel title, in panel order
    "loss": "loss",
    "implicit_acc": "implicit accuracy",
    "rel_err_w": "winner's error − reference's (rel_err_w)",
    "rel_err_l": "loser's error − reference's (rel_err_l)",
    "err_w": "winner's error (err_w, older log: absolute)",
    "err_l": "loser's error (err_l, older log: absolute)",
}
RELATIVE = {"err_w": "rel_err_w", "err_l": "rel_err_l"}  # an absolute error and the relative one replacing it
FAMILY = {"dpo": "Diffusion-DPO", "sdpo": "Diffusion-DPO", "npo": "Diffusion-DPO", "contrastive": "Diffusion-DPO"}


def family(method: str) -> str:
    """The family a method's curves are drawn with: Diffusion-DPO for the methods sharing its loss, else the
    method itself (a published-weights label ``dpo@dpo-sdxl`` counts as its method)."""
    mid = method.split("@", 1)[0]
    return FAMILY.get(mid, mid)


def build(store: Store, run_ids: list[str], runs: dict[str, dict] | None = None) -> list[dict[str, Any]]:
    """One curve per (artifact, metric) of these runs (in their order): {"run_id" (the first run sampling the
    artifact), "method", "family", "artifact_hash", "name", "width" (logged steps averaged per point), "steps",
    "values"}; an absolute error is left out where its artifact logs the relative one. ``runs``: ``data.runs``
    where the caller has it."""
    runs = data.runs(store) if runs is None else runs
    first: dict[str, str] = {}
    for rid in run_ids:
        artifact = runs[rid]["artifact_hash"] if rid in runs else None
        if artifact and runs[rid]["method"] != "base":
            first.setdefault(artifact, rid)
    if not first:
        return []
    frame = data.train_log(store, list(first.values()), list(METRICS), POINTS)
    logged = set(zip(frame["artifact_hash"], frame["name"]))
    out = []
    for (artifact, name), g in frame.groupby(["artifact_hash", "name"], sort=False):
        if artifact not in first or (artifact, RELATIVE.get(name)) in logged:
            continue
        rid = first[artifact]
        out.append({"run_id": rid, "method": runs[rid]["method"], "family": family(runs[rid]["method"]),
                    "artifact_hash": artifact, "name": name, "width": int(g["width"].iloc[0]),
                    "steps": [float(s) for s in g["step"]], "values": [float(v) for v in g["value"]]})
    order = {rid: i for i, rid in enumerate(run_ids)}
    return sorted(out, key=lambda c: (order[c["run_id"]], list(METRICS).index(c["name"])))


def families(curves: list[dict[str, Any]]) -> list[tuple[str, list[str], list[dict[str, Any]]]]:
    """(family, [metric names with a curve, in panel order], its curves), families in the order of their first
    run."""
    out: dict[str, list[dict[str, Any]]] = {}
    for c in curves:
        out.setdefault(c["family"], []).append(c)
    return [(fam, [m for m in METRICS if any(c["name"] == m for c in cs)], cs) for fam, cs in out.items()]
