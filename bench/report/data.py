"""Everything the report reads from the store: each SQL query once, returning frames or plain dicts.

The heavy one is ``per_prompt``: one scan of the scores aggregating per (run, suite, reward version,
prompt) the sums, counts and ranges of the scores and of the paired wins against base (the store's
``pairs`` view). Those per-prompt sums are all a cluster bootstrap needs, so the layers above work
on one row per prompt, never per image; the same table feeds the rows, the category breakdowns and
the choice of the largest wins and losses. A store with 10^6 scores reports in a few seconds.

Which way a reward is better comes from the store too: the ``rewards`` table, and the ``pairs``
view, whose ``win`` already counts in that direction. So do the training replicates (``replicates``:
runs sharing an arm), the rewards a run is not held out from (``run_rewards``) and what each reward
measures (``reward_roles``); a store written before those tables reads them as empty.

The runs of intermediate checkpoints (``checkpoint_steps``, ``bench run --eval-every``) are left out of
``per_prompt``, so of every table built on it; ``checkpoint_pairs`` reads their pairs for the
over-optimisation curves. ``embeddings`` (with each image's fidelity score) feeds the diversity tables,
``train_log`` the training curves (averaged in SQL), ``config_facts`` what the curves, the frontier and
the published numbers read of a run's config.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, NamedTuple

import pandas as pd

from bench.store import Store

# gain: the score minus base's in the reward's direction (positive is better than base).
# best / worst: the pair with the largest (smallest) gain, the smallest seed on ties.
PER_PROMPT_SQL = """
WITH agg AS (
    SELECT i.run_id, i.suite, s.reward, s.reward_version, i.prompt_id,
           count(*) AS n_images, sum(s.value) AS value_sum, min(s.value) AS value_min, max(s.value) AS value_max,
           count(p.win) AS n_pairs, coalesce(sum(p.win), 0) AS win_sum, min(p.win) AS win_min, max(p.win) AS win_max,
           coalesce(sum(p.gain), 0) AS gain_sum,
           max({'d': p.gain, 's': -p.seed}) FILTER (WHERE p.win IS NOT NULL) AS best,
           min({'d': p.gain, 's': p.seed}) FILTER (WHERE p.win IS NOT NULL) AS worst
    FROM images i JOIN scores s ON s.image_id = i.image_id
    LEFT JOIN (SELECT *, CASE WHEN higher_is_better THEN value - base_value ELSE base_value - value END AS gain
               FROM pairs WHERE isfinite(value) AND isfinite(base_value)) p
        ON p.image_id = i.image_id AND p.reward = s.reward AND p.reward_version = s.reward_version
    WHERE ($suites IS NULL OR list_contains($suites, i.suite)) AND isfinite(s.value)
      AND i.run_id IN (SELECT run_id FROM runs)
      AND i.run_id NOT IN (SELECT run_id FROM checkpoint_steps)
    GROUP BY ALL
)
SELECT * EXCLUDE (best, worst), best.d AS best_gain, -best.s AS best_seed, worst.d AS worst_gain,
       worst.s AS worst_seed
FROM agg ORDER BY run_id, suite, reward, reward_version, prompt_id
"""
GROUP_KEYS = ["run_id", "suite", "reward", "reward_version"]
_RUNS_SQL = """
SELECT r.run_id, r.method, r.model, r.config_hash, r.artifact_hash, r.status, r.train_s, r.sample_s, r.score_s,
       CASE WHEN r.method <> 'base' THEN br.base_run_id END AS base_run_id,
       coalesce(rep.arm, r.run_id) AS arm, rep.train_seed, r.config_json
