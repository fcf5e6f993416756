"""Prompt suites: fixed, ordered lists of prompts with stable ids.

Built in: the tiny world's ``tiny-train`` and ``tiny-eval`` (disjoint captions). A user suite is a
local file: ``.txt`` (one prompt per line), ``.csv`` (a ``prompt`` column, optional ``id`` and
``category``) or ``.jsonl`` (objects with ``prompt`` and optional ``id``, ``category``).
A malformed file is refused with a message naming the file, the line and the problem.

Standard suites (``STANDARD``: ``parti``, ``drawbench``, ``hpdv2``, ``pickapic-test``) are read from
their published files, fetched once: from ``$BENCH_PROMPTS/<repo>/`` (default
``~/.cache/diffusion-pref-bench/prompts``) or the Hugging Face cache, never from the network
(metrics/core/weights.py does the lookup). A missing file is named with the command that fetches it.
Prompt ids are positions in the published file, so they stay stable across fetches; the text is kept
verbatim.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from metrics.core import weights as hubfiles


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


# -- standard suites: published prompt files, read offline ------------------------------------------------
PROMPTS_ENV = "BENCH_PROMPTS"
HPD_STYLES = ("anime", "concept-art", "paintings", "photo")
# The Imagen authors' DrawBench sheet as CSV (the export HELM's draw_bench_scenario.py reads).
DRAWBENCH_CSV = ("https://docs.google.com/spreadsheets/d/1y7nAbmR4FREi6npB1u-Bo3GFdwdOPYJc617rBOxIRHY/"
                 "gviz/tq?tqx=out:csv&sheet=Sheet1")


@dataclass(frozen=True)
class Standard:
    source: hubfiles.Source
    read: Callable[[Path], tuple[Prompt, ...]]  # the folder holding the source's files -> prompts
    description: str  # "{n}" and "{c}" are replaced by the numbers of prompts and of categories


def _read_parti(folder: Path) -> tuple[Prompt, ...]:
    # Plain tab-separated lines, no quoting: prompt 1561 starts with a double quote ("G I G G L E" ...).
    path = folder / "PartiPrompts.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    if header[:3] != ["Prompt", "Category", "Challenge"]:
        raise SuiteError(f"{path}: expected the columns Prompt, Category, Challenge(, Note); found {header}")
    prompts = []
    for i, line in enumerate(lines[1:]):
        cols = line.split("\t") + [""] * 4
        prompts.append(Prompt(f"{i:04d}", cols[0], cols[1], {"challenge": cols[2], "note": cols[3]}))
    return tuple(prompts)


def _read_drawbench(folder: Path) -> tuple[Prompt, ...]:
    path = folder / "DrawBench.csv"
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    col = {name: header.index(name) for name in ("prompts", "prompt", "category") if name in header}
    text_col = col.get("prompts", col.get("prompt"))
    if text_col is None or "category" not in col:
        raise SuiteError(f"{path}: expected the columns Prompts and Category of the DrawBench sheet; found {rows[:1]}")
    rows = [r for r in rows[1:] if len(r) > text_col and r[text_col].strip()]
    return tuple(Prompt(f"{i:03d}", r[text_col], r[col["category"]] or None) for i, r in enumerate(rows))


def _read_hpdv2(folder: Path) -> tuple[Prompt, ...]:
    prompts = []
    for style in HPD_STYLES:
        path = folder / "benchmark" / f"{style}.json"
        texts = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise SuiteError(f"{path}: expected a JSON array of prompt strings")
        # ids as the HPS v2 benchmark names its images: <style>/<index:05d>.jpg
        prompts += [Prompt(f"{style}-{i:05d}", t, style) for i, t in enumerate(texts)]
    return tuple(prompts)


def _read_pickapic_test(folder: Path) -> tuple[Prompt, ...]:
    import pyarrow.parquet as pq

    seen: set[str] = set()
    prompts = []
    files = sorted((folder / "data").glob("test_unique-*.parquet"))
    captions = [c for f in files for c in pq.read_table(f, columns=["caption"]).column("caption").to_pylist()]
    for i, caption in enumerate(captions):  # id: row in the split; repeated and empty captions are dropped
        if caption and caption.strip() and caption not in seen:
            seen.add(caption)
            prompts.append(Prompt(f"{i:05d}", caption))
    return tuple(prompts)


STANDARD = {
    "drawbench": Standard(
        hubfiles.Source("imagen/DrawBench", ("DrawBench.csv",), urls=(DRAWBENCH_CSV,)), _read_drawbench,
        "DrawBench (Saharia et al. 2022, arXiv:2205.11487): {n} prompts in {c} categories"),
    "hpdv2": Standard(
        hubfiles.Source("zhwang/HPDv2", tuple(f"benchmark/{s}.json" for s in HPD_STYLES), repo_type="dataset"),
        _read_hpdv2, "HPD v2 benchmark (Wu et al. 2023, arXiv:2306.09341): {n} prompts, the {c} styles as categories"),
    "parti": Standard(
        hubfiles.Source("nateraw/parti-prompts", ("PartiPrompts.tsv",), repo_type="dataset"), _read_parti,
        "PartiPrompts (Yu et al. 2022, arXiv:2206.10789): {n} prompts in {c} categories (challenge in meta)"),
    "pickapic-test": Standard(
        hubfiles.Source("yuvalkirstain/pickapic_v2_no_images", ("data/test_unique-*.parquet",), repo_type="dataset"),
        _read_pickapic_test, "Pick-a-Pic v2 test_unique captions (Kirstain et al. 2023): {n} distinct prompts"),
}


def _standard_folder(name: str) -> Path | None:
    return hubfiles.find(STANDARD[name].source, env=PROMPTS_ENV, default="prompts")


def _load_standard(name: str) -> Suite:
    std = STANDARD[name]
    folder = _standard_folder(name)
    if folder is None:
        missing = hubfiles.missing(std.source, env=PROMPTS_ENV, default="prompts")
        raise SuiteError(f"suite {name!r} needs {', '.join(missing)}, which is not on this machine; "
                         + hubfiles.fetch_hint([std.source], env=PROMPTS_ENV, default="prompts"))
    try:
        prompts = std.read(folder)
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as e:
        if isinstance(e, SuiteError):
            raise
        raise SuiteError(f"suite {name!r}: cannot read its files in {folder} ({e})") from None
    if not prompts:
        raise SuiteError(f"suite {name!r}: its files in {folder} hold no prompts")
    categories = {p.category for p in prompts if p.category}
    return Suite(name, prompts, std.description.format(n=len(prompts), c=len(categories)))


def available() -> list[str]:
    """Built-in suites, and the standard suites whose files are on this machine."""
    return sorted(list(BUILTIN) + [n for n in STANDARD if _standard_folder(n) is not None])


def catalogue() -> list[tuple[str, str]]:
    """Every known suite with what a user needs to know: its description where it is on this machine, else
    that it is not and the command that fetches it."""
    rows = []
    for name in sorted([*BUILTIN, *STANDARD]):
        if name in BUILTIN or _standard_folder(name) is not None:
            rows.append((name, load(name).description))
        else:
            hint = hubfiles.fetch_hint([STANDARD[name].source], env=PROMPTS_ENV, default="prompts")
            rows.append((name, f"not on this machine; {hint}"))
    return rows


def load(name: str) -> Suite:
    """A built-in or standard suite by name, or a suite file by path."""
    if name in BUILTIN:
        return BUILTIN[name]()
    if name in STANDARD:
        return _load_standard(name)
    path = Path(name)
    if path.suffix in (".txt", ".csv", ".jsonl") and path.is_file():
        return read_file(path)
    if path.suffix in (".txt", ".csv", ".jsonl"):
        raise SuiteError(f"suite file {path} does not exist")
    raise SuiteError(f"unknown suite {name!r}; available: {', '.join(available())}, "
                     f"standard suites (fetched once): {', '.join(sorted(STANDARD))}, "
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
