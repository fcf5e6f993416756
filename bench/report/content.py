"""What the md and html reports both say, as plain text: table headers and cells, the notes on the
statistics, the provenance lines. Each renderer escapes and lays it out its own way.

Functions that put user data (reward names) into a sentence take ``name``, the renderer's escaping
for it, and return text that is otherwise safe in both formats.
"""

from __future__ import annotations

from typing import Any, Callable

from bench.report import charts
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
    if doc.curves:
        notes.append("Intermediate checkpoints (bench run --eval-every) are runs of their own, drawn on a subset of "
                     "the prompts: they are left out of every table, ranking, grid, cost and histogram, and shown "
                     "only as the points of the training dynamics curves.")
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


# -- over-optimisation curves -------------------------------------------------------------------------------------

CURVES_TITLE = "Training dynamics: reward over training steps"
CURVES_NOTE = ("Win rate against base at the intermediate checkpoints of a training run (bench run --eval-every), "
               "drawn on a fixed subset of the suite's prompts with every seed; the last point is the final run on "
               "the same prompts, at its last training step. Bands and brackets: 95% bootstrap CIs over prompts. "
               "Solid lines: held-out rewards; dashed: proxies (rewards the run was trained on, †, or that were "
               "learned from the preference data it trained on, ‡). A run is flagged where a proxy's win rate rises "
               "from the first point to the last while a held-out reward's (gold first) falls by more than the "
               "95% CI half-width of its last point: optimising the proxy at the expense of what it stands for.")


def _reward_text(doc: Document, reward: dict[str, Any], name: Escape) -> str:
    what = f"proxy: {reward['relation']}" if reward["relation"] else f"{reward['role']}, held out"
    return f"{name(doc.reward_name(reward['reward'] + ' (' + reward['reward_version'] + ')'))} ({what})"


def flag_text(doc: Document, flag: dict[str, Any], name: Escape = str) -> str:
    """One sentence on a final run's curves: flagged or not, with the numbers it rests on."""
    label = name(doc.run_label(flag["final_run_id"]))
    proxy, held = flag["proxy"], flag["held_out"]
    steps = f"from step {flag['first_step']} to step {flag['last_step']}"
    if proxy is None or held is None:
        which = held or proxy
        lacking = "proxy" if proxy is None else "held-out"
        return (f"{label}: nothing to flag, no {lacking} reward among its curves; {_reward_text(doc, which, name)} "
                f"{pct(which['first'])}% → {pct(which['last'])}% {steps}.")
    proxy_part = f"{_reward_text(doc, proxy, name)} {pct(proxy['first'])}% → {pct(proxy['last'])}%"
    held_part = (f"{_reward_text(doc, held, name)} {pct(held['first'])}% → {pct(held['last'])}% (its last point's "
                 f"95% CI half-width: {pct(held['half_width'])} points)")
    if flag["flagged"]:
        return (f"⚠ {label}: proxy rises while held-out falls. {steps[0].upper() + steps[1:]}, {proxy_part}, while "
                f"{held_part}.")
    return f"{label}: no proxy rising while a held-out reward falls {steps}: {proxy_part}; {held_part}."


def curve_tables(doc: Document, suite: str, name: Escape = str) -> list[dict[str, Any]]:
    """Per final run of a suite with curves: {"final_run_id", "header": ["step", reward names...], "rows": [[step,
    "win % [95% CI]" per reward]]}, reward names escaped by ``name``."""
    out = []
    for final in dict.fromkeys(p["final_run_id"] for p in doc.curves if p["suite"] == suite):
        mine = [p for p in doc.curves if p["suite"] == suite and p["final_run_id"] == final]
        rewards = list(dict.fromkeys((p["reward"], p["reward_version"]) for p in mine))
        at = {(p["step"], p["reward"], p["reward_version"]): p for p in mine}
        relation = {(p["reward"], p["reward_version"]): p["reward_relation"] for p in mine}
        header = ["step"] + [f"{name(doc.reward_name(f'{r} ({v})'))}{report_rows.mark(relation[(r, v)])} win % [95% CI]"
                             for r, v in rewards]
        rows = []
        for step in sorted({p["step"] for p in mine}):
            final_point = any(at.get((step, r, v), {}).get("run_id") == final for r, v in rewards)
            cells = [f"{step} (final)" if final_point else str(step)]
            for r, v in rewards:
                p = at.get((step, r, v))
                cells.append("—" if p is None else ci(p["win_rate"], p["ci_low"], p["ci_high"], pct))
            rows.append(cells)
        out.append({"final_run_id": final, "header": header, "rows": rows})
    return out


# -- diversity ----------------------------------------------------------------------------------------------------

