"""bench.store: schema, keyed idempotent writes, refusals, the winrates view, concurrency."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from bench.store import Store, StoreError


def _run(run_id: str, method: str, sampler_key: str = "tiny/ddim/20/64", **extra) -> dict:
    return {"run_id": run_id, "method": method, "model": "tiny", "sampler_key": sampler_key, **extra}


def _image(run_id: str, prompt_id: str, seed: int, suite: str = "s") -> dict:
    return {
        "image_id": f"{run_id}-{suite}-{prompt_id}-{seed}", "run_id": run_id, "suite": suite,
        "prompt_id": prompt_id, "prompt": f"prompt {prompt_id}", "seed": seed,
        "path": f"images/{run_id}/{prompt_id}_{seed}.png", "sha256": "0" * 64, "width": 64, "height": 64,
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "nested" / "results" / "bench.duckdb")


def test_opening_creates_folder_and_tables_and_keeps_data(tmp_path: Path):
    path = tmp_path / "a" / "b" / "bench.duckdb"
    Store(path).begin_run(_run("r1", "base"))
    assert path.is_file()
    reopened = Store(path)
    assert reopened.counts() == {"runs": 1, "prompts": 0, "images": 0, "scores": 0, "train_log": 0, "rewards": 0,
                                 "run_suites": 0, "replicates": 0, "run_rewards": 0, "reward_roles": 0,
                                 "checkpoint_steps": 0, "embeddings": 0}
    views = set(reopened.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")["view_name"])
    assert {"base_runs", "pairs", "winrates"} <= views


def test_check_writable_creates_nothing(tmp_path: Path):
    path = tmp_path / "x" / "y" / "bench.duckdb"
    Store.check_writable(path)
    assert not (tmp_path / "x").exists()


def test_unwritable_paths_raise_store_error_naming_the_path(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match=r"file.*is a file, not a directory"):
        Store.check_writable(blocker / "bench.duckdb")
    with pytest.raises(ValueError, match="is a file"):  # StoreError is a ValueError: the CLI exits 2
        Store(blocker / "sub" / "bench.duckdb")
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)


def test_a_file_that_is_not_duckdb_is_refused(tmp_path: Path):
    path = tmp_path / "bench.duckdb"
    path.write_text("hello" * 1000)
    for open_it in (Store.check_writable, Store.check_readable, Store, lambda p: Store(p, read_only=True)):
        with pytest.raises(StoreError, match=r"bench\.duckdb is a file that is not a DuckDB database"):
            open_it(path)  # read from its first bytes: a preflight refuses it before any work
    assert path.read_text() == "hello" * 1000


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_is_reported(tmp_path: Path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="permission denied"):
            Store.check_writable(locked / "bench.duckdb")
    finally:
        locked.chmod(0o700)


def test_another_process_can_read_between_writes_and_a_held_lock_is_waited_for(store: Store):
    store.begin_run(_run("r1", "base"))
    read = subprocess.run(
        [sys.executable, "-c", f"import duckdb; print(duckdb.connect({str(store.db_path)!r}, read_only=True)"
         ".execute('SELECT count(*) FROM runs').fetchone()[0])"],
        capture_output=True, text=True, check=True,
    )
    assert read.stdout.strip() == "1"  # no connection of ours stayed open after the write
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, time
            con = duckdb.connect({str(store.db_path)!r})
            print("held", flush=True)
            time.sleep(1.5)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="locked by another process after 0.2 s"):
            Store(store.db_path, lock_timeout_s=0.2)
        assert Store(store.db_path, lock_timeout_s=30).counts()["runs"] == 1  # waits for the release
    finally:
        holder.wait(timeout=30)


def test_begin_run_restarts_a_failed_run_keeping_created_at(store: Store):
    store.begin_run(_run("r1", "dpo", config_hash="abc"))
    created = store.query("SELECT created_at FROM runs")["created_at"][0]
    store.finish_run("r1", "failed", error="CUDA out of memory")
    row = store.query("SELECT status, error, finished_at FROM runs").iloc[0]
    assert (row["status"], row["error"]) == ("failed", "CUDA out of memory") and row["finished_at"] is not None
    store.begin_run(_run("r1", "dpo", config_hash="abc"))
    row = store.query("SELECT status, error, finished_at, created_at FROM runs").iloc[0]
    assert row["status"] == "running" and row["error"] is None
    assert row["created_at"] == created and str(row["finished_at"]) == "NaT"
    assert store.counts()["runs"] == 1


def test_run_writes_refuse_what_is_not_allowed(store: Store):
    with pytest.raises(StoreError, match="unknown runs column.*'colour'"):
        store.begin_run({**_run("r1", "dpo"), "colour": "red"})
    with pytest.raises(StoreError, match="sampler_key"):
        store.begin_run({"run_id": "r1", "method": "dpo", "model": "tiny"})
    with pytest.raises(StoreError, match="no run 'ghost'"):
        store.finish_run("ghost", "done")
    store.begin_run(_run("r1", "dpo"))
    with pytest.raises(StoreError, match="done"):
        store.finish_run("r1", "running")
    with pytest.raises(StoreError, match="allowed: train, sample, score"):
        store.add_phase_time("r1", "decode", 1.0)
    with pytest.raises(StoreError, match="finite"):
        store.add_phase_time("r1", "train", float("nan"))


def test_phase_times_accumulate_from_null(store: Store):
    store.begin_run(_run("r1", "dpo"))
    store.add_phase_time("r1", "train", 1.5)
    store.add_phase_time("r1", "train", 2.0)
    store.add_phase_time("r1", "score", 0.25)
    row = store.query("SELECT train_s, sample_s, score_s FROM runs").iloc[0]
    assert row["train_s"] == 3.5 and row["score_s"] == 0.25 and str(row["sample_s"]) == "nan"


def test_rewriting_the_same_rows_adds_nothing(store: Store):
    store.begin_run(_run("r1", "base"))
    images = [_image("r1", f"p{i}", s) for i in range(3) for s in (0, 1)]
    scores = [(im["image_id"], "pick", "v1", float(i)) for i, im in enumerate(images)]
    for _ in range(2):
        store.add_prompts("s", [{"prompt_id": f"p{i}", "prompt": f"prompt p{i}", "category": "c", "meta_json": "{}"}
                                for i in range(3)])
        store.add_images(images)
        store.add_scores(scores)
        store.add_train_log("art1", "dpo", 0, {"loss": 0.7, "winner_err": 0.1})
        store.add_reward("pick", "v1", True)
        store.add_run_suite("r1", "s", "0" * 64)
        store.add_replicate("r1", "arm1", 0)
        store.set_run_rewards("r1", {"pick": ("same-data", "learned from the labels r1 trained on")})
        store.set_reward_role("pick", "preference", "pickapic-v2")
        store.begin_run(_run("r1", "base"))
    assert store.counts() == {"runs": 1, "prompts": 3, "images": 6, "scores": 6, "train_log": 2, "rewards": 1,
                              "run_suites": 1, "replicates": 1, "run_rewards": 1, "reward_roles": 1,
                              "checkpoint_steps": 0, "embeddings": 0}
    store.add_scores([(images[0]["image_id"], "pick", "v2", 9.0)])  # a new reward version adds a row
    assert store.counts()["scores"] == 7


def test_a_changed_prompt_text_is_refused(store: Store):
    store.add_prompts("s", [{"prompt_id": "p0", "prompt": "a cat", "category": None, "meta_json": None}])
    with pytest.raises(StoreError, match="s/p0 is stored as 'a cat' but now reads 'a dog'"):
        store.add_prompts("s", [{"prompt_id": "p0", "prompt": "a dog", "category": None, "meta_json": None}])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_non_finite_scores_are_refused_and_nothing_of_the_batch_is_stored(store: Store, bad):
    store.begin_run(_run("r1", "base"))
    store.add_images([_image("r1", "p0", 0), _image("r1", "p1", 0)])
    with pytest.raises(StoreError, match=r"image r1-s-p1-0 by reward pick \(v1\)"):
        store.add_scores([("r1-s-p0-0", "pick", "v1", 0.3), ("r1-s-p1-0", "pick", "v1", bad)])
    assert store.counts()["scores"] == 0


def test_scores_for_unknown_images_are_refused(store: Store):
    store.begin_run(_run("r1", "base"))
    store.add_images([_image("r1", "p0", 0)])
    with pytest.raises(StoreError, match="unknown image 'nope'"):
        store.add_scores([("r1-s-p0-0", "pick", "v1", 0.3), ("nope", "pick", "v1", 0.2)])
    assert store.counts()["scores"] == 0


def test_images_of_unknown_runs_are_refused(store: Store):
    with pytest.raises(StoreError, match="unknown run 'ghost'"):
        store.add_images([_image("ghost", "p0", 0)])
    assert store.counts()["images"] == 0


def test_non_finite_train_log_values_are_refused(store: Store):
    with pytest.raises(StoreError, match="loss = nan at step 3"):
        store.add_train_log("art1", "dpo", 3, {"loss": float("nan")})
    assert store.counts()["train_log"] == 0


def test_train_logs_of_many_steps_are_written_at_once_or_not_at_all(store: Store):
    rows = [{"artifact_hash": "a", "method": "dpo", "step": s, "name": "loss", "value": v}
            for s, v in ((1, 0.7), (2, 0.6), (3, float("inf")))]
    with pytest.raises(StoreError, match="loss = inf at step 3 of artifact a"):
        store.add_train_logs(rows)
    assert store.counts()["train_log"] == 0
    store.add_train_logs(rows[:2])
    store.add_train_logs(rows[:2])  # keyed: again adds nothing
    assert store.query("SELECT step, value FROM train_log ORDER BY step").values.tolist() == [[1, 0.7], [2, 0.6]]


def test_missing_image_keys_keep_the_asked_order_and_redraw_deleted_or_damaged_files(store: Store):
    import hashlib

    store.begin_run(_run("d", "dpo"))
    (store.root / "images" / "d").mkdir(parents=True)
    for prompt_id in ("p0", "p1", "p3"):
        store.add_images([{**_image("d", prompt_id, 0), "sha256": hashlib.sha256(b"png").hexdigest()}])
        (store.root / "images" / "d" / f"{prompt_id}_0.png").write_bytes(b"png")
    (store.root / "images" / "d" / "p1_0.png").unlink()
    (store.root / "images" / "d" / "p3_0.png").write_bytes(b"pn")  # truncated: not the stored sha256
    wanted = [("p2", 0), ("p1", 0), ("p0", 0), ("p0", 1), ("p3", 0)]
    assert store.missing_image_keys("d", "s", wanted) == [("p2", 0), ("p1", 0), ("p0", 1), ("p3", 0)]
    assert store.missing_image_keys("d", "other-suite", wanted) == wanted
    damaged = store.damaged_images()
    assert dict(zip(damaged.prompt_id, damaged.problem)) == {
        "p1": "missing", "p3": "sha256 differs from the one recorded when it was written (damaged or truncated)"}


def test_a_run_records_the_content_of_its_suite(store: Store):
    store.begin_run(_run("d", "dpo"))
    store.add_run_suite("d", "s", "1" * 64)
    store.add_run_suite("d", "s", "2" * 64)  # the suite file grew: the latest content
    assert store.query("SELECT * FROM run_suites").values.tolist() == [["d", "s", "2" * 64]]


def test_a_lower_is_better_reward_wins_when_its_value_is_lower(store: Store):
    store.begin_run(_run("b", "base"))
    store.begin_run(_run("d", "dpo"))
    for run in ("b", "d"):
        store.add_images([_image(run, f"p{i}", 0) for i in range(3)])
    store.add_scores([(f"b-s-p{i}-0", r, "v1", 1.0) for i in range(3) for r in ("error", "pick")])
    store.add_scores([(f"d-s-p{i}-0", r, "v1", v) for i, v in enumerate([0.5, 1.0, 2.0]) for r in ("error", "pick")])
    store.add_reward("error", "v1", higher_is_better=False)
    store.add_reward("error", "v1", higher_is_better=False)  # recording it again changes nothing
    wins = store.query("SELECT reward, list(win ORDER BY prompt_id) AS w FROM pairs GROUP BY reward ORDER BY reward")
    assert [list(w) for w in wins["w"]] == [[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]]  # error: lower wins; pick: no row
    with pytest.raises(StoreError, match="stored as lower-is-better; a new direction needs a new version"):
        store.add_reward("error", "v1", higher_is_better=True)


def test_image_paths_are_stored_relative_to_the_store(store: Store, tmp_path: Path):
    store.begin_run(_run("r1", "base"))
    inside = {**_image("r1", "p0", 0), "path": store.root / "images" / "a.png"}
    store.add_images([inside])
    assert store.query("SELECT path FROM images")["path"][0] == "images/a.png"
    with pytest.raises(StoreError, match="outside the store folder"):
        store.add_images([{**_image("r1", "p1", 0), "path": tmp_path / "elsewhere.png"}])


def test_existing_keys_and_images_without_score(store: Store):
    for run in ("b", "d"):
        store.begin_run(_run(run, "base" if run == "b" else "dpo"))
        store.add_images([_image(run, "p0", 0), _image(run, "p0", 1), _image(run, "p1", 0, suite="t")])
    assert store.existing_image_keys("d", "s") == {("p0", 0), ("p0", 1)}
    store.add_scores([("d-s-p0-0", "pick", "v1", 1.0), ("d-s-p0-1", "pick", "v0", 1.0)])
    todo = store.images_without_score("pick", "v1", ["d"])
    assert list(todo["image_id"]) == ["d-s-p0-1", "d-t-p1-0"]
    assert todo["abs_path"][0] == str(store.root / "images/d/p0_1.png")
    assert len(store.images_without_score("pick", "v1")) == 5
    assert store.images_without_score("pick", "v1", []).empty


def test_winrates_view_pairs_with_the_base_of_the_same_sampler(store: Store):
    store.begin_run(_run("b", "base"))
    store.begin_run(_run("b_other", "base", sampler_key="tiny/ddim/50/64"))
    store.begin_run(_run("d", "dpo"))
    for run in ("b", "b_other", "d"):
        store.add_images([_image(run, f"p{i}", 0) for i in range(4)])
    base = [1.0, 1.0, 1.0, 1.0]
    dpo = [2.0, 1.0, 0.0, 3.0]  # win, tie, loss, win -> 2.5 / 4
    store.add_scores([(f"b-s-p{i}-0", "pick", "v1", v) for i, v in enumerate(base)])
    store.add_scores([(f"b_other-s-p{i}-0", "pick", "v1", 9.0) for i in range(4)])  # would lose every pair
    store.add_scores([(f"d-s-p{i}-0", "pick", "v1", v) for i, v in enumerate(dpo)])
    store.add_scores([(f"d-s-p{i}-0", "pick", "v2", v) for i, v in enumerate(dpo)])  # no base v2: no pairs
    view = store.query("SELECT * FROM winrates").to_dict("records")
    assert view == [{"suite": "s", "model": "tiny", "method": "dpo", "reward": "pick", "n": 4, "win_rate": 0.625,
                     "run_id": "d", "reward_version": "v1"}]


def test_base_runs_prefers_a_done_run(store: Store):
    store.begin_run(_run("b1", "base", created_at="2024-01-01 00:00:00"))
    store.begin_run(_run("b2", "base", created_at="2024-02-01 00:00:00"))
    assert store.query("SELECT base_run_id FROM base_runs")["base_run_id"][0] == "b1"
    store.finish_run("b1", "failed", "boom")
    store.finish_run("b2", "done")
    assert store.query("SELECT base_run_id FROM base_runs")["base_run_id"][0] == "b2"


def test_query_is_read_only(store: Store):
    with pytest.raises(duckdb.Error, match="read-only"):
        store.query("INSERT INTO train_log VALUES ('a', 'dpo', 0, 'loss', 1.0)")
    assert store.query("SELECT ? + 1 AS x", [1])["x"][0] == 2


def test_embeddings_are_stored_once_and_refused_when_not_finite_or_orphaned(store: Store):
    import numpy as np

    store.begin_run(_run("r1", "base"))
    image = _image("r1", "p0", 0)
    store.add_images([image])
    row = (image["image_id"], "space", "v1", np.array([0.5, -1.0, 2.0], dtype=np.float32))
    store.add_embeddings([row])
    store.add_embeddings([row])  # again: nothing added
    stored = store.query("SELECT space, space_version, vector FROM embeddings")
    assert len(stored) == 1 and list(stored["vector"][0]) == [0.5, -1.0, 2.0]
    with pytest.raises(StoreError, match="non-finite embedding"):
        store.add_embeddings([(image["image_id"], "space", "v2", np.array([np.nan, 1.0]))])
    with pytest.raises(StoreError, match="embedding of unknown image 'nope'"):
        store.add_embeddings([("nope", "space", "v1", np.array([1.0]))])
    assert store.counts()["embeddings"] == 1
    assert len(store.images_without_embedding("space", "v1")) == 0
    assert len(store.images_without_embedding("space", "v2")) == 1


def test_reward_relations_and_roles_are_checked(store: Store):
    with pytest.raises(StoreError, match="unknown reward relation"):
        store.set_run_rewards("r1", {"pick": ("trained-in", "why")})
    with pytest.raises(StoreError, match="unknown role"):
        store.set_reward_role("pick", "favourite")
    store.set_run_rewards("r1", {"pick": ("same-data", "a"), "hps": ("trained-on", "b")})
    store.set_run_rewards("r1", {"pick": ("same-data", "a")})  # a plan records a run's relations whole
    assert store.query("SELECT reward FROM run_rewards")["reward"].tolist() == ["pick"]
