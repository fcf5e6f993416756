"""Where a reward's files are on disk, offline: one lookup for every reward (and for the prompt suites).

A file is named by its source (a Hugging Face repo id, or ``owner/name`` of a project that hosts it
elsewhere) and its path inside that source. It is looked for, in this order:

1. an explicit folder (the ``weights`` a reward is constructed with): ``<folder>/<repo>/<path>``,
   and nowhere else when one is given;
2. the local root ``$BENCH_WEIGHTS`` (default ``~/.cache/diffusion-pref-bench/weights``), same layout,
   which is what ``hf download REPO FILE --local-dir $BENCH_WEIGHTS/REPO`` produces;
3. the Hugging Face cache (``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``), in the snapshot
   that ``refs/main`` points to, which is what ``hf download REPO FILE`` produces.

All files of one source must sit in the same folder (a model and its config are never mixed across
roots). Nothing here touches the network. ``fingerprint`` is the cheap content identity that reward
versions carry, so that other weights under the same name give another version.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

WEIGHTS_ENV = "BENCH_WEIGHTS"
DEFAULT_ROOT = Path("~/.cache/diffusion-pref-bench")


@dataclass(frozen=True)
class Source:
    """Files of one repo. ``urls`` (one per file) marks a source that is not on the Hugging Face hub."""

    repo: str  # "xswu/HPSv2"
    files: tuple[str, ...]  # paths inside the repo; a path may be a glob ("data/test_unique-*.parquet")
    repo_type: str = "model"  # "model" or "dataset" (Hugging Face hub only)
    urls: tuple[str, ...] = ()  # download URL of each file, for sources outside the hub
    aliases: tuple[str, ...] = ()  # other ids the same repo may be cached under ("bert-base-uncased")

    def fetch_command(self, root: Path, local: bool = False) -> str:
        """The shell command that fetches the files: into ``root/<repo>`` with ``local``, else the HF cache."""
        if self.urls:
            return "\n".join(f"curl -L --create-dirs -o '{root / self.repo / f}' '{u}'"
                             for f, u in zip(self.files, self.urls))
        kind = " --repo-type dataset" if self.repo_type == "dataset" else ""
        where = f" --local-dir '{root / self.repo}'" if local else ""
        globs = [f for f in self.files if _is_glob(f)]
        plain = " ".join(f for f in self.files if not _is_glob(f))
        if globs:  # hf download ignores --include when file names are given: one command each
            cmds = [f"hf download {self.repo}{kind}" + "".join(f" --include '{g}'" for g in globs) + where]
            return "\n".join(cmds + ([f"hf download {self.repo}{kind} {plain}{where}"] if plain else []))
        return f"hf download {self.repo}{kind} {plain}{where}"


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def local_root(env: str = WEIGHTS_ENV, default: str = "weights") -> Path:
    """The local root of ``env``: the variable's value, or ``~/.cache/diffusion-pref-bench/<default>``."""
    return Path(os.environ.get(env) or DEFAULT_ROOT / default).expanduser()


def hf_cache() -> Path:
    """The Hugging Face hub cache, read when called (so a changed ``HF_HUB_CACHE`` is honoured)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_snapshot(repo: str, repo_type: str) -> Path | None:
    # The documented cache layout: <cache>/<type>s--<owner>--<name>/refs/main -> snapshots/<commit>/
    folder = hf_cache() / f"{repo_type}s--{repo.replace('/', '--')}"
    ref = folder / "refs" / "main"
    if not ref.is_file():
        return None
    snapshot = folder / "snapshots" / ref.read_text().strip()
    return snapshot if snapshot.is_dir() else None


def _has(folder: Path, path: str) -> bool:
    if _is_glob(path):
        return any(Path(p).is_file() for p in glob.glob(str(folder / path)))
    return (folder / path).is_file()


def candidates(source: Source, folder: Path | None = None, env: str = WEIGHTS_ENV,
               default: str = "weights") -> list[tuple[str, Path]]:
    """(description, folder) pairs searched for ``source``, in order."""
    if folder is not None:
        return [(f"folder {folder}", Path(folder) / source.repo)]
    out = [(f"${env}", local_root(env, default) / source.repo)]
    if not source.urls:
        for repo in (source.repo, *source.aliases):
            snap = _hf_snapshot(repo, source.repo_type)
            if snap is not None:
                out.append(("Hugging Face cache", snap))
    return out


def find(source: Source, folder: Path | None = None, env: str = WEIGHTS_ENV, default: str = "weights") -> Path | None:
    """The first folder holding every file of ``source``, or None."""
    for _, place in candidates(source, folder, env, default):
        if all(_has(place, f) for f in source.files):
            return place
    return None


def missing(source: Source, folder: Path | None = None, env: str = WEIGHTS_ENV, default: str = "weights") -> list[str]:
    """``<repo>/<file>`` for each file not found (all of them when no single folder has them all)."""
    if find(source, folder, env, default) is not None:
        return []
    places = candidates(source, folder, env, default)
    # Name the files absent from the most complete candidate, so a half-finished download says what is left.
    best = max(places, key=lambda p: sum(_has(p[1], f) for f in source.files))[1] if places else None
    return [f"{source.repo}/{f}" for f in source.files if best is None or not _has(best, f)]


def fetch_hint(sources: Iterable[Source], folder: Path | None = None, env: str = WEIGHTS_ENV,
               default: str = "weights") -> str:
    """The commands that fetch ``sources``, and where else the files may be put."""
    sources = list(sources)
    root = Path(folder) if folder is not None else local_root(env, default)
    lines = ["fetch them with:"] + [f"  {line}" for s in sources
                                    for line in s.fetch_command(root, local=folder is not None).splitlines()]
    if folder is None:
        lines.append(f"(hf download fills the Hugging Face cache {hf_cache()}; the files may instead be put "
                     f"under {root}/<repo>/, set {env} to move that folder)")
    return "\n".join(lines)


HEAD = 1 << 20  # bytes hashed from each end of a large file


def fingerprint(paths: Iterable[Path]) -> str:
    """10 hex digits identifying the files' content, cheaply.

    A file up to 2 MiB is hashed whole; a larger one by its size, its first and its last MiB (a torch
    zip or safetensors file starts with its key table and ends with tensor data, so both ends differ
    between two fine-tunes of one architecture). Names are not hashed: a renamed copy keeps its identity.
    """
    h = hashlib.sha256()
    for path in paths:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if size <= 2 * HEAD:
                h.update(f.read())
            else:
                h.update(str(size).encode())
                h.update(f.read(HEAD))
                f.seek(size - HEAD)
                h.update(f.read(HEAD))
        h.update(b"\0")
    return h.hexdigest()[:10]