DIVERSITY_TITLE = "Diversity across seeds"
DIVERSITY_HEADER = ("method", "prompts", "mean pairwise distance", "base", "Δ vs base [95% CI]", "Vendi", "base",
                    "Δ vs base [95% CI]")
NO_EMBEDDINGS = (f"{DIVERSITY_TITLE}: no image embeddings are stored for this suite, so how varied a method's "
                 "images of one prompt are is not measured.")


def diversity_note(space: str, version: str) -> str:
    return (f"How varied a run's images of one prompt are across its seeds, in the {space} ({version}) embedding "
            "space: per prompt, the mean pairwise cosine distance and the Vendi score (the effective number of "
            "distinct images) over its seeds, averaged over the prompts; Δ is the paired difference with base over "
            "the prompts both have, with a 95% bootstrap CI over prompts. Higher is more diverse.")


FAITHFUL_NOTE = ("Faithful samples only: the images whose fidelity score is at least 0.5 (the prompt's shape and "
                 "colour are recognised); a prompt counts with two such images or more. A method can look diverse "
                 "by drawing the wrong thing; this asks whether it stays diverse among images that show the prompt.")


def diversity_tables(doc: Document, suite: str, name: Escape = str) -> list[dict[str, Any]]:
    """Per (space, version, subset) of a suite: {"space", "space_version", "subset", "rows": [[cells] per run]}:
    DIVERSITY_HEADER, run names escaped by ``name``."""
    out: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in doc.diversity:
        if r["suite"] == suite:
            out.setdefault((r["space"], r["space_version"], r["subset"]), {}).setdefault(r["run_id"], {})[
                r["metric"]] = r
    tables = []
    for (space, version, subset), by_run in out.items():
        rows = []
        for run_id, metrics in sorted(by_run.items(), key=lambda kv: (kv[1]["vendi"]["method"] != "base",
                                                                      doc.run_label(kv[0]))):
            cells = [name(doc.run_label(run_id)), str(metrics["vendi"]["n_prompts"])]
            for m in ("mean_pairwise_distance", "vendi"):
                r = metrics[m]
                cells += [g(r["mean"]), g(r["base_mean"]), "—" if r["diff"] is None else
                          f"{r['diff']:+.3g} [{r['diff_ci_low']:+.3g}, {r['diff_ci_high']:+.3g}]"]
            rows.append(cells)
        tables.append({"space": space, "space_version": version, "subset": subset, "rows": rows})
    return tables


# -- training curves ----------------------------------------------------------------------------------------------

TRAINING_TITLE = "Training curves"
TRAINING_NOTE = ("Training metrics as logged (train_log), one chart per method family, one line per run: the loss, "
                 "the implicit accuracy (the share of pairs whose implicit reward ranks the winner first) and the "
                 "winner's and loser's denoising error relative to the reference model (policy − reference: below 0 "
                 "the policy denoises that image better than the model it started from). Diffusion-DPO can lower "
                 "its loss while the winner's error rises; SDPO's safeguard is meant to keep it from rising, so "
                 "their rel_err_w lines share the axes. An older log has only the absolute errors, shown instead. "
                 "Long logs are averaged over bins of steps.")


# -- compute-matched frontier -------------------------------------------------------------------------------------

FRONTIER_TITLE = "Compute-matched frontier"
FRONTIER_HEADER = ("method", "train s", "sample s", "images", "cost s / image", "win % vs base [95% CI]",
                   "beats best_of_n of ≤ cost")


def frontier_label(doc: Document, point: dict[str, Any]) -> str:
    """``best_of_n N=4`` for a best_of_n point; the run's name otherwise."""
    return charts.frontier_label(point, doc.names)


def frontier_note(doc: Document, block: dict[str, Any], name: Escape = str) -> str:
    reward = name(doc.reward_name(f"{block['reward']} ({block['reward_version']})"))
    on = "the gold reward" if block["basis"] == "gold" else "the preference reward most runs are held out from"
    return (f"What each run's win rate against base on {reward} ({on}) cost: cost per image = train s / "
            f"{block['amortise']:,} (training amortised over {block['amortise']:,} images) + sample s / images "
            "(best_of_n's sampling includes its N candidates and their verifier scores). One point per run; "
            "best_of_n runs, the compute-matched baseline, are joined in order of N. A method beats the frontier "
            "where its 95% CI lies above the win rate of every best_of_n point costing as much or less.")


