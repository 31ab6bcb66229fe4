"""Printing rows for people and for programs: a Rich table, tab-separated lines, or JSON.

Every string that comes from a user or a plug-in (names, labels, config values
such as ``defense.pre=[clip]``) goes through :func:`escape` before Rich sees it,
so square brackets print as typed instead of being read as markup.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape as _rich_escape
from rich.table import Table


def escape(text: object) -> str:
    """``text`` as a string Rich prints literally (``[clip]`` stays ``[clip]``).

    Example
    -------
    >>> escape("defense.pre=[clip]")
    'defense.pre=\\\\[clip]'
    """
    return _rich_escape(str(text))


def plain_lines(rows: Sequence[dict[str, str]], cols: Sequence[str]) -> list[str]:
    """A header line and one tab-separated line per row; tabs and newlines in cells become spaces.

    Example
    -------
    >>> plain_lines([{"name": "median", "description": "coordinate\\tmedian"}], ["name", "description"])
    ['name\\tdescription', 'median\\tcoordinate median']
    """
    def cell(value: object) -> str:
        return " ".join(str(value).split())

    return ["\t".join(cols)] + ["\t".join(cell(row.get(c, "")) for c in cols) for row in rows]


def rows_table(rows: Sequence[dict[str, str]], cols: Sequence[str], *, title: str | None = None) -> Table:
    """A Rich table of ``rows``; the first column (the name a user copies) is never cut."""
    table = Table(title=escape(title) if title else None)
    first = max((len(str(r.get(cols[0], ""))) for r in rows), default=4)
    for i, col in enumerate(cols):
        if i == 0:
            table.add_column(col, style="bold", no_wrap=True, min_width=first, overflow="fold")
        else:
            table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(escape(row.get(c, "")) for c in cols))
    return table


def print_rows(rows: Sequence[dict[str, str]], cols: Sequence[str], *, fmt: str = "table",
               title: str | None = None, console: Console | None = None) -> None:
    """Print ``rows`` as ``fmt``: ``table`` (Rich), ``plain`` (tab-separated) or ``json``.

    A table printed into a pipe or a file is not cut to a terminal's width.
    """
    if fmt == "json":
        sys.stdout.write(json.dumps([{c: r.get(c, "") for c in cols} for r in rows], indent=1) + "\n")
        return
    if fmt == "plain":
        sys.stdout.write("\n".join(plain_lines(rows, cols)) + "\n")
        return
    print_wide(rows_table(rows, cols, title=title), console=console)


def print_wide(renderable: Any, *, console: Console | None = None, **kwargs: Any) -> None:
    """Print at the terminal's width, or unwrapped into a pipe or file (nothing is cut)."""
    console = console or Console()
    if console.is_terminal:
        console.print(renderable, **kwargs)
    else:
        Console(width=100_000, file=console.file, color_system=None, highlight=False).print(renderable, **kwargs)