FROM runs r LEFT JOIN base_runs br ON br.model = r.model AND br.sampler_key = r.sampler_key
LEFT JOIN replicates rep ON rep.run_id = r.run_id
"""
_PROVENANCE_SQL = ("SELECT run_id, method, model, model_revision, sampler_key, config_hash, artifact_hash, git_sha, "
                   "status, versions_json FROM runs ORDER BY run_id")
_HIST_SQL = """
WITH v AS (
    SELECT i.suite, i.run_id, s.reward, s.reward_version, s.value
    FROM images i JOIN scores s ON s.image_id = i.image_id
    WHERE list_contains($runs, i.run_id) AND list_contains($suites, i.suite) AND isfinite(s.value)
), edges AS (
    SELECT suite, reward, reward_version, min(value) AS lo, max(value) AS hi FROM v GROUP BY ALL
)
SELECT v.suite, v.reward, v.reward_version, v.run_id, e.lo, e.hi,
       least($bins - 1, CASE WHEN e.hi > e.lo THEN floor((v.value - e.lo) / (e.hi - e.lo) * $bins) ELSE 0 END)::INT
           AS bin,
       count(*) AS n
FROM v JOIN edges e USING (suite, reward, reward_version)
GROUP BY ALL
"""
_FIXED_SQL = """
WITH firsts AS (
    SELECT i.prompt_id, min(i.seed) AS seed, any_value(p.category) AS category
    FROM images i LEFT JOIN prompts p ON p.suite = i.suite AND p.prompt_id = i.prompt_id
    WHERE i.run_id = $base AND i.suite = $suite
    GROUP BY i.prompt_id
)
SELECT prompt_id, seed, row_number() OVER (PARTITION BY category ORDER BY md5(prompt_id), prompt_id) AS turn
FROM firsts ORDER BY turn, md5(prompt_id), prompt_id LIMIT $k
"""
_CELLS_SQL = """
SELECT i.run_id, i.prompt_id, i.prompt, i.seed, i.path,
       CASE WHEN regexp_full_match(i.sha256, '[0-9a-fA-F]{64}') THEN i.sha256 END AS sha256,
       s.reward, s.reward_version, s.value
FROM images i LEFT JOIN scores s ON s.image_id = i.image_id AND isfinite(s.value)
WHERE i.suite = $suite AND list_contains($runs, i.run_id) AND list_contains($prompts, i.prompt_id)
"""
_SUITES = "($suites IS NULL OR list_contains($suites, i.suite))"
_NON_FINITE_SQL = f"""
SELECT i.suite, i.run_id, s.reward, s.reward_version, count(*) AS n
FROM scores s JOIN images i ON i.image_id = s.image_id
WHERE NOT isfinite(s.value) AND {_SUITES} GROUP BY ALL ORDER BY ALL
"""
_ORPHAN_SCORES_SQL = """
SELECT s.reward, s.reward_version, count(*) AS n FROM scores s ANTI JOIN images i ON i.image_id = s.image_id
GROUP BY ALL ORDER BY ALL
"""
_ORPHAN_IMAGES_SQL = f"""
SELECT i.suite, i.run_id, count(*) AS n FROM images i ANTI JOIN runs r ON r.run_id = i.run_id
WHERE {_SUITES} GROUP BY ALL ORDER BY ALL
"""
_BAD_TIMES_SQL = """
SELECT run_id, name FROM (UNPIVOT (SELECT run_id, train_s, sample_s, score_s FROM runs)
                          ON train_s, sample_s, score_s INTO NAME name VALUE seconds)
