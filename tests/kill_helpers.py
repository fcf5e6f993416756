"""Shared by the kill-and-resume tests: SIGKILL a `bench run` at a chosen point, and read back its rows."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import psutil

from bench.store import Store


def store_rows(db: Path) -> dict[str, list[tuple]]:
    """Every row that identifies a result, sorted, so two stores compare with ``==``."""
    store = Store(db)
    return {
        "runs": sorted(map(tuple, store.query("SELECT run_id, method, config_hash, status FROM runs").values)),
        "images": sorted(map(tuple, store.query("SELECT image_id, run_id, prompt_id, seed, sha256 FROM images").values)),
        "scores": sorted(map(tuple, store.query("SELECT image_id, reward, reward_version, value FROM scores").values)),
        "train_log": sorted(map(tuple, store.query("SELECT artifact_hash, step, name, value FROM train_log").values)),
    }


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 1800) -> bool:
    """SIGKILL the run (its process group and every child, e.g. launched workers in their own sessions)
    once ``ready()`` holds. False if the run finished first; a run that does neither is an error."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and proc.poll() is None:
        if ready():
            workers = psutil.Process(proc.pid).children(recursive=True)
            os.killpg(proc.pid, signal.SIGKILL)
            for w in workers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    w.kill()
            proc.wait()
            psutil.wait_procs(workers, timeout=30)
            return True
        time.sleep(0.05)
    if proc.poll() is None:  # a stuck run, not a fast one: fail loudly rather than pass
        os.killpg(proc.pid, signal.SIGKILL)
        raise TimeoutError(f"run neither reached the kill point nor finished in {timeout_s} s")
    return False
