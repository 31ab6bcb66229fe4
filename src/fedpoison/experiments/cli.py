"""Sub-commands ``grid``, ``results``, ``report`` and ``demo`` (registered on import by the CLI)."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from fedpoison.cli import command, console, err_console
from fedpoison.errors import ConfigError
from fedpoison.output import escape
from fedpoison.output import print_wide as _print_wide
from fedpoison.safe_fs import refuse_link


def print_wide(renderable: Any, **kwargs: Any) -> None:
    """Print at the terminal's width, or unwrapped into a pipe or file (see :func:`fedpoison.output.print_wide`)."""
    _print_wide(renderable, console=console, **kwargs)


def _eta(seconds: float) -> str:
    if math.isnan(seconds):
        return "ETA –"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"ETA {h:d}:{m:02d}:{s:02d}" if h else f"ETA {m:d}:{s:02d}"


def _run_line(event: Any) -> str:
    p, run, outcome = event.progress, event.run, event.outcome
    n = f"[{p.finished}/{p.to_run}]"
    if outcome.ok:
        s = event.summary or {}
        bits = []
        if isinstance(s.get("final_accuracy"), float):
            bits.append(f"acc {s['final_accuracy']:.3f}")
        if isinstance(s.get("attack_success_rate"), float):
            bits.append(f"ASR {s['attack_success_rate']:.3f}")
        if s.get("diverged"):
            bits.append("[yellow]diverged[/yellow]")
        bits.append(f"{outcome.wall_s:.1f}s")
        return f"[green]done[/green]   {n} {escape(run.label)}  " + "  ".join(bits)
    last = outcome.error.strip().splitlines()[-1] if outcome.error.strip() else "unknown error"
    return f"[red]failed[/red] {n} {escape(run.label)}  {escape(last)}"