WHERE NOT isfinite(seconds) ORDER BY ALL
"""


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def anomalies(store: Store, suites: list[str] | None = None) -> list[str]:
    """Rows the report leaves out or shows as missing, as sentences naming them (the store refuses them
    on insertion, but SQL can write anything): non-finite scores, scores of unknown images, images of
    unknown runs, non-finite run times, JSON columns that hold no object. Names are user data, for the
    renderer to escape."""
    out = []
    for r in store.query_quietly(_NON_FINITE_SQL, {"suites": suites}).itertuples(index=False):
        out.append(f"{_n(r.n, 'non-finite score')} (NaN or infinite) of reward {r.reward} ({r.reward_version}) "
                   f"in run {r.run_id}, suite {r.suite}, {'was' if r.n == 1 else 'were'} left out")
    for r in store.query_quietly(_ORPHAN_SCORES_SQL).itertuples(index=False):
        out.append(f"{_n(r.n, 'score')} of reward {r.reward} ({r.reward_version}) of images that are not stored "
                   f"{'was' if r.n == 1 else 'were'} left out")
    for r in store.query_quietly(_ORPHAN_IMAGES_SQL, {"suites": suites}).itertuples(index=False):
        out.append(f"{_n(r.n, 'image')} of suite {r.suite} of run {r.run_id}, which is not in the runs table, "
                   f"{'was' if r.n == 1 else 'were'} left out")
    for r in store.query_quietly(_BAD_TIMES_SQL).itertuples(index=False):
        out.append(f"run {r.run_id} has a non-finite {r.name}; it shows as —")
    for r in store.query("SELECT run_id, versions_json FROM runs WHERE versions_json IS NOT NULL "
                         "ORDER BY run_id").itertuples(index=False):
        if _not_object(r.versions_json):
            out.append(f"run {r.run_id} has a versions_json that is not a JSON object; its library versions are "
                       "not shown")
    meta = store.query("SELECT suite, meta_json FROM prompts WHERE meta_json IS NOT NULL AND meta_json <> '' "
                       "AND ($suites IS NULL OR list_contains($suites, suite))", {"suites": suites})
    bad = Counter(suite for suite, m in zip(meta["suite"], meta["meta_json"]) if _not_object(m))
    for suite, n in sorted(bad.items()):
        out.append(f"{_n(int(n), 'prompt')} of suite {suite} {'has' if n == 1 else 'have'} a meta_json that is not "
                   "a JSON object; left out of the attribute tables")
    return out


def _not_object(text: str) -> bool:
    return text.strip() != "null" and json_object(text) is None


def json_object(text: Any) -> dict | None:
    """The dict a JSON column holds, or None where it holds NULL or anything else (``anomalies`` names it)."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:  # JSONDecodeError, or a number too large
        return None
    return value if isinstance(value, dict) else None


def _check_filter(store: Store, column: str, table: str, wanted: list[str] | None) -> None:
    """Fail early on a suite or method the store does not hold, naming those it does."""
    if wanted is None:
        return
    stored = sorted(store.query(f"SELECT DISTINCT {column} FROM {table}")[column])
    unknown = [w for w in wanted if w not in stored]
    if unknown:
        raise ValueError(f"no {column} {', '.join(map(repr, unknown))} in the store; "
                         f"stored: {', '.join(stored) or 'none'}")


def check_filters(store: Store, suites: list[str] | None, methods: list[str] | None) -> None:
    """Raise ValueError naming what is stored when a suite or method filter matches nothing."""
    _check_filter(store, "suite", "images", suites)
    _check_filter(store, "method", "runs", methods)


def per_prompt(store: Store, suites: list[str] | None = None) -> pd.DataFrame:
    """One row per (run, suite, reward version, prompt) with scored images; columns: GROUP_KEYS, prompt_id,
    n_images, value_sum, value_min, value_max, n_pairs, win_sum, win_min, win_max (win_* NaN without pairs),
    gain_sum (0 without pairs), best_gain, best_seed, worst_gain, worst_seed. Ordered by the keys, then
    prompt_id.

    The runs of intermediate checkpoints (``checkpoint_steps``) are left out: they are points of the
    over-optimisation curves (``checkpoint_pairs``), not results."""
    return store.query_quietly(PER_PROMPT_SQL, {"suites": suites})


_CHECKPOINT_PAIRS_SQL = """
SELECT run_id, suite, reward, reward_version, prompt_id, count(*) AS n_pairs, sum(win) AS win_sum,
       min(win) AS win_min, max(win) AS win_max
FROM pairs
WHERE run_id IN (SELECT run_id FROM checkpoint_steps) AND ($suites IS NULL OR list_contains($suites, suite))
GROUP BY ALL ORDER BY ALL
"""


