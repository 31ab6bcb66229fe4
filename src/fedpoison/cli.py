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
from fedpoison.output import escape

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
                   help="continue the run checkpointed in DIR (a config file or --set must agree with its config)")
    p.add_argument("--track", default=None, metavar="NAME[,NAME]",
                   help="log the run to experiment trackers: tensorboard, mlflow, wandb (into --out)")


def summary_table(summary: dict[str, Any], title: str = "Summary") -> Table:
    """A two-column table of the run-level numbers."""
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        if key in {"versions", "malicious_clients"} or key.startswith("detection_"):
            continue
        table.add_row(escape(key), f"{value:.4f}" if isinstance(value, float) else escape(value))
    return table


@command("run", "run one experiment and write its results")
def cmd_run(args: argparse.Namespace) -> int:
    """The ``fedpoison run`` command."""
    from fedpoison.config_noops import check_run_config
    from fedpoison.plugins import load_config
    from fedpoison.progress import round_bar
    from fedpoison.safe_fs import ensure_writable_dir
    from fedpoison.simulation.checkpoint import run_with_checkpoints
    from fedpoison.tracking import RunTrackers, parse_track

    if args.resume is not None:
        from fedpoison.simulation.checkpoint import check_resume_config

        cfg = check_resume_config(args.resume, args.config, args.overrides)
        out = args.resume.parent if args.resume.is_file() else args.resume
    else:
        cfg = load_config(args.config, args.overrides, plugins=args.plugins)
        check_run_config(cfg)
        out = args.out or Path("runs") / f"run-{cfg.key()}"
    ensure_writable_dir(out, "--out")  # before any round is computed
    names = parse_track(args.track, cfg.track)
    with RunTrackers.open(names, folder=out, config=cfg, name=out.name) as trackers, \
            round_bar(cfg.rounds, console=console, disable=args.quiet) as bar:

        live: dict[int, set[str]] = {}

        def progress(record: dict[str, Any]) -> None:
            bar(record)
            trackers.log_record(record)
            live[int(record["round"])] = set(record)

        result = run_with_checkpoints(cfg, out=out, every=args.checkpoint_every, resume=args.resume is not None,
                                      progress=progress)
        result.save(out)
        for row in result.history.to_dict("records"):
            logged = live.get(int(row["round"]))
            if logged is None:  # a round restored from a checkpoint (--resume)
                trackers.log_record(row)
            elif late := {k: v for k, v in row.items() if k not in logged}:  # per-round detection, after the run
                trackers.log_record({"round": row["round"], **late})
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
    console.print(f"results in [bold]{escape(out)}[/bold]")
    return 0


cmd_run.configure = _configure_run  # type: ignore[attr-defined]


# ---- list --------------------------------------------------------------------
def _registries() -> dict[str, Any]:
    from fedpoison.plugins import registries

    return registries()


def _configure_list(p: argparse.ArgumentParser) -> None:
    from fedpoison.catalog import FAMILIES

    p.add_argument("family", choices=list(FAMILIES))
    p.add_argument("--format", default="table", choices=["table", "plain", "json"],
                   help="table (default), plain (tab-separated, with a header line) or json")


@command("list", "list registered datasets, partitions, models, attacks, defenses or auditors")
def cmd_list(args: argparse.Namespace) -> int:
    """The ``fedpoison list`` command."""
    from fedpoison.catalog import columns, rows
    from fedpoison.output import print_rows

    family_rows = rows(args.family, live=bool(args.plugins))
    print_rows(family_rows, columns(family_rows), fmt=args.format, title=args.family)
    return 0


cmd_list.configure = _configure_list  # type: ignore[attr-defined]


# ---- partition ---------------------------------------------------------------
def _configure_partition(p: argparse.ArgumentParser) -> None:
    add_config_args(p)


