"""A Document as data: JSON (rows, provenance and every summary) or CSV (the rows only)."""

from __future__ import annotations

import csv
import io
import json

from bench.report.document import Document
from bench.report.rows import ROW_KEYS


def render_json(doc: Document) -> str:
    """{"rows", "provenance", "ranking", "categories", "costs", "labels", "generated_at", "warnings"}, NaN
    refused (the rows hold none: ``data.anomalies`` names what was left out, in "warnings")."""
    body = {"rows": doc.rows, "provenance": doc.provenance, "ranking": doc.ranking, "categories": doc.categories,
            "costs": doc.costs, "labels": doc.labels, "generated_at": doc.generated_at, "warnings": doc.warnings}
    return json.dumps(body, indent=2, allow_nan=False) + "\n"


def render_csv(doc: Document) -> str:
    """One line per row, columns ROW_KEYS (empty where a value is None)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROW_KEYS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(doc.rows)
    return buf.getvalue()
