"""Experiments: grids of runs, executors that compute them, and a crash-safe results store.

* :mod:`~fedpoison.experiments.grid` reads a grid file (base config + axes) into runs;
* :mod:`~fedpoison.experiments.executor` computes runs (local processes; more can register);
* :mod:`~fedpoison.experiments.ray_executor` computes them as Ray tasks on a cluster;
* :mod:`~fedpoison.experiments.store` keeps each finished run in its own directory, atomically;
* :mod:`~fedpoison.experiments.runner` ties them together, resumably;
* :mod:`~fedpoison.experiments.demo` is ``fedpoison demo``, the comparative grid of the README.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedpoison.experiments.executor import EXECUTORS, Executor, RunOutcome, RunTask, make_executor
    from fedpoison.experiments.grid import Grid, GridRun, expand_grid, load_grid
    from fedpoison.experiments.runner import GridEvent, GridProgress, run_grid
    from fedpoison.experiments.store import ResultStore

#: Public name -> defining module, imported on first access so that the CLI's sub-command
#: module (``fedpoison.experiments.cli``) loads without torch.
_LAZY = {
    **dict.fromkeys(["EXECUTORS", "Executor", "RunOutcome", "RunTask", "make_executor"], "executor"),
    **dict.fromkeys(["Grid", "GridRun", "expand_grid", "load_grid"], "grid"),
    **dict.fromkeys(["GridEvent", "GridProgress", "run_grid"], "runner"),
    "ResultStore": "store",
}

__all__ = [
    "EXECUTORS", "Executor", "Grid", "GridEvent", "GridProgress", "GridRun", "ResultStore", "RunOutcome",
    "RunTask", "expand_grid", "load_grid", "make_executor", "run_grid",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"fedpoison.experiments.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fedpoison.experiments' has no attribute {name!r}")
