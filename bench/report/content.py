"""What the md and html reports both say, as plain text: table headers and cells, the notes on the
statistics, the provenance lines. Each renderer escapes and lays it out its own way.

Functions that put user data (reward names) into a sentence take ``name``, the renderer's escaping
for it, and return text that is otherwise safe in both formats.
"""

from __future__ import annotations

from typing import Any, Callable

from bench.report import rows as report_rows
from bench.report.document import Document
from bench.report.fmt import SIG, ci, g, p_text, pct
from bench.report.grids import damaged_notes
from bench.report.stats import ALPHA

Escape = Callable[[Any], str]

RESULT_HEADER = ("method", "n", "mean [95% CI]", "win rate vs base % [95% CI]", "p (Holm)", "train s", "sample s",
                 "score s")
BASE_HEADER = "paired base"  # the column a results table gains where its methods are paired with different bases
COST_HEADER = ("method", "run", "train s", "sample s", "score s", "total s", "images", "sample s / image")
PROVENANCE_COLUMNS = ("run", "method", "model", "revision", "sampler", "config", "artifact", "status", "versions")
COST_NOTE = ("Seconds of work recorded by the runner; — where nothing was timed (no training, or a stored "
             "checkpoint or image was reused).")
LOWER = " · lower is better"  # after the title of a lower-is-better reward's table
BELOW = "⚠"  # a faithfulness change whose CI lies entirely below 0


def base_differs(table: list[dict[str, Any]]) -> bool:
    """Whether the method rows of one table are paired with different base runs (then the table names them)."""
    return len({r["base_run_id"] for r in table if r["method"] != "base"}) > 1


def result_header(with_base: bool) -> list[str]:
    header = list(RESULT_HEADER)
    return header[:1] + [BASE_HEADER] + header[1:] if with_base else header


def base_text(doc: Document, r: dict[str, Any]) -> str:
    """The base a row is paired with, by the name a reader sees and its sampler settings (plain text)."""
    if r["method"] == "base":
        return "—"
    if r["base_run_id"] is None:
        return "none"
    label = doc.labels.get(r["base_run_id"], r["base_run_id"])
    settings = r["base_settings"]
    return f"{label} · {settings}" if settings and settings not in label else label


def result_cells(r: dict[str, Any], label: str, base: str | None = None) -> list[str]:
    """One row of a results table as display strings (escaping the label and ``base`` is the caller's);
    ``base``: the paired base's cell, where the table shows that column."""
    cells = [label + report_rows.mark(r["reward_relation"]), str(r["n"]), ci(r["mean"], r["mean_ci_low"],
             r["mean_ci_high"]), ci(r["win_rate"], r["ci_low"], r["ci_high"], pct), p_text(r), g(r["train_s"]),
             g(r["sample_s"]), g(r["score_s"])]
    return cells[:1] + [base] + cells[1:] if base is not None else cells


def result_numeric(with_base: bool) -> set[int]:
    """The right-aligned (numeric) columns of a results table."""
    return {2, 6, 7, 8} if with_base else {1, 5, 6, 7}


def marks_legend(doc: Document) -> str:
    """'† = trained on this reward ...; ‡ = ...' for the marks the report uses ('' when none)."""
    return "; ".join(f"{report_rows.MARKS[rel]} = {report_rows.MARK_LEGEND[rel]}" for rel in doc.marked)


def table_legend(doc: Document, relations: list[str | None]) -> str:
    """The legend under one table: the marks its rows use ('' when none)."""
    used = [rel for rel in report_rows.MARKS if rel in relations]
    return "; ".join(f"{report_rows.MARKS[rel]} = {report_rows.MARK_LEGEND[rel]}" for rel in used)


def cost_cells(doc: Document, c: dict[str, Any]) -> list[str]:
    """One row of the cost table (COST_HEADER) as display strings."""
    return [doc.run_label(c["run_id"]), c["run_id"], g(c["train_s"]), g(c["sample_s"]), g(c["score_s"]),
            g(c["total_s"]), str(c["n_images"]), g(c["sample_s_per_image"])]


# -- the ranking -------------------------------------------------------------------------------------------------


def reward_of(key: str) -> str:
    """The reward of a ``reward (version)`` key."""
    return key.rsplit(" (", 1)[0]


