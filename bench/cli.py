"""The ``bench`` command: a thin layer that parses, plans and calls the runner or the report.

Exit codes: 0 success; 1 a failure during work (the failing run is recorded in the store);
2 bad input (unknown name, malformed value, unwritable --db), reported before any work starts.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.config import UsageError, parse_list, parse_sets

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="diffusion-pref-bench: compare preference-alignment methods for text-to-image diffusion.")
console = Console(stderr=True)
DEFAULT_DB = Path("results/bench.duckdb")
MIN_RESAMPLES, MAX_RESAMPLES = 1000, 100_000  # fewer: a too-coarse 95% percentile; more: minutes for no gain


def _fail_usage(e: Exception) -> None:
    console.print(f"[bold red]error:[/bold red] {e}", highlight=False)
    raise typer.Exit(2)


class _Bars:
    """rich progress bars, one per task name, created on first use."""

    def __init__(self, progress: Progress):
        self.progress, self.tasks = progress, {}

    def __call__(self, name: str, done: int, total: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total)
        self.progress.update(self.tasks[name], completed=done, total=total)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _run_counts(runs: list) -> str:
    """'base x2, dpo x3, npo': each method once, with its number of runs (replicates, matched bases), then
    the number of intermediate checkpoints sampled."""
    counts = Counter(r.method for r in runs if r.checkpoint_step is None)
    snapshots = sum(r.checkpoint_step is not None for r in runs)
    return (", ".join(m + (f" x{n}" if n > 1 else "") for m, n in counts.items())
            + (f"; {snapshots} intermediate checkpoints" if snapshots else ""))


def _seed_text(seeds: list[int]) -> str:
    """'seeds 0-1' for a range, 'seeds 0, 2, 5' for a few, 'N seeds from a to b' for many."""
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"seeds {seeds[0]}-{seeds[-1]} ({len(seeds)})"
    if len(seeds) <= 8:
        return "seeds " + ", ".join(map(str, seeds))
    return f"{len(seeds)} seeds from {seeds[0]} to {seeds[-1]}"


@app.command()
def run(
    methods: Annotated[Optional[str], typer.Option(help="Comma-separated method ids (default: all).")] = None,
    model: Annotated[str, typer.Option(help="Model alias (tiny, tiny-micro, sd15, sdxl), folder or repo id.")] = "tiny",
    vae: Annotated[Optional[str], typer.Option(help="Replace the model's VAE: fp16-fix (madebyollin/sdxl-vae-fp16-fix), "
                                                   "a diffusers AutoencoderKL folder or repo id.")] = None,
    suite: Annotated[str, typer.Option(help="Prompt suite name or a .txt/.csv/.jsonl file.")] = "tiny-eval",
    seeds: Annotated[str, typer.Option(help="Seeds per prompt, e.g. 0-3 or 0,2,5; at most 10,000 seeds, "
                                       "each from 0 to 2147483647 (2**31 - 1).")] = "0-1",
    train_seeds: Annotated[Optional[str], typer.Option(help="Train each trained method once per seed, e.g. 0-2: "
                                                       "replicates whose spread the report's intervals include "
                                                       "(default: once, with the method's seed setting).")] = None,
    eval_every: Annotated[int, typer.Option(help="Also keep each trained method's model every N training steps and "
                                            "sample it on --eval-prompts prompts: the report's over-optimisation "
                                            "curves (0: only the final model).")] = 0,
    eval_prompts: Annotated[int, typer.Option(help="Prompts of the suite the intermediate checkpoints are drawn on "
                                              "(a fixed choice, every seed).")] = 50,
    rewards: Annotated[Optional[str], typer.Option(help="Comma-separated reward ids (default: per model).")] = None,
    db: Annotated[Path, typer.Option(help="DuckDB file; images and checkpoints go beside it.")] = DEFAULT_DB,
    set_: Annotated[list[str], typer.Option("--set", help="Override a setting: method.field=value, "
                                             "sampler.steps=30, data.pickapic=DIR. Repeatable.")] = [],
    device: Annotated[str, typer.Option(help="Torch device: cpu, cuda, cuda:1, mps, or auto; one this machine "
                                        "has.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16, fp16 (weights of the frozen parts, autocast of training; "
                                           "master weights stay fp32), or auto: bf16 for sd15/sdxl on a GPU, "
                                           "else fp32.")] = "auto",
    processes: Annotated[int, typer.Option(help="Local processes, through accelerate's launcher (one per GPU; on "
                                           "CPU they share the cores). Same as `accelerate launch --multi_gpu "
                                           "--num_processes N -m bench run ...`.")] = 1,
) -> None:
    """Train what needs training, sample missing images, score them, and store everything."""
    from rich.errors import MarkupError
    from rich.markup import escape

    from bench import distributed, models, runner
    from bench import plan as planning

    try:
        device = models.auto_device(device)
        if processes < 1:
            raise UsageError(f"--processes must be >= 1, got {processes}")
        if processes > 1 and distributed.launched_world() > 1:
            raise UsageError("--processes starts its own launch; under `accelerate launch` leave it out")
        planning.check_device(device, processes)
        the_plan = planning.make_plan(methods, model, suite, seeds, rewards, db, parse_sets(set_), device, vae,
                                       precision, train_seeds, eval_every, eval_prompts)
        planning.preflight(the_plan)
    except (UsageError, KeyError) as e:
        _fail_usage(UsageError(escape(str(e))))  # names are user data: "[/x]" is not rich markup
    if processes > 1:  # checked here, run by the launched processes (whose main one reports)
        args = [*(["--methods", methods] if methods else []), "--model", model, *(["--vae", vae] if vae else []),
                "--suite", suite, "--seeds", seeds, *(["--train-seeds", train_seeds] if train_seeds else []),
                "--eval-every", str(eval_every), "--eval-prompts", str(eval_prompts),
                *(["--rewards", rewards] if rewards else []), "--db", str(db), "--device", device,
                "--precision", precision,
                *(a for s in set_ for a in ("--set", s))]
        raise typer.Exit(distributed.launch(processes, args, device))
    procs = distributed.Processes.from_env(device)
    if not procs.is_main:  # the main process reports for all
        raise typer.Exit(runner.execute(the_plan, lambda *a: None, lambda msg: None, procs))
    for note in the_plan.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"plan: {len(the_plan.runs)} runs ({_run_counts(the_plan.runs)}) on "
                  f"{the_plan.model.name}, suite {the_plan.suite.name} ({len(the_plan.suite.prompts)} "
                  f"prompts) x {_seed_text(the_plan.seeds)}, rewards {', '.join(the_plan.rewards)}, device {device}"
                  + (f", {procs.world} processes" if procs.world > 1 else ""), markup=False)
    with _progress() as progress:
        def log(message: str) -> None:
            try:
                progress.console.print(message)
            except MarkupError:  # an error message quoting something that reads as a closing tag: "[/x]"
                progress.console.print(message, markup=False)

        code = runner.execute(the_plan, _Bars(progress), log, procs)
    if code:
        console.print("[bold red]some runs failed[/bold red]; their errors are in the runs table (status 'failed')")
    else:
        console.print(f"done: results in {the_plan.db}; next: bench report --db {the_plan.db}", markup=False)
    raise typer.Exit(code)


@app.command()
def report(
    format: Annotated[str, typer.Option("--format", help="md, html, json or csv.")] = "md",
    db: Annotated[Path, typer.Option(help="DuckDB file to read.")] = DEFAULT_DB,
    out: Annotated[Optional[Path], typer.Option(help="Output file (default: reports/report.<ext>); md and html "
                                                "put their charts and images in <name>_files/ beside it.")] = None,
    suite: Annotated[Optional[str], typer.Option(help="Only these suites (comma-separated).")] = None,
    methods: Annotated[Optional[str], typer.Option(help="Only these methods (comma-separated); base is always "
                                                   "shown.")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 1000,
    amortise: Annotated[int, typer.Option(help="The compute-matched frontier spreads a run's training time over "
                                          "this many images.")] = 10_000,
) -> None:
    """Win rates against base with bootstrap CIs, means, rankings, categories, costs, charts and image grids,
    from the store only."""
    from rich.markup import escape
    from rich.text import Text

    from bench.report.data import check_filters
    from bench.report.writer import FORMATS, check_out, write
    from bench.store import Store, StoreError

    try:
        if len(parse_list(format, list(FORMATS), "format")) != 1:
            raise UsageError(f"--format takes one of {', '.join(FORMATS)}, got {format!r}")
        if not db.exists():
            raise UsageError(f"no results store at {db}; run `bench run` first or pass --db")
        if amortise < 1:
            raise UsageError(f"--amortise must be >= 1 image, got {amortise}")
        if not MIN_RESAMPLES <= resamples <= MAX_RESAMPLES:
            raise UsageError(f"--resamples must be from {MIN_RESAMPLES:,} to {MAX_RESAMPLES:,}, got {resamples:,}")
        check_out(format, out)
        store = Store(db, read_only=True)  # a report only reads: a read-only file or folder is fine
        suites = _names(suite, store.query("SELECT DISTINCT suite FROM images")["suite"])
        method_list = _names(methods, store.query("SELECT DISTINCT method FROM runs")["method"])
        check_filters(store, suites, method_list)
    except (UsageError, ValueError) as e:  # StoreError, or an unknown suite or method: names what is stored
        _fail_usage(UsageError(escape(str(e))))  # names are user data: "[/x]" is not rich markup
    try:
        path, text = write(store, format, out, Path("reports"), suites=suites, methods=method_list,
                           n_boot=resamples, amortise=amortise, warn=lambda w: console.print(Text.assemble(("warning: ", "yellow"), w)))
    except (OSError, StoreError) as e:  # the disk filled up, or a writer held the store past the lock timeout
        console.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False)
        raise typer.Exit(1)
    if format != "html":  # a page of markup is no use on a terminal
        typer.echo(text)
    console.print(f"written to {path}", markup=False, highlight=False)


def _names(text: str | None, stored) -> list[str] | None:
    """A --suite or --methods filter: the one stored name it spells (a suite file's name may hold a comma),
    else its comma-separated names; None for no filter."""
    if text is None:
        return None
    if text in set(stored):
        return [text]
    return [x.strip() for x in text.split(",") if x.strip()] or None


@app.command("list")
def list_(what: Annotated[str, typer.Argument(help="methods, models, suites, rewards or checkpoints")]) -> None:
    """List what is registered."""
    from bench import models, suites
    from bench.registry import METHODS, REWARDS

    tables = {
        "methods": lambda: [(m, METHODS.get(m).paper) for m in METHODS.available()],
        "rewards": lambda: [(r, REWARDS.get(r).description
                             + ("" if REWARDS.get(r).higher_is_better else " (lower is better)"))
                            for r in REWARDS.available()],
        "models": lambda: [(m, "built locally (tiny world)" if m in models.TINY_PRESETS else models.HUB_ALIASES[m])
                           for m in models.available()],
        "suites": suites.catalogue,
        "checkpoints": _checkpoint_rows,
    }
    if what not in tables:
        _fail_usage(UsageError(f"unknown list {what!r}; available: {', '.join(tables)}"))
    table = Table(what)
    table.add_column("", overflow="fold")  # a fetch command wraps, never ends in an ellipsis
    for name, info in tables[what]():
        table.add_row(name, info)
    Console().print(table)


def _checkpoint_rows() -> list[tuple[str, str]]:
    """Published checkpoints: what they are, the authors' sampler, whether the layout was checked, the fetch."""
    from bench import checkpoints

    return [(r["name"], f"{r['repo']}: {r['method']} on {r['base']}, {r['format']}, {r['paper']}, licence "
                        f"{r['license']}\nauthors' sampler: {r['sampler']} ({r['sampler_source']})"
                        + (f"\nmerge weight {r['merge_weight']}" if r["merge_weight"] else "")
                        + f"\nlayout checked: {r['checked']} ({r['check_note']})\nfetch: {r['fetch']}")
            for r in checkpoints.rows()]


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="A trained run's run_id (the runs table).")],
    out: Annotated[Path, typer.Option(help="A new folder to write the weights, model card and manifest into.")],
    db: Annotated[Path, typer.Option(help="DuckDB file the run is stored in.")] = DEFAULT_DB,
) -> None:
    """Write a trained run's weights in the layout diffusers loads (UNet2DConditionModel.from_pretrained(out,
    subfolder="unet") or pipe.load_lora_weights(out)), with a model card; evaluate it back with
    `bench run --methods METHOD@OUT`."""
    from rich.markup import escape

    from bench import export as exporting
    from bench.store import Store, StoreError

    try:
        store = Store(db, read_only=True)
        found = store.query("SELECT method, model, artifact_hash, config_json FROM runs WHERE run_id = ?", [run_id])
        if found.empty:
            raise UsageError(f"no run {run_id!r} in {db}")
        row = found.iloc[0]
        if str(row["artifact_hash"] or "").startswith("published-") or "@" in row["method"]:
            raise UsageError(f"run {run_id} sampled published weights; it has no trained artifact to export")
        artifact = store.root / "checkpoints" / f"{row['method']}-{row['artifact_hash']}"
        if not artifact.is_dir():
            raise UsageError(f"run {run_id} ({row['method']}) has no trained artifact at {artifact}: it trains "
                             "nothing, or its checkpoint was deleted (bench run trains it again)")
        config = json.loads(row["config_json"]) if row["config_json"] else None
        path = exporting.export(artifact, out, method=row["method"], base_model=row["model"], config=config)
    except (UsageError, StoreError, exporting.ExportError) as e:
        _fail_usage(UsageError(escape(str(e))))
    console.print(f"exported {run_id} to {path}; evaluate it back with: bench run --methods {row['method']}@{path}",
                  markup=False, highlight=False)


