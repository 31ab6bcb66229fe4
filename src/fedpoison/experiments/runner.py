"""Running a grid into a results store, resumably.

:func:`run_grid` writes the grid's plan, skips the runs the store already has,
hands the rest to an executor, and commits each outcome as it arrives. It
reports progress as :class:`GridEvent` records; drawing them is the CLI's job.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fedpoison.errors import ResultsError
from fedpoison.experiments.executor import Executor, RunOutcome, RunTask
from fedpoison.experiments.grid import Grid, GridRun, dump_grid
from fedpoison.experiments.store import ResultStore


@dataclass
class GridProgress:
    """Counts of a grid invocation.

    Attributes
    ----------
    total:
        Runs in the grid.
    skipped:
        Runs already finished before this invocation.
    failed_before:
        Runs that had failed before and were not retried.
    to_run:
        Runs this invocation computes.
    done, failed:
        Runs this invocation finished / saw fail.
    started_at:
        ``time.time()`` when computing began.
    damaged:
        Damaged entries of ``runs/`` found at the start, as ``(key, reason)``;
        each was moved aside to ``damaged/`` and, when the grid has it, recomputed.
    """

    total: int
    skipped: int
    failed_before: int
    to_run: int
    done: int = 0
    failed: int = 0
    started_at: float = field(default_factory=time.time)
    damaged: list[tuple[str, str]] = field(default_factory=list)

    @property
    def finished(self) -> int:
        """Runs of this invocation that are over (finished or failed)."""
        return self.done + self.failed

    def eta_s(self) -> float:
        """Seconds left, from the mean pace so far (NaN before the first run ends)."""
        if self.finished == 0:
            return math.nan
        pace = (time.time() - self.started_at) / self.finished
        return pace * (self.to_run - self.finished)


@dataclass
class GridEvent:
    """A progress report: the grid began, a run finished or failed, or the grid ended."""

    kind: Literal["start", "run", "end"]
    progress: GridProgress
    run: GridRun | None = None
    outcome: RunOutcome | None = None
    summary: dict[str, Any] | None = None


def plan_json(grid: Grid) -> str:
    """``plan.json``: every run's key, index, label and axis values."""
    runs = [{"key": r.key, "index": r.index, "label": r.label, "assignment": r.assignment} for r in grid.runs]
    return json.dumps({"name": grid.name, "runs": runs, "analysis": grid.analysis}, indent=2, default=str)


def run_grid(grid: Grid, store: ResultStore, executor: Executor, *, retry_failed: bool = False,
             on_event: Callable[[GridEvent], None] | None = None, threads_per_run: int = 1) -> GridProgress:
    """Compute the grid's unfinished runs into ``store``; return the counts.

    Finished runs are skipped; failed ones are skipped unless ``retry_failed``.
    Every run computes with ``threads_per_run`` torch threads, so the results
    do not depend on the executor or its worker count. Damaged runs (see :meth:`ResultStore.verify`) are moved aside to
    ``damaged/`` first, and recomputed when they belong to the grid. Each
    outcome is committed as it arrives, so an interruption at any moment loses
    at most the runs in flight.
    """
    emit = on_event or (lambda event: None)
    with store.writing():
        finished, damaged = store.scan()
        for key, reason in damaged.items():
            moved = store.move_aside(key)
            store.log("damaged", key=key, reason=reason, moved_to=moved.name)
        store.write_meta("grid.yaml", dump_grid(grid))
        store.write_meta("plan.json", plan_json(grid))
        failed = store.failed_keys(finished)
        todo = [r for r in grid.runs if r.key not in finished and (retry_failed or r.key not in failed)]
        by_key = {r.key: r for r in todo}
        progress = GridProgress(
            total=len(grid), skipped=sum(r.key in finished for r in grid.runs),
            failed_before=sum(r.key in failed and r.key not in finished for r in grid.runs) if not retry_failed else 0,
            to_run=len(todo), damaged=sorted(damaged.items()),
        )
        store.log("grid", total=progress.total, to_run=progress.to_run, skipped=progress.skipped,
                  executor=type(executor).__name__, workers=executor.workers)
        emit(GridEvent("start", progress))

        def tasks() -> Any:
            for r in todo:
                store.log("start", key=r.key)
                yield RunTask(r.key, r.config.to_dict(), r.label, threads=threads_per_run)

        progress.started_at = time.time()
        outcomes = executor.run(tasks())
        try:
            for outcome in outcomes:
                run = by_key[outcome.key]
                summary = None
                if outcome.ok:
                    if not store.commit(outcome.key, outcome.files, wall_s=round(outcome.wall_s, 3),
                                        worker=outcome.worker, label=run.label):
                        raise ResultsError(f"results directory {store.root}: run {outcome.key} appeared in runs/ "
                                           "while this grid computed it; is another process writing there?")
                    store.log("done", key=outcome.key, wall_s=round(outcome.wall_s, 3))
                    progress.done += 1
                    try:
                        summary = json.loads(outcome.files.get("summary.json", b"{}"))
                    except json.JSONDecodeError:
                        summary = None
                else:
                    store.record_failure(outcome.key, config_yaml=run.config.to_yaml(), error=outcome.error,
                                         wall_s=round(outcome.wall_s, 3), worker=outcome.worker, label=run.label)
                    store.log("failed", key=outcome.key, error=outcome.error.strip().splitlines()[-1:] or [""])
                    progress.failed += 1
                emit(GridEvent("run", progress, run=run, outcome=outcome, summary=summary))
        finally:
            close = getattr(outcomes, "close", None)
            if close is not None:
                close()
        store.log("end", done=progress.done, failed=progress.failed)
        emit(GridEvent("end", progress))
    return progress
