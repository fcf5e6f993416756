"""The results store: one DuckDB file, append-only and keyed. Query it with any SQL client.

Every write of the project goes through :class:`Store`. Rows are keyed, so re-running anything
adds nothing; changing how a reward is computed bumps its version and adds new rows beside the
old ones. Each operation opens and closes its own connection, so another process (a notebook,
``duckdb results/bench.duckdb``) can read between writes; DuckDB allows one writer at a time and
a connection that finds the file locked retries for ``lock_timeout_s`` before giving up.

Schema (times are UTC, durations in seconds; ``path`` is relative to the folder of the db file):

``runs``: one row per (method, config) run.
    run_id PK, method, model, model_revision, config_json, config_hash, artifact_hash (the trained
    weights this run samples with), sampler_key (model revision, sampler, steps, guidance scale,
    precision: a method run is compared with the ``base`` run of the same model and sampler_key, drawn
    under the same sampler settings), status (running | done |
    failed), error, versions_json (library versions), git_sha, created_at, finished_at, train_s,
    sample_s, score_s (time spent on work actually done, summed over resumptions).
``prompts``: (suite, prompt_id) PK, prompt, category, meta_json.
``images``: image_id PK (a hash of run_id, suite, prompt_id, seed), run_id, suite, prompt_id,
    prompt, seed, path, sha256, width, height, created_at.
``scores``: (image_id, reward, reward_version) PK, value, created_at (better per ``rewards``).
``train_log``: (artifact_hash, step, name) PK, method, value: per-step training metrics.
``rewards``: (reward, reward_version) PK, higher_is_better: which way each scored reward wins (a reward
    without a row counts as higher-is-better).
``run_suites``: (run_id, suite) PK, suite_sha256: the content of the prompt suite a run sampled.
``replicates``: run_id PK, arm, train_seed: a trained run's training seed; runs that differ only in it
    share an ``arm`` (``bench run --train-seeds 0-2`` trains three replicates of each arm). A run
    without a row (base, any method that trains nothing) is its own arm.
``run_rewards``: (run_id, reward) PK, relation, reason: rewards a run is not held out from. relation
    is ``trained-on`` (the run optimised it directly: tailorpo's in-loop reward) or ``same-data`` (it
    was learned from the preference labels the run trained on: tiny-pickscore for pair methods on
    tiny-pickapic, PickScore for Pick-a-Pic).
``checkpoint_steps``: run_id PK, final_run_id, step: a run drawn with an intermediate checkpoint of
    ``final_run_id``'s training (``bench run --eval-every N``), on a fixed subset of the suite's prompts:
    the points of the report's over-optimisation curves.
``embeddings``: (image_id, space, space_version) PK, vector (FLOAT[]): an image's embedding in a
    reward model's feature space (the tiny world's fidelity features; CLIP ViT-L/14's image embedding),
    for the report's diversity across a prompt's seeds.
``reward_roles``: reward PK, role, learned_from: what a reward measures: ``gold`` (the truth the
    preference labels are drawn from: the tiny world's oracle), ``preference`` (a learned stand-in for
    human preference) or ``faithfulness`` (does the image show the prompt: fidelity, CLIP score);
    learned_from names the preference data a learned reward was trained on.

Views:

``base_runs(model, sampler_key, base_run_id)``: the base run each method run is compared with.
    Should several base runs share a model and sampler_key, the one chosen is a done run before
    others, then the earliest created, then the smallest run_id.
``pairs``: one row per method image and reward version that has a base counterpart scored with
    the same reward version on the same (suite, prompt_id, seed): suite, model, method, run_id,
    base_run_id, image_id, base_image_id, prompt_id, seed, reward, reward_version, value,
    base_value, higher_is_better, win (1 better than base in the reward's direction, 0.5 equal, 0 worse).
    A non-finite score (refused at insertion, but a user's own SQL may add one) pairs with nothing.
    All stored images count, whatever the status
    of their run: images are immutable, a failed run's finished images are as good as any.
``winrates(suite, model, method, reward, n, win_rate, run_id, reward_version)``: ``pairs``
    averaged per (suite, run, reward version); n is the number of pairs.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import numpy as np
import pandas as pd

TABLES = ("runs", "prompts", "images", "scores", "train_log", "rewards", "run_suites", "replicates", "run_rewards",
          "reward_roles", "embeddings", "checkpoint_steps")
RELATIONS = ("trained-on", "same-data")
ROLES = ("gold", "preference", "faithfulness")
RUN_COLUMNS = (
    "run_id", "method", "model", "model_revision", "config_json", "config_hash", "artifact_hash", "sampler_key",
    "status", "error", "versions_json", "git_sha", "created_at", "finished_at", "train_s", "sample_s", "score_s",
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, method VARCHAR NOT NULL, model VARCHAR NOT NULL, model_revision VARCHAR,
    config_json VARCHAR, config_hash VARCHAR, artifact_hash VARCHAR, sampler_key VARCHAR NOT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('running', 'done', 'failed')), error VARCHAR,
    versions_json VARCHAR, git_sha VARCHAR, created_at TIMESTAMP, finished_at TIMESTAMP,
    train_s DOUBLE, sample_s DOUBLE, score_s DOUBLE);
CREATE TABLE IF NOT EXISTS prompts (
    suite VARCHAR, prompt_id VARCHAR, prompt VARCHAR NOT NULL, category VARCHAR, meta_json VARCHAR,
    PRIMARY KEY (suite, prompt_id));
CREATE TABLE IF NOT EXISTS images (
    image_id VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, suite VARCHAR NOT NULL, prompt_id VARCHAR NOT NULL,
    prompt VARCHAR, seed INTEGER NOT NULL, path VARCHAR NOT NULL, sha256 VARCHAR, width INTEGER, height INTEGER,
    created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS scores (
    image_id VARCHAR, reward VARCHAR, reward_version VARCHAR, value DOUBLE NOT NULL, created_at TIMESTAMP,
    PRIMARY KEY (image_id, reward, reward_version));
CREATE TABLE IF NOT EXISTS train_log (
    artifact_hash VARCHAR, method VARCHAR, step INTEGER, name VARCHAR, value DOUBLE,
    PRIMARY KEY (artifact_hash, step, name));
CREATE TABLE IF NOT EXISTS rewards (
    reward VARCHAR, reward_version VARCHAR, higher_is_better BOOLEAN NOT NULL, PRIMARY KEY (reward, reward_version));
CREATE TABLE IF NOT EXISTS run_suites (
    run_id VARCHAR, suite VARCHAR, suite_sha256 VARCHAR NOT NULL, PRIMARY KEY (run_id, suite));
CREATE TABLE IF NOT EXISTS replicates (
    run_id VARCHAR PRIMARY KEY, arm VARCHAR NOT NULL, train_seed BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS run_rewards (
    run_id VARCHAR, reward VARCHAR, relation VARCHAR NOT NULL CHECK (relation IN ('trained-on', 'same-data')),
    reason VARCHAR, PRIMARY KEY (run_id, reward));
CREATE TABLE IF NOT EXISTS checkpoint_steps (
    run_id VARCHAR PRIMARY KEY, final_run_id VARCHAR NOT NULL, step INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    image_id VARCHAR, space VARCHAR, space_version VARCHAR, vector FLOAT[] NOT NULL,
    PRIMARY KEY (image_id, space, space_version));
CREATE TABLE IF NOT EXISTS reward_roles (
    reward VARCHAR PRIMARY KEY, role VARCHAR NOT NULL CHECK (role IN ('gold', 'preference', 'faithfulness')),
    learned_from VARCHAR);
CREATE OR REPLACE VIEW base_runs AS
    SELECT model, sampler_key,
           first(run_id ORDER BY status = 'done' DESC, created_at NULLS LAST, run_id) AS base_run_id
    FROM runs WHERE method = 'base' GROUP BY model, sampler_key;
CREATE OR REPLACE VIEW pairs AS
    SELECT m.suite, r.model, r.method, r.run_id, br.base_run_id, m.image_id, b.image_id AS base_image_id,
           m.prompt_id, m.seed, sm.reward, sm.reward_version, sm.value, sb.value AS base_value,
           coalesce(rw.higher_is_better, true) AS higher_is_better,
           CASE WHEN sm.value = sb.value THEN 0.5
                WHEN (sm.value > sb.value) = coalesce(rw.higher_is_better, true) THEN 1.0 ELSE 0.0 END AS win
    FROM runs r
    JOIN base_runs br ON br.model = r.model AND br.sampler_key = r.sampler_key
    JOIN images m ON m.run_id = r.run_id
    JOIN images b ON b.run_id = br.base_run_id AND b.suite = m.suite AND b.prompt_id = m.prompt_id AND b.seed = m.seed
    JOIN scores sm ON sm.image_id = m.image_id
    JOIN scores sb ON sb.image_id = b.image_id AND sb.reward = sm.reward AND sb.reward_version = sm.reward_version
    LEFT JOIN rewards rw ON rw.reward = sm.reward AND rw.reward_version = sm.reward_version
    WHERE r.method <> 'base' AND isfinite(sm.value) AND isfinite(sb.value);
CREATE OR REPLACE VIEW winrates AS
    SELECT suite, model, method, reward, count(*) AS n, avg(win) AS win_rate, run_id, reward_version
    FROM pairs GROUP BY suite, model, method, reward, run_id, reward_version;
"""


