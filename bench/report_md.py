"""The report as Markdown: tables, and the charts and image grids as relative image links.

Prompts, suite, model and method names are user data: ``text`` escapes what Markdown or the HTML
it may contain would interpret, so ``<script>`` or ``*bold*`` in a prompt shows as typed.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bench.report import PROVENANCE_COLUMNS, provenance_facts, provenance_runs

if TYPE_CHECKING:
    from bench.report_doc import Document

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
ALPHA = 0.05


def text(s: Any) -> str:
    """User text as literal Markdown: one line, HTML specials as entities, inline markup escaped."""
    s = " ".join(str(s).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def g(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def ci(x: float | None, lo: float | None, hi: float | None, fmt=g) -> str:
    return "—" if x is None else f"{fmt(x)} [{fmt(lo)}, {fmt(hi)}]"


def p_fmt(p: float) -> str:
    """A p-value; below what a float holds it reads as a bound, not as an impossible 0."""
    return "<1e-300" if p < 1e-300 else f"{p:.3g}"


def p_text(r: dict[str, Any]) -> str:
    """``p (p Holm)``, with ✱ when significant after Holm."""
    if r["p_value"] is None:
        return "—"
    return f"{p_fmt(r['p_value'])} ({p_fmt(r['p_holm'])})" + (" ✱" if r["p_holm"] < ALPHA else "")


RESULT_HEADER = ("method", "n", "mean [95% CI]", "win rate vs base % [95% CI]", "p (Holm)", "train s", "sample s",
                 "score s")


def result_cells(r: dict[str, Any], label: str) -> list[str]:
    """One row of a results table as display strings (escaping is the caller's)."""
    return [label, str(r["n"]), ci(r["mean"], r["mean_ci_low"], r["mean_ci_high"]),
            ci(r["win_rate"], r["ci_low"], r["ci_high"], pct), p_text(r), g(r["train_s"]), g(r["sample_s"]),
            g(r["score_s"])]


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i in right else "---" for i in range(len(header)))
           + "|"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def results_table(table: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """One (suite, reward version) table: a row per run, base first."""
    rows = []
    for r, label in zip(table, labels):
        cells = result_cells(r, text(label))
        rows.append(cells)
    return _table(list(RESULT_HEADER), rows, right={1, 5, 6, 7})


def provenance_lines(prov: dict[str, Any]) -> list[str]:
    out = [f"- {label}: {text(value)}" for label, value in provenance_facts(prov)] + [""]
    return out + _table(PROVENANCE_COLUMNS, [[text(c) if c else "—" for c in row] for row in provenance_runs(prov)])


# -- the full report -----------------------------------------------------------------------------


def statistics_notes(doc: Document) -> list[str]:
    """The plain-language notes on the statistics, shared by the Markdown and HTML reports."""
    m = doc.n_comparisons
    n_tables = len({(r["suite"], r["reward"], r["reward_version"]) for r in doc.rows if r["p_value"] is not None})
    bonferroni = ALPHA / m if m else None
    survive = sum(r["p_value"] is not None and r["p_value"] < bonferroni for r in doc.rows) if m else 0
    b = doc.provenance["bootstrap"]
    notes = [
        "Mean: the mean score of all scored images of a run; higher is better for every reward.",
        "Win rate: each method image is paired with the base image of the same prompt and seed (the same "
        "initial noise); a higher score is a win (1), an equal one a tie (½).",
        f"Intervals: {b['interval']} bootstrap, resampling whole prompts ({b['n_boot']} resamples, "
        f"seed {b['seed']}), because the images of one prompt are correlated.",
        "p: two-sided exact sign test over prompts (a prompt's outcome is the mean win over its seeds; ties are "
        "dropped). ✱ marks p < 0.05 after the Holm adjustment across the methods of one table "
        "(suite × reward × version).",
        f"Multiple comparisons: this report makes {m} comparisons with base in {n_tables} tables. Holm controls "
        "the error rate within each table only; read across all tables, about 5% of true null comparisons "
        "would still come out significant by chance. "
        + (f"Bonferroni over all {m} (p < {bonferroni:.3g}) leaves {survive} significant." if m else ""),
        "Per-category intervals are descriptive: they are not adjusted for the number of categories.",
        "Ranking: per reward, runs are ranked by mean score (ties share the average rank); the order is by "
        "mean rank over the rewards.",
        f"Image grids: {len(doc.grids)} (prompt, seed) pairs, each with its scores. The fixed prompts are chosen "
        "by md5(prompt_id), the categories taking turns, so every report shows the same ones; the others are the "
        "largest wins and losses against base per reward (score minus base's score).",
    ]
    if doc.missing_images:
        notes.append(f"{doc.missing_images} grid image(s) could not be shown (never generated, or the file is gone "
                     "from the results folder) and appear as a grey cross.")
    return notes


def _ranking(doc: Document) -> list[str]:
    out = ["## Ranking across rewards", ""]
    for block in doc.ranking:
        out += [f"### {text(block['suite'])}", ""]
        header = ["rank", "method", "mean rank"] + [f"{text(k)}: rank · win %" for k in block["rewards"]]
        rows = []
        for i, e in enumerate(block["entries"], start=1):
            cells = [str(i), text(doc.labels[e["run_id"]]), f"{e['mean_rank']:.2f}"]
            for k in block["rewards"]:
                if k not in e["ranks"]:
                    cells.append("—")
                    continue
                win = e["win_rates"][k]
                cells.append(f"{e['ranks'][k]:g} · " + ("—" if win is None else pct(win))
                             + (" ✱" if e["significant"][k] else ""))
            rows.append(cells)
        out += _table(header, rows, right={0, 2}) + [""]
    return out


def _categories(doc: Document, suite: str) -> list[str]:
    out = []
    for t in (t for t in doc.categories if t["suite"] == suite):
        out += [f"#### {text(t['reward'])} ({text(t['reward_version'])}) by {text(t['attribute'])}", ""]
        header = [text(t["attribute"])] + [f"{text(doc.labels[rid])} win % [95% CI]" for rid in t["runs"]]
        rows = []
        for level in t["levels"]:
            cells = [text(level)]
            for rid in t["runs"]:
                c = t["cells"][rid].get(level)
                cells.append("—" if c is None else f"{ci(c['win_rate'], c['ci_low'], c['ci_high'], pct)} "
                                                   f"({c['n_prompts']} prompts)")
            rows.append(cells)
        out += _table(header, rows) + [""]
    return (["### By category", ""] + out) if out else []


def _grid(doc: Document, grid) -> list[str]:
    reasons = "; ".join(text(r) for r in grid.reasons)
    meta = f"seed {grid.seed} · prompt id {text(grid.prompt_id)}" + (
        f" · category {text(grid.category)}" if grid.category else "")
    out = [f"**{reasons}** · {meta}", "", f"> {text(grid.prompt)}", ""]
    header = [text(c.label) for c in grid.cells]
    images = [f"![{text(c.label) + (' (missing)' if c.missing else '')}]({doc.asset(c.src)})" for c in grid.cells]
    scores = ["<br>".join(f"{text(doc.reward_name(k))} {g(v)}" for k, v in c.scores.items()) or "—"
              for c in grid.cells]
    return out + _table(header, [images, scores]) + [""]


def _costs(doc: Document) -> list[str]:
    header = ["method", "run", "train s", "sample s", "score s", "total s", "images", "sample s / image"]
    rows = [[text(doc.labels[c["run_id"]]), text(c["run_id"]), g(c["train_s"]), g(c["sample_s"]), g(c["score_s"]),
             g(c["total_s"]), str(c["n_images"]), g(c["sample_s_per_image"])] for c in doc.costs]
    return ["## Cost", "", "Seconds of work recorded by the runner; — where nothing was timed (no training, or "
            "a stored checkpoint or image was reused).", ""] + _table(header, rows, right=set(range(2, 8))) + [""]


def render(doc: Document) -> str:
    """The full Markdown report of a Document."""
    runs = len(doc.labels)
    out = ["# diffusion-pref-bench report", "",
           f"Generated {doc.generated_at} from {text(doc.provenance['store'])} · {runs} runs · suites: "
           f"{', '.join(text(s) for s in doc.suites) or 'none'}", ""]
    if not doc.rows:
        out += ["No scored images in the store for this selection.", "", "## Provenance", ""]
        return "\n".join(out + provenance_lines(doc.provenance)) + "\n"
    out += ["Win rate: share of (prompt, seed) pairs where the method's image scores higher than base's (ties ½); "
            "intervals are 95% bootstrap CIs over prompts; ✱ = significant after Holm (p < 0.05). "
            "See [Statistics](#statistics).", ""]
    out += _ranking(doc)
    from bench.report import tables

    grouped = tables(doc.rows)
    for suite in doc.suites:
        out += [f"## Suite {text(suite)}", ""]
        for f in doc.figures.get(suite, []):
            out += [f"![{text(f.alt)}]({doc.asset(f.src)})", ""]
        for (s, reward, version), table in grouped.items():
            if s == suite:
                out += [f"### {text(reward)} ({text(version)})", ""]
                out += results_table(table, [doc.labels[r["run_id"]] for r in table]) + [""]
        out += _categories(doc, suite)
        suite_grids = [gr for gr in doc.grids if gr.suite == suite]
        if suite_grids:
            out += ["### Image grids", "", "Same prompt and seed (same initial noise) across methods.", ""]
            for gr in suite_grids:
                out += _grid(doc, gr)
    out += _costs(doc)
    out += ["## Statistics", ""] + [f"- {n}" for n in statistics_notes(doc)] + [""]
    out += ["## Provenance", ""] + provenance_lines(doc.provenance)
    return "\n".join(out) + "\n"
