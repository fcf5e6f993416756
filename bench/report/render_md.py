"""A Document as Markdown: tables, and the charts and image grids as relative image links.

User text goes through ``fmt.md`` exactly once, where it is put into the page.
"""

from __future__ import annotations

from typing import Any

from bench.report import content
from bench.report import rows as report_rows
from bench.report.document import Document
from bench.report.fmt import SIG, ci, g, md, pct
from bench.report.grids import Grid
from bench.report.rows import tables
from bench.report.stats import ALPHA


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i in right else "---" for i in range(len(header)))
           + "|"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def _results(doc: Document, table: list[dict[str, Any]]) -> list[str]:
    """One (suite, reward version) table: a row per arm, base first; the paired base where bases differ."""
    with_base = content.base_differs(table)
    rows = [content.result_cells(r, md(doc.labels[r["run_id"]]), md(content.base_text(doc, r)) if with_base else None)
            for r in table]
    out = _table(content.result_header(with_base), rows, right=content.result_numeric(with_base))
    return out + _legend(content.table_legend(doc, [r["reward_relation"] for r in table]))


def _legend(text: str) -> list[str]:
    return ["", text] if text else []


def _provenance(doc: Document) -> list[str]:
    prov = doc.provenance
    out = [f"- {label}: {md(value)}" for label, value in content.provenance_facts(prov, doc.has_replicates)] + [""]
    rows = [[md(c) if c else "—" for c in row] for row in content.provenance_runs(prov)]
    return out + _table(list(content.PROVENANCE_COLUMNS), rows)


def _ranking(doc: Document) -> list[str]:
    out = ["## Ranking", ""]
    for block in doc.ranking:
        out += [f"### {md(block['suite'])}", "", content.ranking_text(doc, block, md), ""]
        header = content.ranking_header(doc, block, md)
        rows = [content.ranking_cells(block, e, i, md(doc.labels[e["run_id"]]))
                for i, e in enumerate(block["entries"], start=1)]
        out += _table(header, rows, right={0} | set(range(2, len(header))))
        out += _legend(content.ranking_legend(doc, block)) + [""]
    return out


def _replicates(doc: Document, suite: str) -> list[str]:
    tables = content.replicate_tables(doc, suite)
    if not tables:
        return []
    out = ["### Training replicates", "", content.REPLICATE_NOTE, ""]
    for t in tables:
        out += [f"#### {md(t['reward'])} ({md(t['reward_version'])})", ""]
        rows = [[md(doc.labels[r["run_id"]]) + report_rows.mark(r["reward_relation"])] + cells for r, cells in t["rows"]]
        header = content.replicate_header(t["seeds"])
        out += _table(header, rows, right=set(range(1, len(header)))) + [""]
    return out


def _category_cell(c: dict[str, Any] | None) -> str:
    return "—" if c is None else f"{ci(c['win_rate'], c['ci_low'], c['ci_high'], pct)} ({c['n_prompts']} prompts)"


def _categories(doc: Document, suite: str) -> list[str]:
    out = []
    for t in (t for t in doc.categories if t["suite"] == suite):
        out += [f"#### {md(t['reward'])} ({md(t['reward_version'])}) by {md(t['attribute'])}", ""]
        header = [md(t["attribute"])] + [f"{md(doc.labels[rid])}{doc.mark(rid, t['reward'])} win % [95% CI]"
                                         for rid in t["runs"]]
        rows = [[md(level)] + [_category_cell(t["cells"][rid].get(level)) for rid in t["runs"]]
                for level in t["levels"]]
        out += _table(header, rows) + [""]
    return (["### By category", ""] + out) if out else []


def _grid(doc: Document, grid: Grid) -> list[str]:
    reasons = "; ".join(md(r) for r in grid.reasons)
    meta = f"seed {grid.seed} · prompt id {md(grid.prompt_id)}" + (
        f" · category {md(grid.category)}" if grid.category else "")
    out = [f"**{reasons}** · {meta}", "", f"> {md(grid.prompt)}", ""]
    header = [md(c.label) for c in grid.cells]
    images = [f"![{md(c.label) + (' (missing)' if c.missing else '')}]({doc.asset(c.src)})" for c in grid.cells]
    scores = ["<br>".join(f"{md(doc.reward_name(k))}{doc.mark(c.run_id, content.reward_of(k))} {g(v)}"
                          for k, v in c.scores.items()) or "—" for c in grid.cells]
    return out + _table(header, [images, scores]) + [""]


def _figure(doc: Document, f) -> list[str]:
    return [f"![{md(f.alt)}]({doc.asset(f.src)})", ""] if f is not None and doc.assets else []


