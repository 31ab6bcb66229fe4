"""What ``fedpoison list`` shows: one row per registered plug-in, without importing torch.

The plug-in registries fill when their packages are imported, and those import torch
(seconds). ``fedpoison list`` must answer at once, so the rows of the plug-ins that
ship with fedpoison are kept in ``catalog.json`` next to this module, generated
from the live registries by::

    python -m fedpoison.catalog --write

A test checks that the file equals the live registries, so it cannot go stale
unnoticed. When plug-ins from outside fedpoison are loaded, ``list`` reads the
live registries instead (:func:`live_rows`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: Family name (as typed after ``fedpoison list``) -> the extra columns it shows.
FAMILIES: dict[str, tuple[str, ...]] = {
    "datasets": (),
    "partitions": (),
    "models": (),
    "attacks": ("kind", "knowledge"),
    "defenses": ("params", "requires"),
    "pre-aggregators": ("params", "requires"),
    "auditors": ("params",),
}

CATALOG_PATH = Path(__file__).with_name("catalog.json")


def columns(family: str) -> list[str]:
    """The column names of ``family``'s listing, in order."""
    return ["name", "description", *FAMILIES[family], "reference"]


def registries() -> dict[str, Any]:
    """The live registry of each family (imports every built-in plug-in, and so torch)."""
    from fedpoison.attacks import ATTACKS
    from fedpoison.audit import AUDITORS
    from fedpoison.data import DATASETS, PARTITIONERS
    from fedpoison.defenses import PRE_AGGREGATORS, RULES
    from fedpoison.models import MODELS

    return {"datasets": DATASETS, "partitions": PARTITIONERS, "models": MODELS, "attacks": ATTACKS,
            "defenses": RULES, "pre-aggregators": PRE_AGGREGATORS, "auditors": AUDITORS}


def entry_row(family: str, entry: Any) -> dict[str, str]:
    """One registry entry as the strings ``fedpoison list`` prints, keyed by column."""
    row = {"name": entry.name, "description": entry.description}
    for col in FAMILIES[family]:
        if col == "params":
            row[col] = ", ".join(entry.params.model_fields)
        elif col in {"kind", "knowledge"}:
            value = getattr(entry.obj, col, entry.meta.get(col, ""))
            row[col] = str(getattr(value, "value", value))
        else:
            row[col] = str(entry.meta.get(col, ""))
    row["reference"] = entry.reference
    return row


def live_rows() -> dict[str, list[dict[str, str]]]:
    """Every family's rows, read from the live registries (sorted by name)."""
    regs = registries()
    return {family: [entry_row(family, e) for e in regs[family]] for family in FAMILIES}


def stored_rows() -> dict[str, list[dict[str, str]]] | None:
    """The rows in ``catalog.json``, or None when the file is missing or unreadable."""
    try:
        data = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and set(data) == set(FAMILIES) else None


def rows(family: str, *, live: bool = False) -> list[dict[str, str]]:
    """``family``'s rows: from ``catalog.json`` (fast) unless ``live`` or the file is unusable."""
    stored = None if live else stored_rows()
    return (stored or live_rows())[family]


def render(data: dict[str, list[dict[str, str]]]) -> str:
    """``catalog.json``'s text for ``data`` (stable: sorted keys, one trailing newline)."""
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


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
