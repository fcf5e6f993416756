"""What the md and html reports both say, as plain text: table headers and cells, the notes on the
statistics, the provenance lines. Each renderer escapes and lays it out its own way.

Functions that put user data (reward names) into a sentence take ``name``, the renderer's escaping
for it, and return text that is otherwise safe in both formats.
"""

from __future__ import annotations

from typing import Any, Callable

from bench.report.document import Document
from bench.report.fmt import SIG, ci, g, p_text, pct
from bench.report.grids import damaged_notes
from bench.report.stats import ALPHA

Escape = Callable[[Any], str]

RESULT_HEADER = ("method", "n", "mean [95% CI]", "win rate vs base % [95% CI]", "p (Holm)", "train s", "sample s",
                 "score s")
COST_HEADER = ("method", "run", "train s", "sample s", "score s", "total s", "images", "sample s / image")
PROVENANCE_COLUMNS = ("run", "method", "model", "revision", "sampler", "config", "artifact", "status", "versions")
COST_NOTE = ("Seconds of work recorded by the runner; — where nothing was timed (no training, or a stored "
             "checkpoint or image was reused).")
LOWER = " · lower is better"  # after the title of a lower-is-better reward's table


def result_cells(r: dict[str, Any], label: str) -> list[str]:
    """One row of a results table as display strings (escaping is the caller's)."""
    return [label, str(r["n"]), ci(r["mean"], r["mean_ci_low"], r["mean_ci_high"]),
            ci(r["win_rate"], r["ci_low"], r["ci_high"], pct), p_text(r), g(r["train_s"]), g(r["sample_s"]),
            g(r["score_s"])]


def cost_cells(doc: Document, c: dict[str, Any]) -> list[str]:
    """One row of the cost table (COST_HEADER) as display strings."""
    return [doc.labels[c["run_id"]], c["run_id"], g(c["train_s"]), g(c["sample_s"]), g(c["score_s"]),
            g(c["total_s"]), str(c["n_images"]), g(c["sample_s_per_image"])]


def ranking_cell(entry: dict[str, Any], key: str) -> str:
    """A run's rank and win rate on one reward of the ranking, with ✱ when significant."""
    if key not in entry["ranks"]:
        return "—"
    win = entry["win_rates"][key]
    return (f"{entry['ranks'][key]:g} · " + ("—" if win is None else pct(win))
            + (f" {SIG}" if entry["significant"][key] else ""))


def title_note(doc: Document, reward: str, version: str) -> str:
    """What follows a results table's title: the direction of a lower-is-better reward, else nothing."""
    return LOWER if doc.lower_is_better(reward, version) else ""


def _lowers(doc: Document, name: Escape) -> str:
    return ", ".join(name(r) for r in doc.lower_rewards)


def better(doc: Document, name: Escape) -> str:
    """How a score beats base's: "higher", naming the rewards where lower is better."""
    return f"better (higher; lower for {_lowers(doc, name)})" if doc.lower_rewards else "higher"


def win_rate_intro(doc: Document, name: Escape) -> str:
    """The first sentence of a report, up to its significance marker."""
    return (f"Win rate: share of (prompt, seed) pairs where the method's image scores {better(doc, name)} than "
            "base's (ties ½); intervals are 95% bootstrap CIs over prompts; ")


def _direction_notes(doc: Document, name: Escape) -> tuple[str, str, str, str]:
    """The parts of the notes that change when some reward is lower-is-better."""
    if not doc.lower_rewards:
        return ("higher is better for every reward", "a higher score", "", "score minus base's score")
    lowers = _lowers(doc, name)
    return (f"higher is better, except for {lowers}, where lower is better", f"a {better(doc, name)} score",
            f"highest first, lowest first for {lowers}; ",
            f"score minus base's score, which a win lowers for {lowers}")


def statistics_notes(doc: Document, name: Escape = str) -> list[str]:
    """The plain-language notes on the statistics, shared by the Markdown and HTML reports."""
    m = doc.n_comparisons
    n_tables = len({(r["suite"], r["reward"], r["reward_version"]) for r in doc.rows if r["p_value"] is not None})
    bonferroni = ALPHA / m if m else None
    survive = sum(r["p_value"] is not None and r["p_value"] < bonferroni for r in doc.rows) if m else 0
    b = doc.provenance["bootstrap"]
    mean_dir, win_dir, rank_dir, delta = _direction_notes(doc, name)
    notes = [
        f"Mean: the mean score of all scored images of a run; {mean_dir}.",
        "Win rate: each method image is paired with the base image of the same prompt and seed (the same "
        f"initial noise); {win_dir} is a win (1), an equal one a tie (½).",
        f"Intervals: {b['interval']} bootstrap, resampling whole prompts ({b['n_boot']} resamples, "
        f"seed {b['seed']}), because the images of one prompt are correlated.",
        "p: two-sided exact sign test over prompts (a prompt's outcome is the mean win over its seeds; ties are "
        f"dropped). {SIG} marks p < {ALPHA} after the Holm adjustment across the methods of one table "
        "(suite × reward × version).",
        f"Multiple comparisons: this report makes {m} comparisons with base in {n_tables} tables. Holm controls "
        "the error rate within each table only; read across all tables, about 5% of true null comparisons "
        "would still come out significant by chance. "
        + (f"Bonferroni over all {m} (p < {bonferroni:.3g}) leaves {survive} significant." if m else ""),
        "Per-category intervals are descriptive: they are not adjusted for the number of categories.",
        f"Ranking: per reward, runs are ranked by mean score ({rank_dir}ties share the average rank); the order "
        "is by mean rank over the rewards.",
        f"Image grids: {len(doc.grids)} (prompt, seed) pairs, each with its scores. The fixed prompts are chosen "
        "by md5(prompt_id), the categories taking turns, so every report shows the same ones; the others are the "
        f"largest wins and losses against base per reward ({delta}).",
    ]
    if doc.missing_images:
        notes.append(f"{doc.missing_images} grid image(s) could not be shown (never generated, or the file is gone "
                     "from the results folder) and appear as a grey cross.")
    notes += damaged_notes(doc.grids, name)  # image files not the bytes of their stored sha256
    return notes


def provenance_facts(prov: dict) -> list[tuple[str, str]]:
    """The footer's (label, plain text) lines, for every format to escape and lay out its own way."""
    b = prov["bootstrap"]
    return [("n", "paired (prompt, seed) comparisons with base; for base, its scored images"),
            ("intervals", f"{b['interval']} cluster bootstrap over prompts, {b['n_boot']} resamples, seed {b['seed']}"),
            ("p", prov["test"]), ("git", ", ".join(prov["git_shas"]) or "unknown"), ("store", prov["store"])]


def provenance_runs(prov: dict) -> list[list[str]]:
    """One row of PROVENANCE_COLUMNS per run, in plain text ("" where a value is missing)."""
    rows = []
    for run_id, r in prov["runs"].items():
        versions = ", ".join(f"{k} {v}" for k, v in (r["versions"] or {}).items())
        rows.append([str(c) if c else "" for c in (run_id, r["method"], r["model"], r["model_revision"],
                                                    r["sampler_key"], r["config_hash"], r["artifact_hash"],
                                                    r["status"], versions)])
    return rows