def checkpoint_pairs(store: Store, suites: list[str] | None = None) -> pd.DataFrame:
    """Per (run, suite, reward version, prompt) of the intermediate checkpoints' runs: n_pairs, win_sum, win_min,
    win_max of their pairs with base (the columns of ``per_prompt`` the curves need). The filter on the run
    reaches into the ``pairs`` view, so this reads the checkpoints' scores only, not the store's."""
    return store.query_quietly(_CHECKPOINT_PAIRS_SQL, {"suites": suites})


def checkpoint_steps(store: Store) -> pd.DataFrame:
    """run_id, final_run_id, step of every intermediate checkpoint's run, by final run and step."""
    return store.query("SELECT run_id, final_run_id, step FROM checkpoint_steps ORDER BY final_run_id, step, run_id")


_EMBEDDINGS_SQL = """
WITH emb AS (
    SELECT e.image_id, i.run_id, i.suite, i.prompt_id, i.seed, e.space, e.space_version, e.vector
    FROM embeddings e JOIN images i ON i.image_id = e.image_id
    WHERE list_contains($runs, i.run_id) AND ($suites IS NULL OR list_contains($suites, i.suite))
), faith AS (
    SELECT s.image_id, arg_max(s.value, s.reward_version) AS fidelity
    FROM scores s SEMI JOIN (SELECT DISTINCT image_id FROM emb) USING (image_id)
    WHERE s.reward = $faithful_reward AND isfinite(s.value)
    GROUP BY s.image_id
)
SELECT run_id, suite, prompt_id, seed, space, space_version, vector AS embedding, f.fidelity
FROM emb LEFT JOIN faith f USING (image_id)
"""
FAITHFUL_REWARD = "fidelity"  # the tiny world's classifier: 1 where it finds the caption's shape and colour
_EMBEDDING_KEYS = ["suite", "space", "space_version", "run_id", "prompt_id", "seed"]


def embeddings(store: Store, run_ids: list[str], suites: list[str] | None = None,
               fidelity: bool = True) -> pd.DataFrame:
    """The stored image embeddings of these runs, ordered by suite, space, version, run, prompt and seed: run_id,
    suite, prompt_id, seed, space, space_version, embedding (a float32 vector) and fidelity (the image's
    ``FAITHFUL_REWARD`` score, its latest version; NaN where it has none, and everywhere with ``fidelity=False``,
    which skips looking for one: for a caller that knows no image has it)."""
    sql = _EMBEDDINGS_SQL if fidelity else _EMBEDDINGS_SQL.split("), faith AS")[0] + (
        ")\nSELECT run_id, suite, prompt_id, seed, space, space_version, vector AS embedding, "
        "NULL::DOUBLE AS fidelity FROM emb")
    frame = store.query_quietly(sql, {"runs": run_ids, "suites": suites,
                                      **({"faithful_reward": FAITHFUL_REWARD} if fidelity else {})})
    # sorted here, not in SQL: sorting rows that carry their vectors costs DuckDB more than numpy the keys
    return frame.sort_values(_EMBEDDING_KEYS, kind="stable", ignore_index=True)


_TRAIN_LOG_SQL = """
WITH t AS (
    SELECT r.artifact_hash, t.step, t.name, t.value
    FROM (SELECT DISTINCT artifact_hash FROM runs WHERE list_contains($runs, run_id)) r
    JOIN train_log t ON t.artifact_hash = r.artifact_hash
    WHERE list_contains($names, t.name) AND isfinite(t.value)
), w AS (
    SELECT artifact_hash, greatest(1, ceil(max(step) / $points))::BIGINT AS width FROM t GROUP BY artifact_hash
)
SELECT t.artifact_hash, t.name, w.width, avg(t.step) AS step, avg(t.value) AS value, count(*) AS n
FROM t JOIN w USING (artifact_hash)
GROUP BY t.artifact_hash, t.name, w.width, (t.step - 1) // w.width
ORDER BY t.artifact_hash, t.name, step
"""


