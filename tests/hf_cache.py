"""The Hugging Face hub cache layout, written out by hand for tests: ``<kind>s--owner--name/refs/main``
naming a commit, and its files under ``snapshots/<commit>/``."""

from __future__ import annotations

from pathlib import Path

import pytest

COMMIT = "feedfacefeedfacefeedfacefeedfacefeedface"


def snapshot(cache: Path, repo: str, commit: str = COMMIT, kind: str = "model", files: Path | None = None) -> Path:
    """The snapshot folder of ``repo`` (kind "model" or "dataset") that refs/main names, created; with
    ``files``, a folder whose files are copied into it."""
    root = cache / f"{kind}s--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit + "\n")
    for f in sorted(files.iterdir()) if files else ():
        (snap / f.name).write_bytes(f.read_bytes())
    return snap


def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_env: str, root: str) -> dict[str, Path]:
    """An empty Hugging Face cache ("cache") and local root ("root", named by ``root_env``), both
    created: nothing of the machine's is visible."""
    dirs = {"cache": tmp_path / "hf", "root": tmp_path / root}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(dirs["cache"]))
    monkeypatch.setenv(root_env, str(dirs["root"]))
    return dirs