@command("partition", "print the per-client class counts of a config's partition")
def cmd_partition(args: argparse.Namespace) -> int:
    """The ``fedpoison partition`` command."""
    from fedpoison.data import load_dataset, partition_clients, partition_counts
    from fedpoison.plugins import load_config
    from fedpoison.seeding import generator

    cfg = load_config(args.config, args.overrides, plugins=args.plugins)
    data = load_dataset(cfg.dataset, cfg.seed)
    parts = partition_clients(cfg.partition, data.y_train, cfg.clients.num, generator(cfg.seed, "partition"))
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
    """The ``fedpoison config`` command."""
    from fedpoison.plugins import load_config

    cfg = load_config(args.config, args.overrides, plugins=args.plugins)
    sys.stdout.write(cfg.to_yaml())  # as is: Rich would wrap long values at 80 columns in a file
    return 0


cmd_config.configure = _configure_config  # type: ignore[attr-defined]


# ---- entry point -------------------------------------------------------------
DESCRIPTION = ("Simulate model-poisoning attacks on federated learning and the defenses against them, "
               "and measure both.")
EPILOG = """examples:
  fedpoison demo                                   a small attack x defense grid and its report
  fedpoison run --set attack.name=sign_flip --set attack.fraction=0.3 --set defense.name=median
  fedpoison list attacks                           also: datasets, partitions, models, defenses, ...
  fedpoison <command> --help                       the options of one command"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    _load_optional_commands()
    parser = argparse.ArgumentParser(prog="fedpoison", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from fedpoison import __version__

    parser.add_argument("--version", action="version", version=f"fedpoison {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, handler in COMMANDS.items():
        p = sub.add_parser(name, help=getattr(handler, "help", None), description=getattr(handler, "help", None))
        getattr(handler, "configure", lambda parser: None)(p)
        p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="FILE_OR_MODULE",
                       help="load plug-ins of your own from a .py file or a module (repeatable); "
                            "recorded in the config, so grid workers load them too")
        p.set_defaults(handler=handler)
    return parser


def _load_optional_commands() -> None:
    """Import modules that register more sub-commands (grid, results, report, demo, reproduce)."""
    import importlib

    for module in ("fedpoison.experiments.cli", "fedpoison.reproductions.cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; fedpoison errors exit 2 with one message and no traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from fedpoison.config_noops import print_warnings_as_lines

    print_warnings_as_lines(err_console)
    try:
        if args.plugins:
            from fedpoison.plugins.loading import absolute_specs, load_plugins

            args.plugins = absolute_specs(args.plugins)
            load_plugins(args.plugins, key="--plugin")
        return int(args.handler(args))
    except FedPoisonError as exc:
        err_console.print(f"[bold red]error:[/bold red] {escape(exc)}", highlight=False, soft_wrap=True)
        return 2
    except OSError as exc:  # a full disk, a permission refused while writing: the run failed
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        err_console.print(f"[bold red]error:[/bold red] {where}{exc.strerror or exc}; nothing finished was lost, "
                          "rerun the same command once fixed", highlight=False, soft_wrap=True)
        return 1
    except RecursionError:
        err_console.print("[bold red]error:[/bold red] input nested too deeply to process", highlight=False)
        return 2
    except UnicodeDecodeError as exc:
        err_console.print(f"[bold red]error:[/bold red] expected UTF-8 text, got byte 0x{exc.object[exc.start]:02x} "
                          f"at offset {exc.start}", highlight=False, soft_wrap=True)
        return 2
    except MemoryError:
        err_console.print("[bold red]error:[/bold red] out of memory; nothing finished was lost", highlight=False)
        return 1
    except RuntimeError as exc:  # torch's allocator failing: the config asks for more memory than there is
        text = " ".join(str(exc).split())
        if "allocate" not in text and "out of memory" not in text:
            raise
        asked = text[text.find("you tried"):].split(".")[0] if "you tried" in text else "an allocation failed"
        err_console.print(f"[bold red]error:[/bold red] out of memory ({asked}); the config asks for more memory "
                          "than this machine has (dataset or model sizes?)", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
