"""What ``fedpoison list`` and the docs show of a plug-in, read from its registry entry."""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticUndefined

from fedpoison.registry import Entry


def params_text(entry: Entry[Any]) -> str:
    """The plug-in's own keys with their defaults, e.g. ``alpha=0.5, min_samples=10``."""
    parts = []
    for key, field in entry.params.model_fields.items():
        default = field.default
        parts.append(key if default is PydanticUndefined else f"{key}={default!r}".replace("'", ""))
    return ", ".join(parts)


def describe(entry: Entry[Any]) -> dict[str, str]:
    """One plug-in as plain strings: name, description, params, requires, tags, family facts, paper, variant."""
    row = {
        "name": entry.name,
        "description": entry.description,
        "params": params_text(entry),
        "requires": entry.requires.text if entry.requires is not None else "",
        "tags": ", ".join(sorted(entry.tags)),
    }
    for key in ("kind", "knowledge", "input_shape", "default_model"):
        if key in entry.meta:
            row[key] = str(entry.meta[key])
    row["reference"] = entry.reference
    row["variant"] = entry.variant
    return row