def ranking_text(doc: Document, block: dict[str, Any], name: Escape) -> str:
    """What one suite's ranking ranks on, in a sentence or three."""
    keys = ", ".join(name(doc.reward_name(k)) for k in block["ranked_on"])
    if block["basis"] == "gold":
        text = (f"Ranked on the win rate against base on {keys}, the gold reward: the truth the preference labels "
                "are drawn from.")
    elif block["basis"] == "preference":
        text = (f"No gold reward: ranked on the mean win rate against base over the preference rewards each run is "
                f"held out from ({keys})" + ("; a reward marked † or ‡ for a run is left out of its average."
                                             if doc.marked else "."))
    else:
        return "No gold or preference reward to rank on: runs are listed, not ranked."
    text += (" Base sits at 50%. Runs whose 95% CI lies entirely above 50% come first, then those whose CI holds "
             "50% (base among them), then those entirely below; within each group by win rate. A run that beats "
             "base significantly can therefore never rank below it.")
    if block["constraints"]:
        faith = ", ".join(name(doc.reward_name(k)) for k in block["constraints"])
        text += (f" Faithfulness ({faith}) is a constraint, not part of the rank: Δ is the change of its mean "
                 "against base, paired per prompt and seed (+ is better), with its 95% CI; "
                 f"{BELOW} where the CI lies entirely below 0.")
    return text


def _columns(block: dict[str, Any]) -> list[str]:
    """The per-reward win-rate columns: each preference reward averaged, where several are."""
    return block["ranked_on"] if block["basis"] == "preference" and len(block["ranked_on"]) > 1 else []


def ranking_header(doc: Document, block: dict[str, Any], name: Escape) -> list[str]:
    on = block["ranked_on"]
    if len(on) == 1:
        score = f"{name(doc.reward_name(on[0]))} win % vs base [95% CI]"
    else:
        score = "mean win % vs base" + (" (held out)" if block["basis"] == "preference" else "")
    return (["rank", "method", score] + [f"{name(doc.reward_name(k))} win %" for k in _columns(block)]
            + [f"Δ {name(doc.reward_name(k))} vs base [95% CI]" for k in block["constraints"]])


def _constraint_cell(e: dict[str, Any], key: str) -> str:
    c = e["constraints"].get(key)
    if c is None:
        return "—"
    return ci(c["gain"], c["ci_low"], c["ci_high"]) + (f" {BELOW}" if c["below_base"] else "") + \
        report_rows.mark(e["relations"].get(key))


def ranking_cells(block: dict[str, Any], e: dict[str, Any], rank: int, label: str) -> list[str]:
    """One entry of a ranking table (``label`` escaped by the caller)."""
    on = block["ranked_on"]
    if e["method"] == "base":
        score = "50 (base)"
    elif e["score"] is None:
        score = "—"
    else:
        score = ci(e["score"], e["score_ci_low"], e["score_ci_high"], pct) if e["score_ci_low"] is not None \
            else pct(e["score"])
        if len(on) == 1:
            score += (f" {SIG}" if e["significant"].get(on[0]) else "") + report_rows.mark(e["relations"].get(on[0]))
    per_reward = [("—" if e["win_rates"].get(k) is None else pct(e["win_rates"][k]))
                  + report_rows.mark(e["relations"].get(k)) for k in _columns(block)]
    return [str(rank), label, score] + per_reward + [_constraint_cell(e, k) for k in block["constraints"]]


def ranking_legend(doc: Document, block: dict[str, Any]) -> str:
    """The notes under one ranking table: its marks, and the faithfulness flag where one is raised."""
    shown = block["constraints"] + (block["ranked_on"] if len(block["ranked_on"]) == 1 else _columns(block))
    relations = [e["relations"].get(k) for e in block["entries"] for k in shown]
    parts = [table_legend(doc, relations)]
    if any(c["below_base"] for e in block["entries"] for c in e["constraints"].values()):
        parts.append(f"{BELOW} = the change's 95% CI lies entirely below 0: the run is less faithful than base")
    return "; ".join(p for p in parts if p)


# -- training replicates ------------------------------------------------------------------------------------------


def replicate_tables(doc: Document, suite: str) -> list[dict[str, Any]]:
    """Per (reward version) of a suite with an arm of K > 1: {"reward", "reward_version", "seeds": [train
    seeds, the columns], "rows": [(arm row, [cells after the method])]}: each replicate's win rate, their SD, the
    pooled win rate with its two-level CI and its prompt-only CI."""
    seed_of = {r["run_id"]: r["train_seed"] for r in doc.replicate_rows}
    out = []
    for (s, reward, version), table in report_rows.tables(doc.rows).items():
        arms = [r for r in table if s == suite and r["n_replicates"] > 1]
        if not arms:
            continue
        seeds = sorted({seed_of[rid] for r in arms for rid in r["run_ids"]})
        rows = []
        for r in arms:
            rates = dict(zip((seed_of[rid] for rid in r["run_ids"]), r["replicate_win_rates"]))
            rows.append((r, [pct(rates[sd]) if sd in rates else "—" for sd in seeds]
                         + [pct(r["replicate_sd"]), ci(r["win_rate"], r["ci_low"], r["ci_high"], pct),
                            "—" if r["prompt_ci_low"] is None else f"[{pct(r['prompt_ci_low'])}, "
                                                                   f"{pct(r['prompt_ci_high'])}]"]))
        out.append({"reward": reward, "reward_version": version, "seeds": seeds, "rows": rows})
    return out