@app.command()
def prepare(
    what: Annotated[str, typer.Argument(help="tiny (the default world) or tiny-micro (test size)")],
    db: Annotated[Path, typer.Option(help="Results folder is the folder of this DuckDB file.")] = DEFAULT_DB,
    rebuild: Annotated[bool, typer.Option(help="Build the world from scratch beside the results, even where the "
                                          "project ships it (runs keep using the shipped one).")] = False,
) -> None:
    """Check the shipped tiny world, or build a world that is not shipped (otherwise built on first use)."""
    import time

    from bench import models
    from bench.tiny import data as tiny

    if what not in models.TINY_PRESETS:
        _fail_usage(UsageError(f"unknown target {what!r}; available: {', '.join(models.TINY_PRESETS)}"))
    start = time.perf_counter()
    with _progress() as progress:
        folder = tiny.ensure_all(db.parent, models.TINY_PRESETS[what], _Bars(progress), progress.console.print,
                                 rebuild=rebuild)
    console.print(f"{what}: {folder} ({time.perf_counter() - start:.0f} s)")


@app.command()
def verify(
    db: Annotated[Path, typer.Option(help="DuckDB file; its folder (images, checkpoints, cache, models) is "
                                    "checked.")] = DEFAULT_DB,
) -> None:
    """Check every file of a results folder against the sha256 recorded when it was written: images, trained
    checkpoints, cached encodings, tiny worlds. Exit 1 if anything is damaged (the next bench run repairs it)."""
    from rich.markup import escape

    from bench import verify as verifying

    if not db.is_file():
        _fail_usage(UsageError(escape(f"no results store at {db}; pass --db")))
    found = verifying.check(db)
    for path, why in found.damaged:
        typer.echo(f"damaged: {path}: {why}")
    typer.echo(found.summary())
    raise typer.Exit(1 if found.damaged else 0)


if __name__ == "__main__":
    app()
