"""Sub-command ``reproduce`` (registered on import by the CLI)."""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

from fedpoison.cli import command, console
from fedpoison.errors import ConfigError

#: The scales every reproduction file defines (``spec.SCALES``; not imported here, to keep ``--help`` light).
SCALES = ("smoke", "cpu", "paper")


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="reproduction name (see --list) or a reproduction YAML file")
    p.add_argument("--list", action="store_true", help="list the reproductions and exit")
    p.add_argument("--scale", default="cpu", choices=SCALES,
                   help="smoke: seconds, checks the pipeline; cpu: hours on 2 cores; paper: the full protocol")
    p.add_argument("--out", type=Path, default=None, help="results directory (default runs/repro/<name>-<scale>)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: one per core; 0 = this process)")
    p.add_argument("--executor", default="local", metavar="NAME",
                   help="where runs are computed: local (default), inline (this process) or ray")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT", help="--executor ray: the cluster to use")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="--executor ray: CPUs each run declares")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="--executor ray: GPUs (or a fraction) per run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run (e.g. dataset.path=..., device=cuda); "
                        "listed in the report")
    p.add_argument("--compare-only", action="store_true",
                   help="do not run anything: compare the runs finished so far and write the report")
    p.add_argument("--dry-run", action="store_true", help="list the runs of this scale and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-run lines")


def _list() -> int:
    from rich.table import Table

    from fedpoison.experiments.cli import print_wide
    from fedpoison.reproductions.spec import available, load_reproduction

    table = Table(title="reproductions (fedpoison reproduce NAME --scale smoke|cpu|paper)")
    for col in ("name", "paper", "table", "cells", "seeds (smoke/cpu/paper)"):
        table.add_column(col)
    for name in available():
        rep = load_reproduction(name)
        n = len(rep.rows) * len(rep.columns)
        seeds = "/".join(str(len(rep.scales[s].seeds)) for s in ("smoke", "cpu", "paper"))
        table.add_row(name, rep.title, rep.paper.table, f"{n} (+{len(rep.references)} ref.)", seeds)
    print_wide(table)
    return 0


@command("reproduce", "run a published result table as a grid and compare it cell by cell with the paper")
def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run (or with ``--compare-only`` only compare) a reproduction and write its report."""
    from fedpoison.experiments.grid import describe, expand_grid
    from fedpoison.reproductions.collect import collect
    from fedpoison.reproductions.compare import compare
    from fedpoison.reproductions.report import counts, grid_markdown, write_report
    from fedpoison.reproductions.spec import load_reproduction, reproduction_grid

    if args.list:
        return _list()
    if args.name is None:
        raise ConfigError("reproduce: expected a reproduction name (see `fedpoison reproduce --list`), got none")
    rep = load_reproduction(args.name)
    grid = expand_grid(reproduction_grid(rep, args.scale), args.overrides,
                       where=f"reproduction {rep.name} ({args.scale})")
    out = args.out or Path("runs") / "repro" / f"{rep.name}-{args.scale}"
    if args.dry_run:
        for line in describe(grid):
            console.print(line, highlight=False)
        console.print(f"{len(grid)} runs")
        return 0
    start = time.perf_counter()
    failed = 0
    if not args.compare_only:
        from fedpoison.experiments.cli import run_grid_cli
        from fedpoison.experiments.executor import executor_class, prestart

        executor_class(args.executor)  # an unknown name fails here, before any work
        if args.workers != 0:
            prestart(args.executor)
        options: dict[str, Any] = {}
        if args.executor == "ray":
            options = {"address": args.address, "cpus_per_run": args.cpus_per_run, "gpus_per_run": args.gpus_per_run}
        elif args.address is not None:
            raise ConfigError(f"--address: only used with --executor ray, got --executor {args.executor}")
        progress = run_grid_cli(grid, out, workers=args.workers, executor=args.executor, retry_failed=False,
                                quiet=args.quiet, options=options)
        failed = progress.failed + progress.failed_before
    got = collect(rep, out)
    results = compare(rep, got.values, got.diverged)
    meta = {"results": str(out), "runs finished": f"{got.finished}/{got.planned}",
            "sum of run wall times (s)": round(got.total_wall_s, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"}
    if args.overrides:
        meta["--set (applied to every run)"] = ", ".join(args.overrides)
    if not args.compare_only:
        meta["this command's wall time (s)"] = round(time.perf_counter() - start, 1)
    files = write_report(rep, args.scale, results, out / "reproduction", meta)
    console.print(grid_markdown(rep, results), highlight=False, soft_wrap=True)
    n = counts(results)
    console.print(", ".join(f"{k}: {v}" for k, v in n.items()), highlight=False)
    console.print(f"report: [bold]{files.html}[/bold] (LaTeX: {files.latex})", soft_wrap=True)
    return 1 if failed else 0


cmd_reproduce.configure = _configure  # type: ignore[attr-defined]
