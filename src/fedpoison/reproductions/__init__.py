"""Published result tables as runnable experiments, compared cell by cell with the paper.

Each reproduction is a YAML file in this folder (:mod:`.spec`): a grid over
the paper's protocol, the paper's numbers with their source, a tolerance
declared before any run, three scales (``smoke``, ``cpu``, ``paper``) and the
protocol choices the paper leaves open. ``fedpoison reproduce NAME`` runs it
through the ordinary grid machinery and writes the comparison report
(:mod:`.compare`, :mod:`.report`).
"""

from __future__ import annotations

import importlib
from typing import Any

# ``collect`` and ``compare`` are also the submodules' names: import those functions from the submodules.
_EXPORTS = {
    "Collected": "collect",
    "CellResult": "compare", "verdict": "compare",
    "write_report": "report",
    "Reproduction": "spec", "available": "spec", "cells": "spec", "load_reproduction": "spec",
    "reproduction_grid": "spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load the submodules on first use (the CLI's ``--help`` imports this package)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fedpoison.reproductions.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fedpoison.reproductions' has no attribute {name!r}")
