"""Experiments: grids of runs, executors that compute them, and a crash-safe results store.

* :mod:`~fedpoison.experiments.grid` reads a grid file (base config + axes) into runs;
* :mod:`~fedpoison.experiments.executor` computes runs (local processes; more can register);
* :mod:`~fedpoison.experiments.ray_executor` computes them as Ray tasks on a cluster;
* :mod:`~fedpoison.experiments.store` keeps each finished run in its own directory, atomically;
* :mod:`~fedpoison.experiments.runner` ties them together, resumably;
* :mod:`~fedpoison.experiments.demo` is ``fedpoison demo``, the comparative grid of the README.
"""

from fedpoison.experiments import ray_executor  # noqa: F401  (registers "ray"; imports ray only when used)
from fedpoison.experiments.executor import EXECUTORS, Executor, RunOutcome, RunTask, make_executor
from fedpoison.experiments.grid import Grid, GridRun, expand_grid, load_grid
from fedpoison.experiments.runner import GridEvent, GridProgress, run_grid
from fedpoison.experiments.store import ResultStore

__all__ = [
    "EXECUTORS", "Executor", "Grid", "GridEvent", "GridProgress", "GridRun", "ResultStore", "RunOutcome",
    "RunTask", "expand_grid", "load_grid", "make_executor", "run_grid",
]