def train_log(store: Store, run_ids: list[str], names: list[str], points: int) -> pd.DataFrame:
    """The training metrics ``names`` of these runs' artifacts, at most about ``points`` per curve: artifact_hash,
    name, width (steps averaged per point: 1 for a short log), step (the mean step of a point), value (the mean
    value), n (logged steps averaged). Averaged in SQL, so a long log costs one aggregate."""
    return store.query_quietly(_TRAIN_LOG_SQL, {"runs": run_ids, "names": names, "points": points})


def settings_text(config_json: Any) -> str | None:
    """The sampler settings a run draws under, from its config_json: 'guidance 8.5, ddim, 20 steps' (and the
    precision where it is not fp32); None where the config holds none of them (a run written by hand)."""
    config = json_object(config_json) or {}
    method_config, sampler = config.get("method_config"), config.get("sampler")
    guidance = method_config.get("guidance_scale") if isinstance(method_config, dict) else None
    sampler = sampler if isinstance(sampler, dict) else {}
    parts = [f"guidance {guidance:g}" if isinstance(guidance, (int, float)) and not isinstance(guidance, bool)
             else None, sampler.get("name") if isinstance(sampler.get("name"), str) else None,
             f"{sampler['steps']} steps" if isinstance(sampler.get("steps"), int) else None,
             config.get("precision") if isinstance(config.get("precision"), str) else None]
    return ", ".join(p for p in parts if p) or None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def config_facts(config_json: Any) -> dict[str, Any]:
    """What the report reads of a run's config_json beyond its sampler settings: steps (``method_config.steps``:
    the training steps of a trained run), n (``method_config.n``: best_of_n's candidates), published (the
    catalogue name of published weights, ``published_weights.checkpoint``), prompt_ids (the prompt subset an
    intermediate checkpoint's run draws). Each None where the config does not hold it as expected."""
    config = json_object(config_json) or {}
    method_config = config.get("method_config") if isinstance(config.get("method_config"), dict) else {}
    weights = config.get("published_weights") if isinstance(config.get("published_weights"), dict) else {}
    ids = config.get("prompt_ids")
    return {"steps": _int(method_config.get("steps")), "n": _int(method_config.get("n")),
            "published": weights.get("checkpoint") if isinstance(weights.get("checkpoint"), str) else None,
            "prompt_ids": [p for p in ids if isinstance(p, str)] if isinstance(ids, list) and ids else None}


def runs(store: Store) -> dict[str, dict[str, Any]]:
    """run_id -> {method, model, config_hash, artifact_hash, status, train_s, sample_s, score_s, base_run_id (None
    for base runs and runs without a base), arm (the run_id where the run is no replicate), train_seed (None
    there), settings (``settings_text``), base_settings (its base run's settings; None without a base), and the
    ``config_facts``: steps, n, published, prompt_ids}."""
    out = {r["run_id"]: r for r in store.query(_RUNS_SQL).to_dict("records")}
    for r in out.values():
        r["base_run_id"] = r["base_run_id"] if isinstance(r["base_run_id"], str) else None  # NaN -> None
        r["artifact_hash"] = r["artifact_hash"] if isinstance(r["artifact_hash"], str) else None
        r["train_seed"] = None if pd.isna(r["train_seed"]) else int(r["train_seed"])  # NULL reads as NaN or None
        config = r.pop("config_json")
        r["settings"] = settings_text(config)
        r.update(config_facts(config))
    for r in out.values():
        r["base_settings"] = out[r["base_run_id"]]["settings"] if r["base_run_id"] in out else None
    return out


def run_rewards(store: Store) -> dict[str, dict[str, tuple[str, str | None]]]:
    """run_id -> {reward: (relation, reason)}: the rewards a run is not held out from (``trained-on`` or
    ``same-data``); a run without rows is held out from every reward."""
    out: dict[str, dict[str, tuple[str, str | None]]] = {}
    for run_id, reward, relation, reason in store.query(
            "SELECT run_id, reward, relation, reason FROM run_rewards ORDER BY ALL").itertuples(index=False):
        out.setdefault(run_id, {})[reward] = (relation, reason if isinstance(reason, str) else None)
    return out