class StoreError(ValueError):
    """The store cannot be used or a write was refused; the message names the path or row."""


_STATUSES_FINAL = ("done", "failed")
_PHASE_COLUMNS = {"train": "train_s", "sample": "sample_s", "score": "score_s"}
_REQUIRED_RUN_KEYS = ("run_id", "method", "model", "sampler_key")
# What a plan computes for a run and a later version may compute anew (e.g. what sampler_key covers):
# a resumed run takes the current values. Its outcomes (times, status, created_at) are kept.
_REFRESHED_RUN_COLUMNS = ("model_revision", "config_json", "config_hash", "artifact_hash", "sampler_key")
_IMAGE_COLUMNS = ("image_id", "run_id", "suite", "prompt_id", "prompt", "seed", "path", "sha256", "width", "height")


def check_train_value(artifact_hash: str, step: int, name: str, value: float) -> None:
    """Raise StoreError for a non-finite training metric (train_log refuses it: the run fails instead)."""
    if not math.isfinite(value):
        raise StoreError(f"train_log {name} = {value} at step {step} of artifact {artifact_hash}")


def _temp_schema() -> tuple[dict[str, str], str]:
    """SCHEMA as TEMP objects, for a read-only connection: {table: its CREATE TEMP TABLE}, the views."""
    tables, views = {}, []
    for stmt in (s.strip() for s in SCHEMA.split(";") if s.strip()):
        if stmt.startswith("CREATE TABLE IF NOT EXISTS "):
            name = stmt.split()[5]
            tables[name] = stmt.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE IF NOT EXISTS", 1) + ";\n"
        elif stmt.startswith("CREATE OR REPLACE VIEW "):
            views.append(stmt.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW", 1) + ";\n")
        # anything else (an index) changes no result a reader sees
    return tables, "".join(views)


_TEMP_TABLES, _TEMP_VIEWS = _temp_schema()


class NotAResultsStore(StoreError):
    """A DuckDB database without the tables of a results store (a read-write open adds them)."""


_OLDEST_TABLES = ("runs", "images", "scores")  # in every store the harness ever wrote
_HEADER_BYTES = 12  # a DuckDB file starts with an 8-byte checksum and the magic bytes DUCK


def _utcnow() -> datetime:
    """Naive UTC timestamp: DuckDB's TIMESTAMP has no zone, and local time would vary by host."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Store:
    """A DuckDB results file. Opening creates the folder, the tables and the views if missing.

    ``read_only=True`` (what ``bench report`` uses) opens an existing store without ever writing to it: no
    folder, table or view is created, every connection is DuckDB's read-only one (so another reader does
    not block it, and a file or folder the user cannot write is fine), and a write raises StoreError. A
    store written by an older version, lacking a newer table or with older views, reads as the current
    schema: each connection defines the current views, and the missing tables empty, as TEMP objects
    (which shadow the file's own and live only in that connection's memory).
    """

    def __init__(self, db_path: Path, lock_timeout_s: float = 30.0, read_only: bool = False):
        self.db_path = Path(db_path).absolute()
        self.lock_timeout_s = lock_timeout_s
        self.read_only = read_only
        self._compat_sql = ""  # read-only: the TEMP tables and views each connection defines first
        if read_only:
            self.check_readable(self.db_path)
            with self._connect(read_only=True) as con:
                stored = {t for (t,) in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                    "AND schema_name = 'main'").fetchall()}
            lacking = [t for t in _OLDEST_TABLES if t not in stored]
            if lacking:
                raise NotAResultsStore(f"{self.db_path} is a DuckDB database but not a results store: it has no "
                                       f"{', '.join(lacking)} table")
            self._compat_sql = "".join(_TEMP_TABLES[t] for t in _TEMP_TABLES if t not in stored) + _TEMP_VIEWS
            return
        self.check_writable(self.db_path)
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder of store {self.db_path}: {e.strerror or e}") from e
        with self._connect() as con:
            con.execute(SCHEMA)

    @property
    def root(self) -> Path:
        """The folder image paths are relative to: the one holding the db file."""
        return self.db_path.parent

    @staticmethod
    def check_writable(db_path: Path) -> None:
        """Raise StoreError unless the store at db_path could be created or written; creates nothing.

        Cheap enough for a preflight before any training: it only inspects the file system (and the first
        bytes of an existing file, which must be DuckDB's).
        """
        path = Path(db_path).absolute()
        if path.is_dir():
            raise StoreError(f"store path {path} is a directory, not a DuckDB file")
        if path.exists():
            if not os.access(path, os.R_OK | os.W_OK):
                raise StoreError(f"store {path} is not writable: permission denied")
            Store._check_duckdb_file(path)
            return
        existing = path.parent
        while not existing.exists() and existing != existing.parent:  # where a mkdir -p would start
            existing = existing.parent
        if not existing.is_dir():
            raise StoreError(f"cannot create store {path}: {existing} is a file, not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise StoreError(f"cannot create store {path}: permission denied in {existing}")

    @staticmethod
    def check_readable(db_path: Path) -> None:
        """Raise StoreError unless db_path is an existing DuckDB file this process may read; writes nothing."""
        path = Path(db_path).absolute()
        if path.is_dir():
            raise StoreError(f"store path {path} is a directory, not a DuckDB file")
        if not path.is_file():
            raise StoreError(f"no results store at {path}")
        if not os.access(path, os.R_OK):
            raise StoreError(f"store {path} is not readable: permission denied")
        Store._check_duckdb_file(path)

    @staticmethod
    def _check_duckdb_file(path: Path) -> None:
        """Raise StoreError unless the file starts with DuckDB's header (DuckDB refuses an empty file too)."""
        try:
            with open(path, "rb") as f:
                head = f.read(_HEADER_BYTES)
        except OSError as e:
            raise StoreError(f"cannot read store {path}: {e.strerror or e}") from e
        if head[8:12] != b"DUCK":  # DuckDB's main header: an 8-byte checksum, then the magic bytes
            what = "an empty file" if not head else "a file that is not a DuckDB database"
            raise StoreError(f"store {path} is {what}; pass --db a results store (bench run creates one), "
                             "or move the file away")

    @contextmanager
    def _connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits while another process holds the file's lock. A read-only store
        only opens read-only connections, each with the TEMP tables and views it lacks."""
        if self.read_only and not read_only:
            raise StoreError(f"store {self.db_path} was opened read-only; nothing can be written to it")
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.db_path), read_only=read_only)
                break
            except duckdb.Error as e:  # IOException for a lock or a bad file; others for a damaged file
                locked = isinstance(e, duckdb.IOException) and "lock" in str(e).lower()
                if not locked or time.monotonic() >= deadline:
                    why = f"still locked by another process after {self.lock_timeout_s:g} s" if locked else str(e)
                    raise StoreError(f"cannot open store {self.db_path}: {why}") from e
                time.sleep(delay)
                delay = min(1.0, delay * 2)
        try:
            if self._compat_sql:
                try:
                    con.execute(self._compat_sql)
                except duckdb.Error as e:
                    raise StoreError(f"cannot read store {self.db_path}: its tables differ from those this version "
                                     f"of the harness reads ({e})") from e
            yield con
        finally:
            con.close()

    def _insert_frame(self, table: str, frame: pd.DataFrame, refuse: tuple[str, Callable] | None = None) -> None:
        """Insert all rows in one statement; rows whose key is already stored are skipped.

        ``refuse`` is (SQL over the registered ``batch``, message of its first row): when the query
        finds a row, StoreError is raised and nothing of the batch is written.
        """
        if frame.empty:
            return
        cols = ", ".join(frame.columns)
        with self._connect() as con:
            con.register("batch", frame)
            hit = con.execute(refuse[0]).fetchone() if refuse else None
            if hit is not None:
                raise StoreError(refuse[1](*hit))
            con.execute(f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM batch")

    def begin_run(self, row: dict[str, Any]) -> None:
        """Insert the run as running, or mark a stored one running again (keeps created_at)."""
        unknown = sorted(set(row) - set(RUN_COLUMNS))
        if unknown:
            raise StoreError(f"unknown runs column(s) {unknown}; allowed: {', '.join(RUN_COLUMNS)}")
        missing = [k for k in _REQUIRED_RUN_KEYS if row.get(k) in (None, "")]
        if missing:
            raise StoreError(f"begin_run needs {missing} (run {row.get('run_id')!r})")
        values = {**row, "status": "running", "error": None, "finished_at": None}
        values.setdefault("created_at", _utcnow())
        cols = list(values)
        sql = (
            f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            "ON CONFLICT (run_id) DO UPDATE SET status = 'running', error = NULL, finished_at = NULL"
            + "".join(f", {c} = excluded.{c}" for c in cols if c in _REFRESHED_RUN_COLUMNS)
        )
        with self._connect() as con:
            con.execute(sql, [values[c] for c in cols])

    def _update_run(self, run_id: str, sql: str, params: list[Any]) -> None:
        with self._connect() as con:
            if not con.execute(sql + " WHERE run_id = ? RETURNING run_id", [*params, run_id]).fetchall():
                raise StoreError(f"no run {run_id!r} in store {self.db_path}; call begin_run first")

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """Record the outcome of a run: status done or failed, the error text, the finish time."""
        if status not in _STATUSES_FINAL:
            raise StoreError(f"finish_run status must be one of {_STATUSES_FINAL}, got {status!r}")
        self._update_run(run_id, "UPDATE runs SET status = ?, error = ?, finished_at = ?", [status, error, _utcnow()])

    def add_phase_time(self, run_id: str, phase: str, seconds: float) -> None:
        """Add seconds of work actually done in a phase (train, sample or score) to the run."""
        if phase not in _PHASE_COLUMNS:
            raise StoreError(f"unknown phase {phase!r}; allowed: {', '.join(_PHASE_COLUMNS)}")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise StoreError(f"{phase} time of run {run_id!r} must be a finite number >= 0, got {seconds}")
        col = _PHASE_COLUMNS[phase]
        self._update_run(run_id, f"UPDATE runs SET {col} = coalesce({col}, 0) + ?", [float(seconds)])

    def add_prompts(self, suite: str, rows: list[dict[str, Any]]) -> None:
        """Store a suite's prompts; a prompt_id already stored with another text is refused."""
        frame = pd.DataFrame(rows, columns=["prompt_id", "prompt", "category", "meta_json"])
        frame.insert(0, "suite", suite)
        clash = (
            "SELECT b.prompt_id, p.prompt, b.prompt FROM batch b JOIN prompts p "
            "ON p.suite = b.suite AND p.prompt_id = b.prompt_id WHERE p.prompt <> b.prompt LIMIT 1",
            lambda pid, old, new: f"prompt {suite}/{pid} is stored as {old!r} but now reads {new!r}; "
            "a changed prompt needs a new prompt_id (or a new suite name)",
        )
        self._insert_frame("prompts", frame.drop_duplicates(subset=["prompt_id"]), refuse=clash)

    def existing_image_keys(self, run_id: str, suite: str) -> set[tuple[str, int]]:
        """(prompt_id, seed) of the images this run already has in this suite."""
        with self._connect(read_only=True) as con:
            got = con.execute("SELECT prompt_id, seed FROM images WHERE run_id = ? AND suite = ?", [run_id, suite])
            return {(p, int(s)) for p, s in got.fetchall()}

    def missing_image_keys(self, run_id: str, suite: str, wanted: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The (prompt_id, seed) keys of ``wanted``, in order, that this run has no intact image for: no row, or
        a row whose file was deleted or is not the bytes of its stored sha256, damaged or truncated (drawn
        again: same key, same pixels, same file name)."""
        rows = self._checked_images(run_id, suite)
        have = {(p, int(s)) for p, s, problem in zip(rows["prompt_id"], rows["seed"], rows["problem"])
                if problem is None}
        return [key for key in wanted if key not in have]

    def add_run_suite(self, run_id: str, suite: str, suite_sha256: str) -> None:
        """Record the content of the suite a run samples (the latest content, should a suite file grow)."""
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO run_suites VALUES (?, ?, ?)", [run_id, suite, suite_sha256])

    def add_reward(self, reward: str, reward_version: str, higher_is_better: bool) -> None:
        """Record which way a reward wins; the pairs view reads it. A stored direction never changes."""
        with self._connect() as con:
            stored = con.execute("SELECT higher_is_better FROM rewards WHERE reward = ? AND reward_version = ?",
                                 [reward, reward_version]).fetchone()
            if stored is None:
                con.execute("INSERT INTO rewards VALUES (?, ?, ?)", [reward, reward_version, bool(higher_is_better)])
            elif bool(stored[0]) != bool(higher_is_better):
                raise StoreError(f"reward {reward} ({reward_version}) is stored as "
                                 f"{'higher' if stored[0] else 'lower'}-is-better; a new direction needs a new version")

    def add_replicate(self, run_id: str, arm: str, train_seed: int) -> None:
        """Record that ``run_id`` is the replicate of ``arm`` trained with ``train_seed``."""
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO replicates VALUES (?, ?, ?)", [run_id, arm, int(train_seed)])

    def add_checkpoint_step(self, run_id: str, final_run_id: str, step: int) -> None:
        """Record that ``run_id`` samples the checkpoint of step ``step`` of ``final_run_id``'s training."""
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO checkpoint_steps VALUES (?, ?, ?)", [run_id, final_run_id, int(step)])

    def set_run_rewards(self, run_id: str, relations: dict[str, tuple[str, str]]) -> None:
        """Record the rewards ``run_id`` is not held out from: reward -> (relation, reason); replaces what was
        recorded for the run (a plan computes them whole)."""
        bad = sorted({rel for rel, _ in relations.values()} - set(RELATIONS))
        if bad:
            raise StoreError(f"unknown reward relation(s) {bad} for run {run_id}; allowed: {', '.join(RELATIONS)}")
        with self._connect() as con:
            con.execute("BEGIN")
            con.execute("DELETE FROM run_rewards WHERE run_id = ?", [run_id])
            if relations:
                con.executemany("INSERT INTO run_rewards VALUES (?, ?, ?, ?)",
                                [[run_id, reward, rel, why] for reward, (rel, why) in sorted(relations.items())])
            con.execute("COMMIT")

    def set_reward_role(self, reward: str, role: str, learned_from: str | None = None) -> None:
        """Record what a reward measures (``ROLES``) and the preference data it was learned from."""
        if role not in ROLES:
            raise StoreError(f"reward {reward}: unknown role {role!r}; allowed: {', '.join(ROLES)}")
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO reward_roles VALUES (?, ?, ?)", [reward, role, learned_from or None])

    def _relative(self, path: str | Path) -> str:
        """Image paths are stored relative to the db folder so a results folder can be moved."""
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(self.root)
            except ValueError:
                raise StoreError(f"image path {p} is outside the store folder {self.root}") from None
        return p.as_posix()

    def add_images(self, rows: list[dict[str, Any]]) -> None:
        """Store generated images of begun runs (keyed by image_id; stored images are kept as they are)."""
        frame = pd.DataFrame(rows)
        if frame.empty:
            return
        missing = [c for c in _IMAGE_COLUMNS if c not in frame.columns]
        if missing:
            raise StoreError(f"image rows lack column(s) {missing}; required: {', '.join(_IMAGE_COLUMNS)}")
        frame = frame[[*_IMAGE_COLUMNS, *(["created_at"] if "created_at" in frame.columns else [])]].copy()
        frame["path"] = [self._relative(p) for p in frame["path"]]
        if "created_at" not in frame.columns:
            frame["created_at"] = _utcnow()
        orphan = (
            "SELECT b.run_id FROM batch b ANTI JOIN runs r ON r.run_id = b.run_id LIMIT 1",
            lambda run_id: f"images of unknown run {run_id!r}; call begin_run first (nothing stored)",
        )
        self._insert_frame("images", frame, refuse=orphan)

    def images_without_score(self, reward: str, reward_version: str, run_ids: list[str] | None = None) -> pd.DataFrame:
        """Images (optionally of these runs) lacking a (reward, reward_version) score.

        Columns: image_id, run_id, suite, prompt_id, prompt, seed, path (as stored, relative), sha256 and
        abs_path (path resolved against the store folder), ordered by run, suite, prompt, seed.
        """
        return self._images_without("SELECT 1 FROM scores s WHERE s.image_id = i.image_id AND s.reward = ? "
                                    "AND s.reward_version = ?", [reward, reward_version], run_ids)

    def images_without_embedding(self, space: str, space_version: str,
                                 run_ids: list[str] | None = None) -> pd.DataFrame:
        """Images (optionally of these runs) lacking an embedding in (space, space_version); columns as
        ``images_without_score``."""
        return self._images_without("SELECT 1 FROM embeddings e WHERE e.image_id = i.image_id AND e.space = ? "
                                    "AND e.space_version = ?", [space, space_version], run_ids)

    def _images_without(self, done_sql: str, done_params: list[Any], run_ids: list[str] | None) -> pd.DataFrame:
        sql = ("SELECT i.image_id, i.run_id, i.suite, i.prompt_id, i.prompt, i.seed, i.path, i.sha256 FROM images i "
               f"WHERE NOT EXISTS ({done_sql})")
        params: list[Any] = list(done_params)
        if run_ids is not None:
            sql += " AND list_contains(?::VARCHAR[], i.run_id)"
            params.append(list(run_ids))
        frame = self.query(sql + " ORDER BY i.run_id, i.suite, i.prompt_id, i.seed", params)
        frame["abs_path"] = [str(self.root / p) for p in frame["path"]]
        return frame

    def add_scores(self, rows: list[tuple[str, str, str, float]]) -> None:
        """Store (image_id, reward, reward_version, value) rows; the whole batch is refused when a
        value is NaN or infinite or an image_id is unknown, before anything is written."""
        if not rows:
            return
        frame = pd.DataFrame(rows, columns=["image_id", "reward", "reward_version", "value"])
        frame["value"] = frame["value"].astype("float64")  # None becomes NaN and is refused below
        bad = frame[~np.isfinite(frame["value"].to_numpy())]
        if not bad.empty:
            r = bad.iloc[0]
            raise StoreError(
                f"refusing {len(bad)} non-finite score(s), e.g. {r['value']} for image {r['image_id']} "
                f"by reward {r['reward']} ({r['reward_version']}); nothing of this batch was stored"
            )
        frame["created_at"] = _utcnow()
        orphan = (
            "SELECT b.image_id FROM batch b ANTI JOIN images i ON i.image_id = b.image_id LIMIT 1",
            lambda image_id: f"score for unknown image {image_id!r}; store the image first (nothing stored)",
        )
        self._insert_frame("scores", frame, refuse=orphan)

    def add_embeddings(self, rows: list[tuple[str, str, str, np.ndarray]]) -> None:
        """Store (image_id, space, space_version, vector) rows; the batch is refused whole when a vector is
        not finite or an image_id is unknown."""
        if not rows:
            return
        bad = next((r for r in rows if not np.all(np.isfinite(r[3]))), None)
        if bad is not None:
            raise StoreError(f"refusing a non-finite embedding of image {bad[0]} in space {bad[1]} ({bad[2]}); "
                             "nothing of this batch was stored")
        frame = pd.DataFrame({"image_id": [r[0] for r in rows], "space": [r[1] for r in rows],
                              "space_version": [r[2] for r in rows],
                              "vector": [np.asarray(r[3], dtype=np.float32).tolist() for r in rows]})
        orphan = (
            "SELECT b.image_id FROM batch b ANTI JOIN images i ON i.image_id = b.image_id LIMIT 1",
            lambda image_id: f"embedding of unknown image {image_id!r}; store the image first (nothing stored)",
        )
        self._insert_frame("embeddings", frame, refuse=orphan)

    def add_train_log(self, artifact_hash: str, method: str, step: int, values: dict[str, float]) -> None:
        """Store one training step's metrics; non-finite values are refused (fail the run instead)."""
        self.add_train_logs([{"artifact_hash": artifact_hash, "method": method, "step": int(step), "name": name,
                              "value": value} for name, value in values.items()])

    def add_train_logs(self, rows: list[dict[str, Any]]) -> None:
        """Store many steps' metrics (artifact_hash, method, step, name, value) in one transaction;
        the whole batch is refused when a value is NaN or infinite."""
        for r in rows:
            check_train_value(r["artifact_hash"], r["step"], r["name"], r["value"])
        self._insert_frame("train_log", pd.DataFrame(rows, columns=["artifact_hash", "method", "step", "name", "value"]))

    def counts(self) -> dict[str, int]:
        """Number of rows in each table."""
        with self._connect(read_only=True) as con:
            return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """Run SQL on a read-only connection and return the result as a DataFrame."""
        with self._connect(read_only=True) as con:
            return con.execute(sql, params).df() if params is not None else con.execute(sql).df()

    def query_quietly(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """``query`` without DuckDB's progress bar, which a long scan would draw into a report's terminal output."""
        with self._connect(read_only=True) as con:
            con.execute("SET enable_progress_bar = false")
            return con.execute(sql, params).df() if params is not None else con.execute(sql).df()

    def damaged_images(self, run_id: str | None = None, suite: str | None = None) -> pd.DataFrame:
        """Stored images (of one run and suite, or all) whose file is gone or is not the bytes whose sha256
        was stored when it was written (damaged, truncated): image_id, run_id, suite, prompt_id, seed, path
        (relative), sha256 and ``problem``. A row stored without a sha256 is checked for its file only."""
        frame = self._checked_images(run_id, suite)
        return frame[frame["problem"].notna()].reset_index(drop=True)

    def _checked_images(self, run_id: str | None, suite: str | None) -> pd.DataFrame:
        """The image rows of ``damaged_images``, every one, with ``problem`` None where the file is intact."""
        where = [(col, value) for col, value in (("run_id", run_id), ("suite", suite)) if value is not None]
        frame = self.query("SELECT image_id, run_id, suite, prompt_id, seed, path, sha256 FROM images"
                           + (" WHERE " + " AND ".join(f"{col} = ?" for col, _ in where) if where else "")
                           + " ORDER BY path, image_id", [value for _, value in where])
        checked: dict[tuple[str, Any], str | None] = {}  # a file several rows share is read once
        for path, sha in zip(frame["path"], frame["sha256"]):
            if (path, sha) not in checked:
                checked[(path, sha)] = self.image_file_problem(path, sha)
        frame["problem"] = pd.Series([checked[(path, sha)] for path, sha in zip(frame["path"], frame["sha256"])],
                                     index=frame.index, dtype=object)
        return frame

    def image_file_problem(self, path: str, sha256: str | None) -> str | None:
        """None when the image file at ``path`` (relative to the store folder) is the one whose sha256 was
        stored; else what is wrong with it."""
        from bench.integrity import file_problem

        return file_problem(self.root / path, sha256 if isinstance(sha256, str) else None)
