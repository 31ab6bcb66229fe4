"""What ``fedpoison list`` shows: one row per registered plug-in, without importing torch.

The plug-in registries fill when their packages are imported, and those import torch
(seconds). ``fedpoison list`` must answer at once, so the rows of the plug-ins that
ship with fedpoison are kept in ``catalog.json`` next to this module, generated
from the live registries by::

    python -m fedpoison.catalog --write

A test checks that the file equals the live registries, so it cannot go stale
unnoticed. When plug-ins from outside fedpoison are loaded (``--plugin``, or an
installed package's entry point), ``list`` reads the live registries instead
(:func:`live_rows`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: ``fedpoison list`` family names, in the order of a run's data flow
#: (the same as :data:`fedpoison.plugins.FAMILY_NAMES`, which is not imported: that package loads torch).
FAMILIES: tuple[str, ...] = ("datasets", "partitions", "models", "attacks", "defenses", "pre-aggregators",
                             "auditors")

#: The entry-point group of installed plug-ins (:data:`fedpoison.plugins.loading.ENTRY_POINT_GROUP`).
ENTRY_POINT_GROUP = "fedpoison.plugins"

CATALOG_PATH = Path(__file__).with_name("catalog.json")


def columns(rows: list[dict[str, str]]) -> list[str]:
    """The columns worth showing: ``name`` and every column some row fills, in the rows' key order."""
    keys = list(rows[0]) if rows else ["name"]
    return [c for c in keys if c == "name" or any(r.get(c) for r in rows)]


def live_rows() -> dict[str, list[dict[str, str]]]:
    """Every family's rows, read from the live registries (imports every plug-in, and so torch)."""
    from fedpoison.plugins import registries
    from fedpoison.plugins.describe import describe

    regs = registries()
    return {family: [describe(e) for e in regs[family]] for family in FAMILIES}


def installed_plugins() -> bool:
    """Whether any installed package declares fedpoison plug-ins (an entry point in our group)."""
    from importlib.metadata import entry_points

    return bool(entry_points(group=ENTRY_POINT_GROUP))


def stored_rows() -> dict[str, list[dict[str, str]]] | None:
    """The rows in ``catalog.json``, or None when the file is missing or unreadable."""
    try:
        data = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and set(data) == set(FAMILIES) else None


def rows(family: str, *, live: bool = False) -> list[dict[str, str]]:
    """``family``'s rows: from ``catalog.json``, or live when asked, when plug-ins are installed, or when needed.

    The live registries are read when ``live`` (plug-ins loaded with ``--plugin``), when an installed
    package declares plug-ins, or when ``catalog.json`` is missing or unreadable.
    """
    stored = None if live or installed_plugins() else stored_rows()
    return (stored or live_rows())[family]


def render(data: dict[str, list[dict[str, str]]]) -> str:
    """``catalog.json``'s text for ``data`` (stable: the rows in name order, keys in column order)."""
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m fedpoison.catalog [--write]``: print or rewrite ``catalog.json``."""
    parser = argparse.ArgumentParser(prog="python -m fedpoison.catalog", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help=f"rewrite {CATALOG_PATH.name}")
    args = parser.parse_args(argv)
    text = render(live_rows())
    if args.write:
        CATALOG_PATH.write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