def frontier_text(doc: Document, block: dict[str, Any], name: Escape = str) -> str:
    """The sentence under a frontier: which methods beat every best_of_n point of lower or equal cost."""
    reward = name(doc.reward_name(f"{block['reward']} ({block['reward_version']})"))
    points = {p["run_id"]: p for p in block["points"]}
    unplaced = [name(frontier_label(doc, p)) for p in block["points"] if p["cost_s"] is None]
    tail = (f" Not placed (sampling not timed): {', '.join(unplaced)}." if unplaced else "")
    if not block["best_of_n"]:
        return f"No best_of_n run with a cost in this suite: nothing to match compute against.{tail}"
    parts = []
    if block["beats"]:
        beaters = []
        for b in block["beats"]:
            p = points[b["run_id"]]
            beaters.append(f"{name(frontier_label(doc, p))} ({g(p['cost_s'])} s/image, win rate "
                           f"{ci(p['win_rate'], p['ci_low'], p['ci_high'], pct)}%)")
        parts.append(f"On {reward}, {', '.join(beaters)} beat{'s' if len(beaters) == 1 else ''} every best_of_n "
                     "point of lower or equal cost: the 95% CI lies above each such point's win rate.")
    else:
        parts.append(f"On {reward}, no method beats every best_of_n point of lower or equal cost with its 95% CI "
                     "above that point's win rate.")
    if block["cheapest"]:
        cheap = ", ".join(name(frontier_label(doc, points[r])) for r in block["cheapest"])
        parts.append(f"Cheaper than every best_of_n point, so not compared: {cheap}.")
    return " ".join(parts) + tail


def frontier_cells(doc: Document, block: dict[str, Any], p: dict[str, Any], name: Escape = str) -> list[str]:
    """One row of a frontier table (FRONTIER_HEADER), the run's name escaped by ``name``."""
    beaten = {b["run_id"] for b in block["beats"]}
    if p["best_of_n"] or p["method"] == "base" or p["run_id"] in block["cheapest"] or not block["best_of_n"] \
            or p["cost_s"] is None or p["ci_low"] is None:
        verdict = "—"
    else:
        verdict = "yes" if p["run_id"] in beaten else "no"
    rate = "50 (base)" if p["method"] == "base" else ci(p["win_rate"], p["ci_low"], p["ci_high"], pct)
    return [name(frontier_label(doc, p)), g(p["train_s"]), g(p["sample_s"]), str(p["n_images"] or 0), g(p["cost_s"]),
            rate, verdict]


# -- published numbers --------------------------------------------------------------------------------------------

PAPERS_TITLE = "Published results beside ours"
PAPERS_HEADER = ("paper", "table", "checkpoint", "suite", "reward", "statistic", "paper value", "ours [95% CI]",
                 "paper value in our CI?")
PAPERS_NOTE = ("Numbers the papers of catalogued checkpoints report (bench/checkpoints.py PAPER_NUMBERS, each read "
               "at its source), beside ours for the run that sampled those published weights: a win rate against "
               "base beside ours and its 95% CI, a mean beside our mean and its CI, ours on the paper's scale. "
               "\"within CI\" where the paper's value lies in our interval, else \"differs\"; protocols can differ "
               "(sampler, prompts, reward version), so a difference is a lead, not a verdict.")


def paper_cells(doc: Document, e: dict[str, Any], name: Escape = str) -> list[str]:
    """One row of the table of compared numbers (PAPERS_HEADER), its words escaped by ``name``."""
    scale = e["scale"]
    if e["ours"] is None:
        ours = "—"
    elif e["ci_low"] is None:
        ours = f"{g(e['ours'] * scale)} (no interval)"
    else:
        ours = ci(e["ours"] * scale, e["ci_low"] * scale, e["ci_high"] * scale)
    reward = e["reward"] if e["reward_version"] is None else doc.reward_name(f"{e['reward']} ({e['reward_version']})")
    who = doc.run_label(e["run_id"]) if e["run_id"] in doc.names else e["checkpoint"]
    return [name(e["paper"]), name(e["table"]), f"{name(e['checkpoint'])} ({name(who)})", name(e["suite"]),
            name(reward), name(e["statistic"]), g(e["paper_value"]), ours, e["verdict"] or "—"]


def paper_reference(e: dict[str, Any]) -> str:
    """A number listed without ours, in words: reference only, or not measured in this store."""
    what = (f"{e['paper']}, {e['table']}: {e['checkpoint']} on {e['suite']}, {e['reward']}, {e['statistic']} "
            f"{g(e['paper_value'])}")
    if e["status"] == "reference only":
        why = ("a human judgement" if e["reward"].startswith("human:") else
               "a statistic the harness does not compute" if e["statistic"] == "preference_accuracy" else
               "not measurable here")
        return f"{what}: reference only ({why}; protocol: {e['protocol']})."
    return (f"{what}: not measured, the store holds no row of its checkpoint on suite {e['suite']} and reward "
            f"{e['reward']}.")
