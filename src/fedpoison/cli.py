"""The ``fedpoison`` command line.

Each sub-command is a small function taking parsed arguments; :func:`main`
turns fedpoison's own errors into one line on stderr and exit code 2, with no
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedpoison.errors import FedPoisonError

console = Console()
err_console = Console(stderr=True)

#: Sub-command registrations: name -> (configure parser, handler).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str, help: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register a sub-command handler; its parser is configured by ``<handler>.configure``."""

    def decorate(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        fn.help = help  # type: ignore[attr-defined]
        COMMANDS[name] = fn
        return fn

    return decorate


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The config file and ``--set`` overrides shared by run-like commands."""
    p.add_argument("config", nargs="?", help="YAML config file (defaults apply to missing keys)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set clients.num=50 (repeatable)")


# ---- run ---------------------------------------------------------------------
def _configure_run(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--out", type=Path, default=None, help="write results here (default runs/<config hash>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                   help="write an atomic checkpoint every K rounds into --out")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the run checkpointed in DIR")
    p.add_argument("--track", default=None, metavar="NAME[,NAME]",
                   help="log the run to experiment trackers: tensorboard, mlflow, wandb (into --out)")


def summary_table(summary: dict[str, Any], title: str = "Summary") -> Table:
    """A two-column table of the run-level numbers."""
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        if key in {"versions", "malicious_clients"} or key.startswith("detection_"):
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


@command("run", "run one experiment and write its results")
def cmd_run(args: argparse.Namespace) -> int:
    from fedpoison.config import load_config
    from fedpoison.config_checks import check_run_config
    from fedpoison.progress import round_bar
    from fedpoison.simulation.checkpoint import run_with_checkpoints
    from fedpoison.tracking import RunTrackers, parse_track

    if args.resume is not None:
        from fedpoison.simulation.checkpoint import load_checkpoint_config

        cfg = load_checkpoint_config(args.resume)
        out = args.resume
    else:
        cfg = load_config(args.config, args.overrides)
        check_run_config(cfg)
        out = args.out or Path("runs") / f"run-{cfg.key()}"
    names = parse_track(args.track, cfg.track)
    with RunTrackers.open(names, folder=out, config=cfg, name=out.name) as trackers, \
            round_bar(cfg.rounds, console=console, disable=args.quiet) as bar:

        def progress(record: dict[str, Any]) -> None:
            bar(record)
            trackers.log_record(record)

        result = run_with_checkpoints(cfg, out=out, every=args.checkpoint_every, resume=args.resume is not None,
                                      progress=progress)
        result.save(out)
        trackers.finish(result.summary)
    console.print(summary_table(result.summary))
    filtering = bool(_registries()["defenses"].get(cfg.defense.name).meta.get("filters"))
    if cfg.attack.name != "none" and (cfg.audit.name != "none" or filtering):
        try:
            from fedpoison.audit.report import format_detection
        except ImportError:
            pass
        else:
            console.print(format_detection(result.summary))
    console.print(f"results in [bold]{out}[/bold]")
    return 0


cmd_run.configure = _configure_run  # type: ignore[attr-defined]


# ---- list --------------------------------------------------------------------
def _registries() -> dict[str, Any]:
    from fedpoison.attacks import ATTACKS
    from fedpoison.audit import AUDITORS
    from fedpoison.data import DATASETS, PARTITIONERS
    from fedpoison.defenses import PRE_AGGREGATORS, RULES
    from fedpoison.models import MODELS

    return {"datasets": DATASETS, "partitions": PARTITIONERS, "models": MODELS, "attacks": ATTACKS,
            "defenses": RULES, "pre-aggregators": PRE_AGGREGATORS, "auditors": AUDITORS}


def _configure_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("family", choices=["datasets", "partitions", "models", "attacks", "defenses",
                                      "pre-aggregators", "auditors"])


@command("list", "list registered datasets, partitions, models, attacks, defenses or auditors")
def cmd_list(args: argparse.Namespace) -> int:
    reg = _registries()[args.family]
    table = Table(title=args.family)
    table.add_column("name", style="bold")
    table.add_column("description")
    extra_cols: list[str] = []
    if args.family == "attacks":
        extra_cols = ["kind", "knowledge"]
    elif args.family in {"defenses", "pre-aggregators"}:
        extra_cols = ["params", "requires"]
    elif args.family == "auditors":
        extra_cols = ["params"]
    for col in extra_cols:
        table.add_column(col)
    table.add_column("reference")
    for entry in reg:
        cells = [entry.name, entry.description]
        for col in extra_cols:
            if col == "params":
                cells.append(", ".join(entry.params.model_fields))
            elif col in {"kind", "knowledge"}:
                value = getattr(entry.obj, col, entry.meta.get(col, ""))
                cells.append(str(getattr(value, "value", value)))
            else:
                cells.append(str(entry.meta.get(col, "")))
        cells.append(entry.reference)
        table.add_row(*cells)
    console.print(table)
    return 0


cmd_list.configure = _configure_list  # type: ignore[attr-defined]


# ---- partition ---------------------------------------------------------------
def _configure_partition(p: argparse.ArgumentParser) -> None:
    add_config_args(p)


@command("partition", "print the per-client class counts of a config's partition")
def cmd_partition(args: argparse.Namespace) -> int:
    from fedpoison.config import load_config
    from fedpoison.data import PARTITIONERS, load_dataset, partition_counts
    from fedpoison.seeding import generator

    cfg = load_config(args.config, args.overrides)
    data = load_dataset(cfg.dataset, cfg.seed)
    fn = PARTITIONERS.get(cfg.partition.name).obj
    parts = fn(data.y_train, cfg.clients.num, cfg.partition, generator(cfg.seed, "partition"))
    counts = partition_counts(data.y_train, parts, data.num_classes)
    table = Table(title=f"{cfg.dataset.name} / {cfg.partition.name}: class counts per client")
    table.add_column("client", justify="right")
    for c in range(data.num_classes):
        table.add_column(str(c), justify="right")
    table.add_column("total", justify="right", style="bold")
    for k, row in enumerate(counts.tolist()):
        table.add_row(str(k), *map(str, row), str(sum(row)))
    console.print(table)
    return 0


cmd_partition.configure = _configure_partition  # type: ignore[attr-defined]


# ---- config ------------------------------------------------------------------
def _configure_config(p: argparse.ArgumentParser) -> None:
    add_config_args(p)


@command("config", "validate a config and print it resolved, with every default filled in")
def cmd_config(args: argparse.Namespace) -> int:
    from fedpoison.config import load_config

    cfg = load_config(args.config, args.overrides)
    console.print(cfg.to_yaml(), highlight=False, markup=False, end="")
    return 0


cmd_config.configure = _configure_config  # type: ignore[attr-defined]


# ---- entry point -------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    _load_optional_commands()
    parser = argparse.ArgumentParser(prog="fedpoison", description=__doc__.splitlines()[0] if __doc__ else None)
    from fedpoison import __version__

    parser.add_argument("--version", action="version", version=f"fedpoison {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, handler in COMMANDS.items():
        p = sub.add_parser(name, help=getattr(handler, "help", None))
        getattr(handler, "configure", lambda parser: None)(p)
        p.set_defaults(handler=handler)
    return parser


def _load_optional_commands() -> None:
    """Import modules that register more sub-commands (grid, results, report, demo)."""
    import importlib

    for module in ("fedpoison.experiments.cli",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; fedpoison errors exit 2 with one message and no traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from fedpoison.config_checks import print_config_warnings

    print_config_warnings(err_console)
    try:
        return int(args.handler(args))
    except FedPoisonError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
