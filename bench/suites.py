"""Prompt suites: fixed, ordered lists of prompts with stable ids.

Built in: the tiny world's ``tiny-train`` and ``tiny-eval`` (disjoint captions). A user suite is a
local file: ``.txt`` (one prompt per line), ``.csv`` (a ``prompt`` column, optional ``id`` and
``category``) or ``.jsonl`` (objects with ``prompt`` and optional ``id``, ``category``).
A malformed file is refused with a message naming the file, the line and the problem.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path


class SuiteError(ValueError):
    pass


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    text: str
    category: str | None = None
    meta: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Suite:
    name: str
    prompts: tuple[Prompt, ...]
    description: str = ""

    @property
    def sha256(self) -> str:
        blob = "\n".join(f"{p.prompt_id}\t{p.text}" for p in self.prompts)
        return hashlib.sha256(blob.encode()).hexdigest()


def _tiny(which: str) -> Suite:
    from bench.tiny import world

    train, evals = world.split_captions()
    caps = train if which == "train" else evals
    prompts = tuple(Prompt(f"{i:04d}", c.text, c.category,
                           {"shape": c.shape, "colour": c.colour, "background": c.background, "size": c.size or "medium"})
                    for i, c in enumerate(caps))
    return Suite(f"tiny-{which}", prompts, f"tiny world, {len(prompts)} {which} captions")


BUILTIN = {
    "tiny-eval": lambda: _tiny("eval"),
    "tiny-train": lambda: _tiny("train"),
}


def available() -> list[str]:
    return sorted(BUILTIN)


def load(name: str) -> Suite:
    """A built-in suite by name, or a suite file by path."""
    if name in BUILTIN:
        return BUILTIN[name]()
    path = Path(name)
    if path.suffix in (".txt", ".csv", ".jsonl") and path.is_file():
        return read_file(path)
    if path.suffix in (".txt", ".csv", ".jsonl"):
        raise SuiteError(f"suite file {path} does not exist")
    raise SuiteError(f"unknown suite {name!r}; available: {', '.join(available())}, "
                     f"or a path to a .txt, .csv or .jsonl file")


def read_file(path: Path) -> Suite:
    rows: list[tuple[str | None, str, str | None]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(f"suite file {path} is not UTF-8 text ({e})") from None
    if path.suffix == ".txt":
        rows = [(None, line.strip(), None) for line in text.splitlines() if line.strip()]
    elif path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise SuiteError(f"suite file {path} has no 'prompt' column (columns: {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            if not (row.get("prompt") or "").strip():
                raise SuiteError(f"suite file {path}, line {line}: empty prompt")
            rows.append((row.get("id") or None, row["prompt"].strip(), row.get("category") or None))
    else:
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise SuiteError(f"suite file {path}, line {line}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not str(obj.get("prompt", "")).strip():
                raise SuiteError(f"suite file {path}, line {line}: expected an object with a non-empty 'prompt'")
            rows.append((str(obj["id"]) if "id" in obj else None, str(obj["prompt"]).strip(), obj.get("category")))
    if not rows:
        raise SuiteError(f"suite file {path} holds no prompts")
    prompts = tuple(Prompt(pid or f"{i:05d}", text, cat) for i, (pid, text, cat) in enumerate(rows))
    ids = [p.prompt_id for p in prompts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SuiteError(f"suite file {path}: duplicate prompt id {dup!r}")
    return Suite(path.stem, prompts, f"file {path}")