def replicate_header(seeds: list[int]) -> list[str]:
    return (["method"] + [f"train seed {s} win %" for s in seeds]
            + ["SD (% points)", "pooled win % [two-level 95% CI]", "prompt-only 95% CI"])


REPLICATE_NOTE = ("Each training replicate's win rate against base (runs that differ only in their training seed), "
                  "their standard deviation, and the arm's pooled win rate with its two-level 95% CI (it resamples "
                  "the training replicates and, shared by them, the prompts, so it covers another training run as "
                  "well as other prompts) beside the prompt-only one (it resamples prompts only, so it does not "
                  "cover another training run).")


def title_note(doc: Document, reward: str, version: str) -> str:
    """What follows a results table's title: the reward's role where the store records one, the direction of a
    lower-is-better reward; else nothing."""
    role = f" · {doc.roles[reward]}" if reward in doc.roles else ""
    return role + (LOWER if doc.lower_is_better(reward, version) else "")


def _base_note(doc: Document, name: Escape) -> str | None:
    """Which base each method is paired with, where the runs record their sampler settings."""
    paired: dict[str, list[str]] = {}
    for r in doc.rows:
        if r["method"] != "base" and r["base_run_id"] is not None:
            methods = paired.setdefault(r["base_run_id"], [])
            if doc.labels[r["run_id"]] not in methods:
                methods.append(doc.labels[r["run_id"]])
    known = {b: ms for b, ms in paired.items() if doc.settings.get(b)}
    if not known:
        return None
    return ("Matched controls: each method is paired with the base run of its model drawn under the same sampler "
            "settings (guidance scale, sampler, steps, precision): "
            + "; ".join(f"{name(doc.labels.get(b, b))} at {name(doc.settings[b])} for {', '.join(map(name, ms))}"
                        for b, ms in sorted(known.items())) + ".")


def _relation_note(doc: Document, name: Escape) -> str | None:
    """The marks, each with the runs and rewards it stands for and why."""
    if not doc.marked:
        return None
    arm_label = {rid: doc.labels[r["run_id"]] for r in doc.rows for rid in r["run_ids"]}
    items: dict[tuple[str, str, str], list[str]] = {}
    for rel in doc.relations:
        if rel["run_id"] in arm_label and any(r["reward"] == rel["reward"] for r in doc.rows):
            key = (rel["relation"], rel["reward"], rel["reason"] or "")
            label = arm_label[rel["run_id"]]
            if label not in items.setdefault(key, []):
                items[key].append(label)
    lines = [f"{report_rows.MARKS[rel]} {', '.join(map(name, labels))} on {name(reward)}"
             + (f" ({name(why)})" if why else "") for (rel, reward, why), labels in sorted(items.items())]
    return ("Held-out rewards: a win rate on a reward a run is not held out from is no independent measurement; "
            f"{marks_legend(doc)}." + (" " + "; ".join(lines) + "." if lines else ""))


def _lowers(doc: Document, name: Escape) -> str:
    return ", ".join(name(r) for r in doc.lower_rewards)


def better(doc: Document, name: Escape) -> str:
    """How a score beats base's: "higher", naming the rewards where lower is better."""
    return f"better (higher; lower for {_lowers(doc, name)})" if doc.lower_rewards else "higher"


def win_rate_intro(doc: Document, name: Escape) -> str:
    """The first sentence of a report, up to its significance marker."""
    covers = ("over training seeds and prompts for a method with several training replicates (two-level), over "
              "prompts only otherwise (not another training run)" if doc.has_replicates
              else "over prompts (they do not cover another training run)")
    marks = f"{marks_legend(doc)}; " if doc.marked else ""
    return (f"Win rate: share of (prompt, seed) pairs where the method's image scores {better(doc, name)} than "
            f"base's drawn under the same sampler settings (ties ½); intervals are 95% bootstrap CIs {covers}; "
            f"{marks}")


