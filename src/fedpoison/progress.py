"""A progress bar over the rounds of one run, for the command line and the Python API.

``fedpoison.run(cfg, progress=True)`` and ``fedpoison run`` both draw it: the
round, the last evaluated accuracy and loss, the elapsed time and an ETA.
Rich is imported only when a bar is drawn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

#: What ``progress=`` accepts: a bar (``True``), nothing (``False``/``None``), or a callback per round record.
ProgressArg = bool | Callable[[dict[str, Any]], None] | None


def round_text(record: dict[str, Any]) -> str:
    """``acc 0.912  loss 0.301`` for an evaluated round, else an empty string."""
    acc, loss = record.get("test_accuracy"), record.get("test_loss")
    if not isinstance(acc, float):
        return ""
    return f"acc {acc:.3f}  loss {loss:.3f}" if isinstance(loss, float) else f"acc {acc:.3f}"


@contextlib.contextmanager
def round_bar(total: int, *, console: Any = None, start: int = 0,
              disable: bool = False) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A Rich bar over ``total`` rounds; yields the callback to call with each round's record.

    The metrics shown are those of the last evaluated round (rounds between
    evaluations keep them).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]round {task.completed}/{task.total}"), BarColumn(),
                  TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console, disable=disable, transient=False) as bar:
        task = bar.add_task("rounds", total=total, completed=start, metrics="")

        def update(record: dict[str, Any]) -> None:
            text = round_text(record)
            if text:
                bar.update(task, completed=int(record["round"]) + 1, metrics=text)
            else:
                bar.update(task, completed=int(record["round"]) + 1)

        yield update


@contextlib.contextmanager
def round_callback(progress: ProgressArg, total: int) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """Turn a ``progress=`` argument into a per-round callback (a bar on stderr for ``True``)."""
    if progress is True:
        from rich.console import Console

        with round_bar(total, console=Console(stderr=True)) as update:
            yield update
    elif callable(progress):
        yield progress
    elif progress in (False, None):
        yield None
    else:
        from fedpoison.errors import ConfigError

        raise ConfigError(f"progress: expected True, False, None or a callable taking a round record, "
                          f"got {progress!r}")
