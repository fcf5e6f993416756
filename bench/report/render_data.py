"""A Document as data: JSON (rows, provenance and every summary) or CSV (the rows only)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from bench.report import content
from bench.report.document import Document
from bench.report.rows import ROW_KEYS


def render_json(doc: Document) -> str:
    """{"rows", "replicate_rows", "provenance", "ranking", "categories", "costs", "labels", "reward_relations",
    "generated_at", "warnings", "curves", "curve_flags", "diversity", "training_curves", "frontier",
    "paper_comparison"}, NaN refused (the rows hold none: ``data.anomalies`` names what was left out, in
    "warnings"). "rows" has one row per arm (``ROW_KEYS``), "replicate_rows" one per run (each training replicate);
    "reward_relations" lists the rewards the runs shown are not held out from, with the reason.

    "curves": the over-optimisation points (``curves.POINT_KEYS``) and "curve_flags" one flag per (suite, final
    run) with its sentence ("text"); "diversity": ``diversity.ROW_KEYS`` rows; "training_curves": one per (run's
    artifact, metric), averaged to at most ``trainlog.POINTS`` points; "frontier": per suite, the points (with
    their "label") and which methods beat best_of_n, with its sentence; "paper_comparison": published numbers
    beside ours. Keys are added over time, never renamed or removed."""
    body = {"rows": doc.rows, "replicate_rows": doc.replicate_rows, "provenance": doc.provenance,
            "ranking": doc.ranking, "categories": doc.categories, "costs": doc.costs, "labels": doc.labels,
            "reward_relations": doc.relations, "generated_at": doc.generated_at, "warnings": doc.warnings,
            "curves": doc.curves,
            "curve_flags": [{**f, "label": doc.run_label(f["final_run_id"]), "text": content.flag_text(doc, f)}
                            for f in doc.curve_flags],
            "diversity": doc.diversity, "training_curves": doc.training,
            "frontier": [{**b, "points": [{**p, "label": content.frontier_label(doc, p)} for p in b["points"]],
                          "text": content.frontier_text(doc, b)} for b in doc.frontier],
            "paper_comparison": doc.papers}
    return json.dumps(body, indent=2, allow_nan=False) + "\n"


def _cell(value: Any) -> Any:
    """A CSV cell: a list (an arm's run_ids, its replicates' win rates) as its items joined by ';'."""
    if isinstance(value, list):
        return ";".join("" if v is None else str(v) for v in value)
    return value


def render_csv(doc: Document) -> str:
    """One line per row, columns ROW_KEYS (empty where a value is None; lists joined by ';')."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROW_KEYS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in r.items()} for r in doc.rows)
    return buf.getvalue()