def _diversity(doc: Document, suite: str) -> list[str]:
    found = content.diversity_tables(doc, suite, md)
    if not found:
        return [f"**{content.NO_EMBEDDINGS}**", ""]
    out = [f"### {content.DIVERSITY_TITLE}", ""]
    for t in found:
        note = content.FAITHFUL_NOTE if t["subset"] == "faithful" else content.diversity_note(t["space"],
                                                                                              t["space_version"])
        out += [f"#### {md(t['space'])} ({md(t['space_version'])}), {t['subset']} samples", "", md(note), ""]
        out += _table(list(content.DIVERSITY_HEADER), t["rows"],
                      right=set(range(1, 8))) + [""]
    return out


def _frontier(doc: Document, suite: str) -> list[str]:
    block = next((b for b in doc.frontier if b["suite"] == suite), None)
    if block is None:
        return []
    out = [f"### {content.FRONTIER_TITLE}", "", content.frontier_note(doc, block, md), ""]
    out += _figure(doc, doc.frontier_figures.get(suite))
    rows = [content.frontier_cells(doc, block, p, md) for p in block["points"]]
    out += _table(list(content.FRONTIER_HEADER), rows, right=set(range(1, 6))) + [""]
    return out + [content.frontier_text(doc, block, md), ""]


def _curves(doc: Document, suite: str) -> list[str]:
    found = content.curve_tables(doc, suite, md)
    if not found:
        return []
    out = [f"### {content.CURVES_TITLE}", "", content.CURVES_NOTE, ""]
    out += _figure(doc, doc.curve_figures.get(suite))
    out += [f"- {content.flag_text(doc, f, md)}" for f in doc.curve_flags if f["suite"] == suite] + [""]
    for t in found:
        out += [f"#### {md(doc.run_label(t['final_run_id']))}", ""]
        out += _table(t["header"], t["rows"],
                      right=set(range(len(t["header"])))) + [""]
    return out


def _suite(doc: Document, suite: str) -> list[str]:
    out = [f"## Suite {md(suite)}", ""]
    for f in doc.figures.get(suite, []):
        out += [f"![{md(f.alt)}]({doc.asset(f.src)})", ""]
    for (s, reward, version), table in tables(doc.rows).items():
        if s == suite:
            out += [f"### {md(reward)} ({md(version)}){content.title_note(doc, reward, version)}", ""]
            out += _results(doc, table) + [""]
    out += _diversity(doc, suite)
    out += _frontier(doc, suite)
    out += _replicates(doc, suite)
    out += _categories(doc, suite)
    out += _curves(doc, suite)
    suite_grids = [gr for gr in doc.grids if gr.suite == suite]
    if suite_grids:
        out += ["### Image grids", "", "Same prompt and seed (same initial noise) across methods.", ""]
        for gr in suite_grids:
            out += _grid(doc, gr)
    return out


def _training(doc: Document) -> list[str]:
    if not doc.training:
        return []
    out = [f"## {content.TRAINING_TITLE}", "", content.TRAINING_NOTE, ""]
    for _, f in doc.training_figures:
        out += _figure(doc, f)
    return out


def _papers(doc: Document) -> list[str]:
    if not doc.papers:
        return []
    out = [f"## {content.PAPERS_TITLE}", "", content.PAPERS_NOTE, ""]
    compared = [e for e in doc.papers if e["status"] == "compared"]
    if compared:
        out += _table(list(content.PAPERS_HEADER), [content.paper_cells(doc, e, md) for e in compared],
                      right={6, 7}) + [""]
    out += [f"- {md(content.paper_reference(e))}" for e in doc.papers if e["status"] != "compared"]
    return out + [""]


def _costs(doc: Document) -> list[str]:
    rows = [[md(c) for c in content.cost_cells(doc, cost)] for cost in doc.costs]
    table = _table(list(content.COST_HEADER), rows, right=set(range(2, 8)))
    return ["## Cost", "", content.COST_NOTE, ""] + table + [""]


def _warnings(doc: Document) -> list[str]:
    """What the report left out, first: a reader must not take the numbers for the whole store."""
    return (["**Warnings**", ""] + [f"- ⚠ {md(w)}" for w in doc.warnings] + [""]) if doc.warnings else []


def render(doc: Document) -> str:
    """The full Markdown report of a Document."""
    out = ["# diffusion-pref-bench report", "",
           f"Generated {doc.generated_at} from {md(doc.provenance['store'])} · {len(doc.labels)} runs · suites: "
           f"{', '.join(md(s) for s in doc.suites) or 'none'}", ""]
    out += _warnings(doc)
    if not doc.rows:
        out += ["No scored images in the store for this selection.", "", "## Provenance", ""]
        return "\n".join(out + _provenance(doc)) + "\n"
    out += [content.win_rate_intro(doc, md) + f"{SIG} = significant after Holm (p < {ALPHA}). "
            "See [Statistics](#statistics).", ""]
    out += _ranking(doc)
    for suite in doc.suites:
        out += _suite(doc, suite)
    out += _training(doc)
    out += _papers(doc)
    out += _costs(doc)
    out += ["## Statistics", ""] + [f"- {n}" for n in content.statistics_notes(doc, md)] + [""]
    out += ["## Provenance", ""] + _provenance(doc)
    return "\n".join(out) + "\n"
