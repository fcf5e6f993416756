"""Every file the harness reads back is checked against the sha256 recorded when it was written.

Three ways of recording it, one per kind of file:

- a trained artifact folder (``checkpoints/<method>-<artifact_hash>/``) holds ``manifest.json``, the sha256
  of every other file in it, written just before the folder is renamed into place;
- a cache entry (``cache/<kind>-<key>.safetensors``) has a sidecar ``<name>.sha256`` in ``sha256sum``
  format (``sha256sum -c`` checks it too);
- an image's sha256 is its row in the store (``images.sha256``) and its file name.

Temporary files are named per process (``<name>.<host>-<pid>.tmp``), so two processes writing the
same file never write into one temporary, and a leftover is known to be stale once its process is
gone. ``lock`` serialises the processes that would build the same thing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

MANIFEST = "manifest.json"
SIDECAR = ".sha256"
# A temporary of another machine (a shared results folder) counts as stale once untouched this long.
STALE_S = 3600.0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_problem(path: Path, sha256: str | None) -> str | None:
    """None when ``path`` holds the bytes whose sha256 is ``sha256`` (or exists, when none was recorded);
    else what is wrong with it."""
    try:
        digest = sha256_file(path)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if sha256 and digest != sha256:
        return "sha256 differs from the one recorded when it was written (damaged or truncated)"
    return None


# -- temporary names ---------------------------------------------------------------------------------


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


def tmp_path(path: Path) -> Path:
    """A temporary name beside ``path`` that only this process uses: ``<name>.<host>-<pid>.tmp``."""
    return path.with_name(f"{path.name}.{_host()}-{os.getpid()}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_stale(tmp: Path) -> bool:
    """Whether the process that wrote ``tmp`` is gone: a dead process of this machine, or, for another
    machine's (or an older version's) temporary, one untouched for STALE_S."""
    host, _, pid = tmp.name.removesuffix(".tmp").rsplit(".", 1)[-1].rpartition("-")
    if host == _host() and pid.isdigit():
        return not _alive(int(pid))
    try:
        return time.time() - tmp.lstat().st_mtime > STALE_S
    except FileNotFoundError:
        return False  # renamed into place meanwhile


def remove_stale(tmps: Iterable[Path]) -> None:
    """Delete the temporaries (files or folders) whose writer is gone; those of live processes stay."""
    for tmp in list(tmps):
        if is_stale(tmp):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = tmp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


# -- artifact folders: a manifest ---------------------------------------------------------------------


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f != folder / MANIFEST)


def write_manifest(folder: Path) -> None:
    """Record the sha256 of every file under ``folder`` in ``folder/manifest.json``."""
    files = {f.relative_to(folder).as_posix(): sha256_file(f) for f in _files(folder)}
    _write_atomic(folder / MANIFEST, json.dumps({"files": files}, indent=1, sort_keys=True))


def manifest_problems(folder: Path) -> list[tuple[Path, str]]:
    """What is wrong with an artifact folder: (path, why) of each file that is not the one its manifest
    lists (none when all are). A folder without a manifest (an older version wrote it) cannot be verified."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return [(folder, "no manifest of sha256s (written by an older version), so it cannot be verified")]
    try:
        listed = json.loads(manifest.read_text())["files"]
        if not isinstance(listed, dict):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        return [(manifest, "unreadable manifest")]
    problems = []
    for rel, digest in sorted(listed.items()):
        why = file_problem(folder / rel, str(digest))
        if why is not None:
            problems.append((folder / rel, why.replace("recorded when it was written", "its manifest lists")))
    problems += [(f, "not in the manifest (added after it was written)")
                 for f in _files(folder) if f.relative_to(folder).as_posix() not in listed]
    return problems


def signature(folder: Path) -> tuple:
    """(name, size, mtime) of every file of a folder: unchanged since a check, the check still holds."""
    return tuple((f.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns)
                 for f in sorted(p for p in folder.rglob("*") if p.is_file()) for st in [f.stat()])


# -- single files: a sidecar ----------------------------------------------------------------------------


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def write_sidecar(written: Path, path: Path) -> None:
    """Record the sha256 of ``written`` (the finished temporary of ``path``) beside ``path``."""
    _write_atomic(sidecar(path), f"{sha256_file(written)}  {path.name}\n")


def sidecar_problem(path: Path) -> str | None:
    """None when ``path`` holds the bytes whose sha256 its sidecar records; else what is wrong."""
    try:
        recorded = sidecar(path).read_text().split()[0]
    except FileNotFoundError:
        return "no sha256 recorded beside it (written by an older version, or its write was interrupted)"
    except (OSError, IndexError):
        return f"its sha256 file {sidecar(path).name} is unreadable"
    return file_problem(path, recorded)


# -- one builder at a time --------------------------------------------------------------------------------


@contextlib.contextmanager
def lock(path: Path, waiting: Callable[[str], None]) -> Iterator[bool]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the body; yields whether
    another process held it first. ``waiting(holder)`` is called before blocking, with what the lock
    file says of its holder. The lock goes with the process, killed or not; the file stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        waited = False
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            waiting(f.read().strip() or "another process")
            fcntl.flock(f, fcntl.LOCK_EX)
            waited = True
        try:
            f.seek(0)
            f.truncate()
            f.write(f"process {os.getpid()} on {socket.gethostname()}")
            f.flush()
            yield waited
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
