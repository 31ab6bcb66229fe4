"""Reading a reproduction's results directory back into per-cell values.

The grid runner writes ``plan.json`` (each run's key and axis values) and one
folder per finished run. A run's cell is found from its axis values
(:func:`~fedpoison.reproductions.spec.cell_of_assignment`); its value is the
metric of the last evaluation in ``history.csv`` (the final global model), or
the mean of the last ``paper.last_k`` evaluations when the paper averages.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fedpoison.errors import ResultsError
from fedpoison.experiments.store import ResultStore
from fedpoison.reproductions.spec import Reproduction, cell_of_assignment


@dataclass
class Collected:
    """What a results directory holds for a reproduction.

    Attributes
    ----------
    values:
        Cell id -> the metric of each finished seed (diverged runs count as
        the file's ``diverged_error``).
    diverged:
        Cell id -> number of diverged runs.
    wall_s:
        Cell id -> wall seconds of each finished run.
    planned, finished:
        Runs in the plan, and finished ones.
    """

    values: dict[str, list[float]] = field(default_factory=dict)
    diverged: dict[str, int] = field(default_factory=dict)
    wall_s: dict[str, list[float]] = field(default_factory=dict)
    planned: int = 0
    finished: int = 0

    @property
    def total_wall_s(self) -> float:
        """Sum of the finished runs' wall seconds."""
        return sum(sum(v) for v in self.wall_s.values())


def final_metric(history: pd.DataFrame, metric: str, last_k: int = 1) -> float:
    """The mean of the last ``last_k`` evaluated accuracies (or 1 - it, for ``error``).

    NaN when nothing was evaluated.
    """
    if "test_accuracy" not in history:
        return math.nan
    acc = history["test_accuracy"].dropna()
    if acc.empty:
        return math.nan
    last = float(acc.iloc[-last_k:].mean())
    return 1.0 - last if metric == "error" else last


def collect(rep: Reproduction, out: str | Path) -> Collected:
    """Per-cell values of the finished runs in ``out`` (a ``reproduce``/``grid`` results directory)."""
    store = ResultStore(out)
    plan_path = store.root / "plan.json"
    if not plan_path.is_file():
        raise ResultsError(f"results directory {store.root}: no plan.json (run `fedpoison reproduce {rep.name}` first)")
    try:
        plan = json.loads(plan_path.read_text())["runs"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ResultsError(f"results directory {store.root}: plan.json unreadable ({exc})") from None
    got = Collected(planned=len(plan))
    finished = store.finished_keys()
    for entry in plan:
        cell = cell_of_assignment(rep, entry.get("assignment", {}))
        if cell is None or entry["key"] not in finished:
            continue
        folder = store.run_dir(entry["key"])
        summary = json.loads((folder / "summary.json").read_text())
        done = store.done_record(entry["key"])
        if summary.get("diverged"):
            value = rep.diverged_error if rep.paper.metric == "error" else 1.0 - rep.diverged_error
            got.diverged[cell.id] = got.diverged.get(cell.id, 0) + 1
        else:
            value = final_metric(pd.read_csv(folder / "history.csv"), rep.paper.metric, rep.paper.last_k)
        got.values.setdefault(cell.id, []).append(value)
        got.wall_s.setdefault(cell.id, []).append(float(done.get("wall_s", math.nan)))
        got.finished += 1
    return got