class Roles(dict):
    """reward -> role (``gold``, ``preference`` or ``faithfulness``). A reward without a row in
    ``reward_roles`` (a store written before roles were recorded) takes the role its registered class
    declares; an unknown one is a preference reward."""

    def __missing__(self, key: str) -> str:
        from bench.registry import REWARDS

        try:
            return REWARDS.get(key).role
        except (KeyError, ValueError):
            return "preference"


def reward_roles(store: Store) -> Roles:
    """What each reward measures, from the store's ``reward_roles`` table."""
    return Roles(store.query("SELECT reward, role FROM reward_roles").itertuples(index=False))


class Known(NamedTuple):
    """What several parts of a report read of the runs, read once: ``runs``, ``run_rewards``, ``reward_roles``."""
    runs: dict[str, dict[str, Any]]
    relations: dict[str, dict[str, tuple[str, str | None]]]
    roles: Roles


def known(store: Store) -> Known:
    return Known(runs(store), run_rewards(store), reward_roles(store))


def run_records(store: Store) -> list[dict[str, Any]]:
    """Every run's provenance columns, by run_id (NULLs as pandas gives them: None or NaN)."""
    return store.query(_PROVENANCE_SQL).to_dict("records")


class Directions(dict):
    """(reward, reward_version) -> higher_is_better; a reward without a row in ``rewards`` is higher-is-better,
    as the store's ``pairs`` view counts it."""

    def __missing__(self, key: tuple[str, str]) -> bool:
        return True


def directions(store: Store) -> Directions:
    """Which way each reward version is better, from the store's ``rewards`` table."""
    frame = store.query("SELECT reward, reward_version, higher_is_better FROM rewards")
    return Directions({(r, v): bool(h) for r, v, h in frame.itertuples(index=False)})


def image_counts(store: Store, run_ids: list[str]) -> dict[str, int]:
    """run_id -> its number of stored images (all suites)."""
    counts = store.query_quietly("SELECT run_id, count(*) AS n FROM images WHERE list_contains($runs, run_id) "
                                 "GROUP BY run_id", {"runs": run_ids})
    return dict(zip(counts["run_id"], counts["n"].astype(int)))


def histogram_counts(store: Store, run_ids: list[str], suites: list[str], bins: int) -> pd.DataFrame:
    """Per (suite, reward, reward_version, run_id, bin): n, with the (lo, hi) score range the bins share."""
    return store.query_quietly(_HIST_SQL, {"runs": run_ids, "suites": suites, "bins": bins})


def prompt_meta(store: Store, suites: list[str]) -> pd.DataFrame:
    """suite, prompt_id, category, meta_json of the prompts of these suites."""
    return store.query("SELECT suite, prompt_id, category, meta_json FROM prompts WHERE list_contains($s, suite)",
                       {"s": suites})


def fixed_prompts(store: Store, base: str, suite: str, k: int) -> pd.DataFrame:
    """prompt_id, seed of the first ``k`` prompts of a base run by md5(prompt_id), categories taking turns,
    each with its smallest seed."""
    return store.query_quietly(_FIXED_SQL, {"base": base, "suite": suite, "k": k})


def grid_images(store: Store, suite: str, run_ids: list[str], prompt_ids: list[str]) -> pd.DataFrame:
    """The images of these runs and prompts with their scores (one row per image and score; NULL reward
    for an unscored image)."""
    return store.query_quietly(_CELLS_SQL, {"suite": suite, "runs": run_ids, "prompts": prompt_ids})


def prompt_texts(store: Store, suite: str, prompt_ids: list[str]) -> pd.DataFrame:
    """prompt_id, prompt, category of these prompts of a suite."""
    return store.query("SELECT prompt_id, prompt, category FROM prompts WHERE suite = $suite "
                       "AND list_contains($prompts, prompt_id)", {"suite": suite, "prompts": prompt_ids})
