"""A Document as one self-contained HTML page: no script, no network, images from the folder beside it.

Every piece of user data (prompts, suite, model, method and run names, versions) passes through
``e`` (``fmt.html``: ``html.escape`` with quotes) exactly once, at the point where it is put into markup, so a
prompt such as ``<script>alert(1)</script>`` reads as text. A Content-Security-Policy allowing only
images from the page's own location and the inline stylesheet is a second line of defence: even an
escaping bug could not run a script or reach the network.
"""

from __future__ import annotations

from typing import Any

from bench.report import content
from bench.report import rows as report_rows
from bench.report.document import Document
from bench.report.fmt import SIG, ci, g, pct
from bench.report.fmt import html as e
from bench.report.grids import Grid
from bench.report.rows import tables
from bench.report.stats import ALPHA

CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
GRID_CELL_PX = 128  # small images (the tiny world's 32 px) are shown enlarged to about this size
_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; margin: 0 auto;
       max-width: 1200px; padding: 0 1.2rem 2rem; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
.meta, figcaption, .note { color: #555; font-size: .9rem; }
nav a { margin-right: .8rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .55rem; text-align: left; vertical-align: top; }
th { background: #f4f4f6; } tbody tr:nth-child(even) { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.sig { color: #b00020; font-weight: 600; }
figure { margin: 1rem 0 1.6rem; } figure img { max-width: 100%; height: auto; }
.flow { display: flex; flex-wrap: wrap; gap: 0 2.2rem; align-items: flex-start; }
figure.grid { max-width: 100%; } figure.grid figcaption { max-width: 22rem; }
figure.grid table { margin: .3rem 0; } figure.grid td { text-align: center; }
figure.grid img { image-rendering: pixelated; display: block; margin: 0 auto; }
.prompt { font-style: italic; white-space: pre-wrap; }
.missing { color: #b00020; }
.warnings { border-left: 4px solid #b00020; padding: .2rem .8rem; background: #fff4f4; }
details { margin: .5rem 0 1rem; } summary { cursor: pointer; font-weight: 600; }
footer { margin-top: 2.5rem; border-top: 1px solid #ddd; font-size: .85rem; color: #444; }
code { font-size: .85em; }
"""


def _row(cells: list[str], num: set[int] = frozenset(), tag: str = "td") -> str:
    """A table row from already-escaped cell contents."""
    return "<tr>" + "".join(f'<{tag}{" class=num" if i in num and tag == "td" else ""}>{c}</{tag}>'
                            for i, c in enumerate(cells)) + "</tr>"


def _table(header: list[str], rows: list[list[str]], num: set[int] = frozenset(), cls: str = "") -> str:
    """Header and cells must be escaped already."""
    head = _row(header, tag="th")
    body = "\n".join(_row(r, num) for r in rows)
    return f'<table{f" class={cls}" if cls else ""}><thead>{head}</thead><tbody>\n{body}\n</tbody></table>'


def _sig(s: str) -> str:
    """Escaped text with the ✱ marker highlighted."""
    return e(s).replace(SIG, f'<span class=sig title="significant after Holm, p &lt; {ALPHA}">{SIG}</span>')


def _legend(text: str) -> str:
    return f"<p class=note>{e(text)}</p>" if text else ""


def _results(doc: Document, table: list[dict[str, Any]]) -> str:
    with_base = content.base_differs(table)
    rows = [[_sig(c) for c in content.result_cells(r, doc.labels[r["run_id"]],
                                                   content.base_text(doc, r) if with_base else None)]
            for r in table]
    return (_table([e(h) for h in content.result_header(with_base)], rows, num=content.result_numeric(with_base),
                   cls="results") + _legend(content.table_legend(doc, [r["reward_relation"] for r in table])))


def _ranking(doc: Document) -> str:
    out = ['<section id="ranking"><h2>Ranking</h2>']
    for block in doc.ranking:
        header = content.ranking_header(doc, block, e)
        rows = [[_sig(c) if i != 1 else c
                 for i, c in enumerate(content.ranking_cells(block, entry, rank, e(doc.labels[entry["run_id"]])))]
                for rank, entry in enumerate(block["entries"], start=1)]
        out += [f"<h3>{e(block['suite'])}</h3>", f"<p class=note>{content.ranking_text(doc, block, e)}</p>",
                _table(header, rows, num=set(range(len(header))) - {1}), _legend(content.ranking_legend(doc, block))]
    return "\n".join(out) + "</section>"


def _replicates(doc: Document, suite: str) -> str:
    tables = content.replicate_tables(doc, suite)
    if not tables:
        return ""
    out = [f"<h3>Training replicates</h3><p class=note>{e(content.REPLICATE_NOTE)}</p>"]
    for t in tables:
        header = [e(h) for h in content.replicate_header(t["seeds"])]
        rows = [[e(doc.labels[r["run_id"]] + report_rows.mark(r["reward_relation"]))] + [e(c) for c in cells]
                for r, cells in t["rows"]]
        out.append(f"<h4>{e(t['reward'])} ({e(t['reward_version'])})</h4>"
                   + _table(header, rows, num=set(range(1, len(header)))))
    return "\n".join(out)


def _categories(doc: Document, suite: str) -> str:
    parts = []
    for t in (t for t in doc.categories if t["suite"] == suite):
        header = [e(t["attribute"])] + [f"{e(doc.labels[rid] + doc.mark(rid, t['reward']))}<br><small>win % "
                                        "[95% CI]</small>" for rid in t["runs"]]
        rows = []
        for level in t["levels"]:
            cells = [e(level)]
            for rid in t["runs"]:
                c = t["cells"][rid].get(level)
                rate = "" if c is None else e(ci(c["win_rate"], c["ci_low"], c["ci_high"], pct))
                cells.append("—" if c is None else f"{rate} <small>({c['n_prompts']})</small>")
            rows.append(cells)
        parts.append(f"<div><h4>{e(t['reward'])} ({e(t['reward_version'])}) by {e(t['attribute'])}</h4>"
                     + _table(header, rows, num=set(range(1, len(header)))) + "</div>")
    if not parts:
        return ""
    state = " open" if len(parts) <= 6 else ""  # many tables: folded, so the image grids stay in reach
    return (f'<details{state}><summary>By category ({len(parts)} tables)</summary><p class=note>Win rate against '
            "base within each level (prompts in parentheses); intervals are descriptive, not adjusted for the "
            "number of levels.</p>"
            + '<div class="flow">' + "\n".join(parts) + "</div></details>")


def _grid(doc: Document, grid: Grid) -> str:
    heads, imgs, scores = [], [], []
    for c in grid.cells:
        scale = max(1, GRID_CELL_PX // max(c.width, c.height, 1))
        alt = f"{c.label}: {'image missing' if c.missing else grid.prompt}"
        heads.append(e(c.label))
        imgs.append(f'<img src="{e(doc.asset(c.src))}" alt="{e(alt)}" width="{c.width * scale}" '
                    f'height="{c.height * scale}">' + ('<br><span class=missing>missing</span>' if c.missing else ""))
        scores.append("<br>".join(f"{e(doc.reward_name(k) + doc.mark(c.run_id, content.reward_of(k)))}: {e(g(v))}"
                                  for k, v in c.scores.items()) or "—")
    meta = f"seed {grid.seed} · prompt id {e(grid.prompt_id)}" + (
        f" · category {e(grid.category)}" if grid.category else "")
    caption = (f"<figcaption><strong>{'; '.join(e(r) for r in grid.reasons)}</strong> · {meta}<br>"
               f"<span class=prompt>{e(grid.prompt)}</span></figcaption>")
    table = f"<table><thead>{_row(heads, tag='th')}</thead><tbody>{_row(imgs)}{_row(scores)}</tbody></table>"
    return f'<figure class="grid">{caption}{table}</figure>'


def _figure(doc: Document, f) -> str:
    if f is None or not doc.assets:
        return ""
    return (f'<figure><img src="{e(doc.asset(f.src))}" alt="{e(f.alt)}" width="{f.width}" height="{f.height}">'
            f"<figcaption>{e(f.alt)}</figcaption></figure>")


def _diversity(doc: Document, suite: str) -> str:
    found = content.diversity_tables(doc, suite, e)
    if not found:
        return f"<p class=note>{e(content.NO_EMBEDDINGS)}</p>"
    out = [f"<h3>{content.DIVERSITY_TITLE}</h3>"]
    for t in found:
        note = content.FAITHFUL_NOTE if t["subset"] == "faithful" else content.diversity_note(t["space"],
                                                                                              t["space_version"])
        out += [f"<h4>{e(t['space'])} ({e(t['space_version'])}), {e(t['subset'])} samples</h4>",
                f"<p class=note>{e(note)}</p>",
                _table([e(h) for h in content.DIVERSITY_HEADER], t["rows"],
                       num=set(range(1, 8)))]
    return "\n".join(out)


def _frontier(doc: Document, suite: str) -> str:
    block = next((b for b in doc.frontier if b["suite"] == suite), None)
    if block is None:
        return ""
    rows = [content.frontier_cells(doc, block, p, e) for p in block["points"]]
    return "\n".join([f"<h3>{content.FRONTIER_TITLE}</h3>", f"<p class=note>{content.frontier_note(doc, block, e)}</p>",
                      _figure(doc, doc.frontier_figures.get(suite)),
                      _table([e(h) for h in content.FRONTIER_HEADER], rows, num=set(range(1, 6))),
                      f"<p>{content.frontier_text(doc, block, e)}</p>"])


def _curves(doc: Document, suite: str) -> str:
    found = content.curve_tables(doc, suite, e)
    if not found:
        return ""
    flags = [f for f in doc.curve_flags if f["suite"] == suite]
    out = [f"<h3>{e(content.CURVES_TITLE)}</h3>", f"<p class=note>{e(content.CURVES_NOTE)}</p>",
           _figure(doc, doc.curve_figures.get(suite)),
           "<ul>" + "".join(f"<li>{content.flag_text(doc, f, e)}</li>" for f in flags) + "</ul>" if flags else ""]
    for t in found:
        out.append(f"<h4>{e(doc.run_label(t['final_run_id']))}</h4>"
                   + _table(t["header"], t["rows"],
                            num=set(range(len(t["header"])))))
    return "\n".join(out)


def _suite(doc: Document, index: int, suite: str) -> str:
    out = [f'<section id="suite-{index}"><h2>Suite {e(suite)}</h2>']
    for f in doc.figures.get(suite, []):
        out.append(_figure(doc, f))
    for (s, reward, version), table in tables(doc.rows).items():
        if s == suite:
            out += [f"<h3>{e(reward)} ({e(version)}){content.title_note(doc, reward, version)}</h3>",
                    _results(doc, table)]
    out.append(_diversity(doc, suite))
    out.append(_frontier(doc, suite))
    out.append(_replicates(doc, suite))
    out.append(_categories(doc, suite))
    out.append(_curves(doc, suite))
    grids = [gr for gr in doc.grids if gr.suite == suite]
    if grids:
        out += ["<h3>Image grids</h3><p class=note>Same prompt and seed (same initial noise) across methods.</p>"]
        out += ['<div class="flow">', *(_grid(doc, gr) for gr in grids), "</div>"]
    return "\n".join(out) + "</section>"


def _training(doc: Document) -> str:
    if not doc.training:
        return ""
    return (f'<section id="training"><h2>{content.TRAINING_TITLE}</h2><p class=note>{e(content.TRAINING_NOTE)}</p>'
            + "".join(_figure(doc, f) for _, f in doc.training_figures) + "</section>")


def _papers(doc: Document) -> str:
    if not doc.papers:
        return ""
    compared = [x for x in doc.papers if x["status"] == "compared"]
    table = _table([e(h) for h in content.PAPERS_HEADER],
                   [content.paper_cells(doc, x, e) for x in compared], num={6, 7}) if compared else ""
    refs = [x for x in doc.papers if x["status"] != "compared"]
    listed = "<ul>" + "".join(f"<li>{e(content.paper_reference(x))}</li>" for x in refs) + "</ul>" if refs else ""
    return (f'<section id="papers"><h2>{content.PAPERS_TITLE}</h2><p class=note>{e(content.PAPERS_NOTE)}</p>'
            + table + listed + "</section>")


def _cost_row(doc: Document, cost: dict[str, Any]) -> list[str]:
    cells = [e(c) for c in content.cost_cells(doc, cost)]
    cells[1] = f"<code>{cells[1]}</code>"  # the run id
    return cells


def _costs(doc: Document) -> str:
    rows = [_cost_row(doc, c) for c in doc.costs]
    return (f'<section id="cost"><h2>Cost</h2><p class=note>{content.COST_NOTE}</p>'
            + _table([e(h) for h in content.COST_HEADER], rows, num=set(range(2, 8))) + "</section>")


def _provenance(doc: Document) -> str:
    items = [f"generated {e(doc.generated_at)}"]
    items += [f"{label}: <code>{e(value)}</code>" if label == "store" else f"{label}: {e(value)}"
              for label, value in content.provenance_facts(doc.provenance, doc.has_replicates)]
    rows = [[e(c) if c else "—" for c in row] for row in content.provenance_runs(doc.provenance)]
    return ('<footer id="provenance"><h2>Provenance</h2><ul>' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
            + _table([e(h) for h in content.PROVENANCE_COLUMNS], rows) + "</footer>")


def render(doc: Document) -> str:
    """The full HTML report of a Document (images referenced relative to the page)."""
    suites = doc.suites
    nav = ['<a href="#ranking">Ranking</a>'] if doc.rows else []
    nav += [f'<a href="#suite-{i}">{e(s)}</a>' for i, s in enumerate(suites)]
    nav += [f'<a href="#training">{content.TRAINING_TITLE}</a>'] if doc.rows and doc.training else []
    nav += ['<a href="#papers">Published results</a>'] if doc.rows and doc.papers else []
    nav += ['<a href="#cost">Cost</a>', '<a href="#statistics">Statistics</a>'] if doc.rows else []
    nav += ['<a href="#provenance">Provenance</a>']
    head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>diffusion-pref-bench report</title><style>{_STYLE}</style></head><body>")
    header = (f"<header><h1>diffusion-pref-bench report</h1><p class=meta>Generated {e(doc.generated_at)} from "
              f"<code>{e(doc.provenance['store'])}</code> · {len(doc.labels)} runs · suites: "
              f"{e(', '.join(suites) or 'none')}</p><nav>{''.join(nav)}</nav></header>")
    body = ["<main>"]
    if doc.warnings:  # what the report left out, first: the numbers are not the whole store
        body.append("<div class=warnings><strong>Warnings</strong><ul>"
                    + "".join(f"<li>{e(w)}</li>" for w in doc.warnings) + "</ul></div>")
    if not doc.rows:
        body.append("<p>No scored images in the store for this selection.</p>")
    else:
        body.append(f"<p class=note>{content.win_rate_intro(doc, e)}{_sig(SIG)} = significant after Holm "
                    f"(p &lt; {ALPHA}).</p>")
        body.append(_ranking(doc))
        body += [_suite(doc, i, s) for i, s in enumerate(suites)]
        body.append(_training(doc))
        body.append(_papers(doc))
        body.append(_costs(doc))
        body.append('<section id="statistics"><h2>Statistics</h2><ul>'
                    + "".join(f"<li>{_sig(n)}</li>" for n in content.statistics_notes(doc)) + "</ul></section>")
    body.append("</main>")
    return "\n".join([head, header, *body, _provenance(doc), "</body></html>"]) + "\n"