def _direction_notes(doc: Document, name: Escape) -> tuple[str, str, str]:
    """The parts of the notes that change when some reward is lower-is-better."""
    if not doc.lower_rewards:
        return ("higher is better for every reward", "a higher score", "score minus base's score")
    lowers = _lowers(doc, name)
    return (f"higher is better, except for {lowers}, where lower is better", f"a {better(doc, name)} score",
            f"score minus base's score, which a win lowers for {lowers}")


def statistics_notes(doc: Document, name: Escape = str) -> list[str]:
    """The plain-language notes on the statistics, shared by the Markdown and HTML reports."""
    m = doc.n_comparisons
    n_tables = len({(r["suite"], r["reward"], r["reward_version"]) for r in doc.rows if r["p_value"] is not None})
    bonferroni = ALPHA / m if m else None
    survive = sum(r["p_value"] is not None and r["p_value"] < bonferroni for r in doc.rows) if m else 0
    b = doc.provenance["bootstrap"]
    mean_dir, win_dir, delta = _direction_notes(doc, name)
    notes = [
        f"Mean: the mean score of all scored images of a run; {mean_dir}.",
        "Win rate: each method image is paired with the base image of the same prompt and seed (the same "
        f"initial noise); {win_dir} is a win (1), an equal one a tie (½).",
        f"Intervals: {b['interval']} bootstrap, resampling whole prompts ({b['n_boot']} resamples, "
        f"seed {b['seed']}), because the images of one prompt are correlated. A run's interval covers prompts "
        "only: another training run of the method could land elsewhere.",
        "p: two-sided exact sign test over prompts (a prompt's outcome is the mean win over its seeds; ties are "
        f"dropped). {SIG} marks p < {ALPHA} after the Holm adjustment across the methods of one table "
        "(suite × reward × version).",
        f"Multiple comparisons: this report makes {m} comparisons with base in {n_tables} tables. Holm controls "
        "the error rate within each table only; read across all tables, about 5% of true null comparisons "
        "would still come out significant by chance. "
        + (f"Bonferroni over all {m} (p < {bonferroni:.3g}) leaves {survive} significant." if m else ""),
        "Per-category intervals are descriptive: they are not adjusted for the number of categories.",
        "Ranking: on the win rate against base on the gold reward where a suite has one, else on the mean win rate "
        "over the preference rewards a run is held out from; base at 50%; a run whose 95% CI lies above (below) "
        "50% always ranks above (below) base. Faithfulness rewards are a constraint beside the rank: the change "
        "of their mean against base with a 95% CI, ⚠ where it lies entirely below 0.",
        f"Image grids: {len(doc.grids)} (prompt, seed) pairs, each with its scores. The fixed prompts are chosen "
        "by md5(prompt_id), the categories taking turns, so every report shows the same ones; the others are the "
        f"largest wins and losses against base per reward ({delta}).",
    ]
    if doc.has_replicates:
        notes.insert(3, "Training replicates: runs that differ only in their training seed are one arm, shown as one "
                        "row pooling all of their pairs and images. Its intervals are two-level: each resample draws "
                        "the replicates with replacement and one set of prompts with replacement that the drawn "
                        "replicates share (they share prompts, seeds and initial noise), so they cover another "
                        "training run as well as other prompts. The replicate tables show each replicate's win rate "
                        "and, beside the two-level interval, the prompt-only one, which does not cover another "
                        "training run. The p of such an arm is the sign test over prompts of its pooled wins: it does "
                        "not cover training seeds; read the two-level interval for that.")
        notes[notes.index("Per-category intervals are descriptive: they are not adjusted for the number of "
                          "categories.")] = ("Per-category intervals are descriptive: they are not adjusted for the "
                                             "number of categories, and resample prompts only (an arm's replicates "
                                             "pooled).")
    notes += [n for n in (_base_note(doc, name), _relation_note(doc, name)) if n]
    if doc.missing_images:
        notes.append(f"{doc.missing_images} grid image(s) could not be shown (never generated, or the file is gone "
                     "from the results folder) and appear as a grey cross.")
    notes += damaged_notes(doc.grids, name)  # image files not the bytes of their stored sha256
    return notes


def provenance_facts(prov: dict, replicates: bool = False) -> list[tuple[str, str]]:
    """The footer's (label, plain text) lines, for every format to escape and lay out its own way; ``replicates``:
    whether some arm shown has several training replicates."""
    b = prov["bootstrap"]
    two_level = f"; {b['replicates']}" if replicates else ""
    return [("n", "paired (prompt, seed) comparisons with base; for base, its scored images"),
            ("intervals", f"{b['interval']} cluster bootstrap over prompts, {b['n_boot']} resamples, seed {b['seed']}"
                          + two_level),
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