def run_grid_cli(grid: Any, out: Path, *, workers: int | None, executor: str, retry_failed: bool,
                 quiet: bool = False, options: dict[str, Any] | None = None, threads_per_run: int = 1,
                 checkpoint_every: int | None = None, track: list[str] | None = None) -> Any:
    """Run ``grid`` into ``out`` with a progress bar and a line per finished run; return the counts.

    The bar has one row for the grid (runs done, failed, ETA) and one per run in
    flight (its round, accuracy and ETA), updated after every round. ``track``
    names experiment trackers that log each run as it commits.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fedpoison.experiments.executor import make_executor
    from fedpoison.experiments.runner import DEFAULT_CHECKPOINT_EVERY, run_grid
    from fedpoison.experiments.store import ResultStore
    from fedpoison.tracking import GridTracking

    store = ResultStore(out)
    n = workers if workers is not None else max(1, min(os.cpu_count() or 1, len(grid)))
    name = "inline" if n == 0 and executor == "local" else executor
    every = DEFAULT_CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[unit]}"), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console, disable=quiet, transient=False) as bar, \
            make_executor(name, workers=max(n, 1), **(options or {})) as ex:
        task = bar.add_task("[bold]grid", total=len(grid), info="", unit="runs")
        tracking = GridTracking(track or [], folder=out, experiment=grid.name)
        rows: dict[str, Any] = {}  # key -> (bar task, first report time, round of that report)

        def run_row(event: Any) -> None:
            rep, key = event.report, event.run.key
            if key not in rows:
                label = escape(event.run.label if len(event.run.label) <= 48 else event.run.label[:47] + "…")
                rows[key] = (bar.add_task(f"  {label}", total=rep["rounds"], info="", unit="rounds"),
                             time.time(), int(rep.get("resumed_from", 0)))
            row, t0, r0 = rows[key]
            bits = []
            if "test_accuracy" in rep:
                bits.append(f"acc {rep['test_accuracy']:.3f}")
            if rep["round"] > r0:
                bits.append(_eta((time.time() - t0) / (rep["round"] - r0) * (rep["rounds"] - rep["round"])))
            if r0:
                bits.append(f"(resumed at round {r0})")
            bar.update(row, completed=rep["round"], info="  ".join(bits), refresh=True)

        def on_event(event: Any) -> None:
            tracking(event)
            p = event.progress
            info = f"failed {p.failed + p.failed_before}  {_eta(p.eta_s())}"
            if event.kind == "start":
                for key, reason in p.damaged:
                    bar.console.print(f"[yellow]damaged[/yellow] run {key} ({reason}): moved to "
                                      f"{out / 'damaged'}/, recomputed if this grid has it",
                                      highlight=False, soft_wrap=True)
                bits = [f"{p.total} runs", f"{p.to_run} to run"]
                if p.skipped:
                    bits.append(f"{p.skipped} already finished")
                if p.failed_before:
                    bits.append(f"{p.failed_before} failed before (--retry-failed reruns them)")
                if grid.merged:
                    bits.append(f"{grid.merged} duplicate configs merged")
                if not quiet:
                    bar.console.print(f"grid [bold]{escape(grid.name)}[/bold] -> {escape(out)}: " + ", ".join(bits)
                                      + f"; executor {name}, {ex.workers} worker(s)", soft_wrap=True)
                bar.update(task, completed=p.skipped + p.failed_before, info=info)
            elif event.kind == "round":
                run_row(event)
                bar.update(task, info=info)
            elif event.kind == "run":
                if event.run.key in rows:
                    bar.remove_task(rows.pop(event.run.key)[0])
                if not quiet:
                    bar.console.print(_run_line(event), highlight=False, soft_wrap=True)
                bar.update(task, completed=p.skipped + p.failed_before + p.finished, info=info)
            else:
                bar.update(task, info=f"failed {p.failed + p.failed_before}")

        return run_grid(grid, store, ex, retry_failed=retry_failed, on_event=on_event, threads_per_run=threads_per_run,
                        checkpoint_every=every)


# ---- grid --------------------------------------------------------------------------
def _configure_grid(p: argparse.ArgumentParser) -> None:
    p.add_argument("grid", type=Path, help="grid file (YAML: base config + axes; see docs/experiments.md)")
    p.add_argument("--out", type=Path, default=None, help="results directory (default runs/<grid name>)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: one per core, at most one per run; 0 = this process)")
    p.add_argument("--executor", default="local", metavar="NAME",
                   help="where runs are computed: local (default), inline (this process) or ray")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="--executor ray: the cluster to use (default: start a private local instance)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="--executor ray: CPUs each run declares")
    p.add_argument("--gpus-per-run", type=float, default=0.0,
                   help="--executor ray: GPUs (or a fraction) each non-CPU run declares")
    p.add_argument("--retry-failed", action="store_true", help="rerun the runs that failed before")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="K",
                   help="checkpoint each run every K rounds, so a killed grid resumes its runs in progress "
                        "(default 10; 0 = never)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run, e.g. --set dataset.name=fashion-mnist")
    p.add_argument("--threads-per-run", type=int, default=1, metavar="N",
                   help="torch threads each run computes with (default 1); results do not depend on --workers")
    p.add_argument("--track", default=None, metavar="NAME[,NAME]",
                   help="log each finished run to experiment trackers: tensorboard, mlflow, wandb (into --out)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-run lines")


@command("grid", "run a grid of experiments (resumable) into a results directory")
def cmd_grid(args: argparse.Namespace) -> int:
    """The ``fedpoison grid`` command."""
    from fedpoison.experiments.executor import executor_class, prestart
    from fedpoison.experiments.grid import describe, load_grid

    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every: expected an integer >= 0, got {args.checkpoint_every}")
    executor_class(args.executor)  # an unknown name fails here, before any work
    if not args.dry_run and args.workers != 0:
        prestart(args.executor)
    grid = load_grid(args.grid, args.overrides, plugins=args.plugins)
    if args.dry_run:
        for line in describe(grid):
            console.print(escape(line), highlight=False)
        extra = f", {grid.excluded} excluded" if grid.excluded else ""
        extra += f", {grid.merged} duplicates merged" if grid.merged else ""
        console.print(f"{len(grid)} runs{extra}")
        return 0
    if args.threads_per_run < 1:
        raise ConfigError(f"--threads-per-run: expected an integer >= 1, got {args.threads_per_run}")
    out = args.out or Path("runs") / grid.name
    from fedpoison.safe_fs import ensure_writable_dir

    ensure_writable_dir(out, "--out")  # before any run is computed
    options: dict[str, Any] = {}
    if args.executor == "ray":
        options = {"address": args.address, "cpus_per_run": args.cpus_per_run, "gpus_per_run": args.gpus_per_run}
    elif args.address is not None:
        raise ConfigError(f"--address: only used with --executor ray, got --executor {args.executor}")
    from fedpoison.tracking import parse_track

    track = parse_track(args.track, *(r.config.track for r in grid.runs))
    progress = run_grid_cli(grid, out, workers=args.workers, executor=args.executor,
                            retry_failed=args.retry_failed, quiet=args.quiet, options=options,
                            threads_per_run=args.threads_per_run, checkpoint_every=args.checkpoint_every,
                            track=track)
    failed = progress.failed + progress.failed_before
    console.print(f"{progress.skipped + progress.done}/{progress.total} runs finished, {failed} failed; "
                  f"results in [bold]{escape(out)}[/bold]", soft_wrap=True)
    if failed:
        console.print(f"see {escape(out)}/failed/<key>/error.txt; rerun the failures with --retry-failed", soft_wrap=True)
    return 1 if failed else 0


cmd_grid.configure = _configure_grid  # type: ignore[attr-defined]


def warn_damaged(results: Any, directory: Path) -> None:
    """Name every damaged run on stderr (they are left out of the tables)."""
    for key, reason in zip(results.damaged["key"], results.damaged["reason"], strict=True):
        err_console.print(f"[yellow]warning:[/yellow] run {key} is damaged ({reason}) and left out; "
                          f"`fedpoison grid` recomputes it, `fedpoison store check {directory} --repair` moves "
                          "it aside", highlight=False, soft_wrap=True)


# ---- results -----------------------------------------------------------------------
def _configure_results(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="results directory written by `fedpoison grid`")
    p.add_argument("--format", default="markdown", choices=["csv", "parquet", "markdown"],
                   help="markdown: the mean ± spread table on stdout; csv/parquet: runs, rounds and seeds tables")
    p.add_argument("--out", "-o", type=Path, default=None,
                   help="where to write (csv/parquet: a folder, default DIR/tables; markdown: a file)")
    p.add_argument("--last-k", type=int, default=None, help="evaluations averaged into final numbers")
    p.add_argument("--target", type=float, default=None, help="target accuracy for rounds-to-target")
    _add_stat(p)


def _add_stat(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stat", default="std", choices=["std", "sem", "ci95"],
                   help="spread next to each mean over seeds: std (default), sem (standard error) or ci95 "
                        "(95%% confidence interval half-width, Student's t)")


@command("results", "export a results directory as tables (csv, parquet, markdown)")
def cmd_results(args: argparse.Namespace) -> int:
    """The ``fedpoison results`` command."""
    from fedpoison.results import export, load

    results = load(args.dir, last_k=args.last_k, target=args.target)
    warn_damaged(results, args.dir)
    if args.format == "markdown":
        text = export(results, "markdown", args.out, stat=args.stat)
        if args.out is None:
            print(text, end="")
        else:
            console.print(f"wrote {escape(args.out)}")
        return 0
    if args.out is None:
        refuse_link(args.dir / "tables", "the results folder's tables/")  # never written through a link
    paths = export(results, args.format, args.out or args.dir / "tables")
    for path in paths:
        console.print(f"wrote {escape(path)}")
    return 0


cmd_results.configure = _configure_results  # type: ignore[attr-defined]


# ---- report ------------------------------------------------------------------------
def _configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="results directory written by `fedpoison grid`")
    p.add_argument("-o", "--out", type=Path, default=None, help="report folder (default DIR/report)")
    _add_stat(p)


def attack_defense_table(results: Any, stat: str = "std") -> Table:
    """Final accuracy (and ASR for targeted attacks), attack x defense, mean ± ``stat`` over seeds."""
    from fedpoison.results.export import format_mean_std
    from fedpoison.results.stats import STAT_LABELS, spread

    runs = results.runs
    attacks = list(dict.fromkeys(runs["attack_label"]))
    defenses = list(dict.fromkeys(runs["defense_label"]))
    table = Table(title=f"final accuracy (ASR for backdoors), {STAT_LABELS[stat]}")
    table.add_column("attack \\ defense", style="bold")
    for d in defenses:
        table.add_column(escape(d), justify="right")
    has_asr = "attack_success_rate" in runs
    for a in attacks:
        cells = []
        for d in defenses:
            sub = runs[(runs["attack_label"] == a) & (runs["defense_label"] == d)]
            if sub.empty:
                cells.append("–")
                continue
            acc = sub["final_accuracy"].astype(float)
            text = format_mean_std(float(acc.mean()), spread(acc, stat))
            if "diverged" in sub and sub["diverged"].astype(bool).any():
                text = "diverged" if acc.isna().all() else text + " (div.)"
            if has_asr and sub["attack_success_rate"].notna().any():
                text += f" (ASR {sub['attack_success_rate'].mean():.2f})"
            cells.append(text)
        table.add_row(escape(a), *cells)
    return table


@command("report", "write an HTML report, figures (PNG, PDF) and tables (Markdown, LaTeX)")
def cmd_report(args: argparse.Namespace) -> int:
    """The ``fedpoison report`` command."""
    from fedpoison.results import load
    from fedpoison.results.findings import check_findings
    from fedpoison.results.report import write_report

    results = load(args.dir)
    warn_damaged(results, args.dir)
    if args.out is None:
        refuse_link(args.dir / "report", "the results folder's report/")  # never written through a link
    out = args.out or args.dir / "report"
    report = write_report(args.dir, out, results=results, findings=check_findings(results), stat=args.stat)
    print_wide(attack_defense_table(results, args.stat))
    console.print(f"{len(report.figures)} figures in {escape(out / 'figures')}, {len(report.tables)} tables in "
                  f"{escape(out / 'tables')}")
    console.print(f"report: [bold]{escape(report.html)}[/bold]", soft_wrap=True)
    return 0


cmd_report.configure = _configure_report  # type: ignore[attr-defined]


# ---- demo --------------------------------------------------------------------------
def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="results directory (default runs/demo)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (default: cores)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per configuration (default 2)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per run (default 10)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-run lines")


@command("demo", "run a small attack x defense grid on digits and write its report (a few minutes)")
def cmd_demo(args: argparse.Namespace) -> int:
    """The ``fedpoison demo`` command."""
    from fedpoison.experiments.demo import demo_grid
    from fedpoison.experiments.executor import prestart
    from fedpoison.experiments.grid import load_grid
    from fedpoison.results import load
    from fedpoison.results.findings import check_findings
    from fedpoison.results.report import write_report

    if args.seeds < 1:
        raise ConfigError(f"--seeds: expected an integer >= 1, got {args.seeds}")
    start = time.perf_counter()
    if args.workers != 0:
        prestart("local")
    grid = load_grid(demo_grid(args.seeds, args.rounds), args.overrides, plugins=args.plugins)
    progress = run_grid_cli(grid, args.out, workers=args.workers, executor="local", retry_failed=True,
                            quiet=args.quiet)
    results = load(args.out)
    findings = check_findings(results)
    report = write_report(args.out, args.out / "report", results=results, findings=findings,
                          title="fedpoison demo: attacks vs defenses on digits")
    print_wide(attack_defense_table(results))
    for f in findings:
        colour = {"holds": "green", "does not hold": "red"}.get(f.status, "dim")
        console.print(f"[{colour}]{f.status}[/{colour}]  {escape(f.claim)}: {escape(f.measured)}", highlight=False,
                      soft_wrap=True)
    console.print(f"{progress.skipped + progress.done}/{progress.total} runs in {time.perf_counter() - start:.0f}s; "
                  f"report: [bold]{escape(report.html)}[/bold]", soft_wrap=True)
    return 0 if progress.failed == 0 else 1


cmd_demo.configure = _configure_demo  # type: ignore[attr-defined]


# ---- store check -------------------------------------------------------------------
def _configure_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["check"], help="check: list what is damaged in a results directory")
    p.add_argument("dir", type=Path, help="results directory written by `fedpoison grid`")
    p.add_argument("--repair", action="store_true",
                   help="move damaged runs and links aside to DIR/damaged/ so the next grid recomputes them")


@command("store", "check a results directory for damaged runs (`store check DIR [--repair]`)")
def cmd_store(args: argparse.Namespace) -> int:
    """List the damaged entries of a results directory; with ``--repair``, move them aside."""
    from fedpoison.experiments.store_check import check_store, repair_store

    report = check_store(args.dir)
    for item in report.problems:
        console.print(f"[red]damaged[/red] {item.path}: {item.reason}", highlight=False, soft_wrap=True)
    console.print(f"{report.finished} finished runs verified, {len(report.problems)} damaged entries",
                  soft_wrap=True)
    if not report.problems:
        return 0
    if not args.repair:
        console.print(f"rerun with --repair to move them to {args.dir / 'damaged'}/", soft_wrap=True)
        return 1
    for src, dst in repair_store(args.dir):
        console.print(f"moved {src} -> {dst}", highlight=False, soft_wrap=True)
    return 0


cmd_store.configure = _configure_store  # type: ignore[attr-defined]
