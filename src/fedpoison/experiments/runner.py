"""Running a grid into a results store, resumably.

:func:`run_grid` writes the grid's plan, skips the runs the store already has,
hands the rest to an executor, and commits each outcome as it arrives. Runs
checkpoint every ``checkpoint_every`` rounds into the store's staging area, so
a killed grid resumes its runs in progress from their last checkpoint. It
reports progress as :class:`GridEvent` records (the grid began, a round of a
run ended, a run finished or failed, the grid ended); drawing them is the
CLI's job.
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
    rounds_total:
        Rounds of the runs to compute.
    rounds_done:
        Of those, rounds done: computed, restored from a checkpoint, or
        dropped (a run that diverged or failed has no rounds left).
    rounds_computed:
        Rounds this invocation computed (the pace of the ETA).
    live:
        Runs in flight: key -> rounds done so far.
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
    rounds_total: int = 0
    rounds_done: int = 0
    rounds_computed: int = 0
    live: dict[str, int] = field(default_factory=dict)
    damaged: list[tuple[str, str]] = field(default_factory=list)

    @property
    def finished(self) -> int:
        """Runs of this invocation that are over (finished or failed)."""
        return self.done + self.failed

    def eta_s(self) -> float:
        """Seconds left, from the pace so far (NaN before the first round or run ends).

        With round reports the pace is per round, so the estimate moves during
        a long run; without them (an executor that reports only finished
        runs) it is per run.
        """
        elapsed = time.time() - self.started_at
        if self.rounds_computed > 0 and self.rounds_total > 0:
            return elapsed / self.rounds_computed * max(self.rounds_total - self.rounds_done, 0)
        if self.finished == 0:
            return math.nan
        return elapsed / self.finished * (self.to_run - self.finished)


@dataclass
class GridEvent:
    """A progress report: the grid began, a round of a run ended, a run finished or failed, or the grid ended.

    ``round`` events carry the worker's report in ``report`` (``round``: rounds
    done, ``rounds``, ``resumed_from`` on a run's first report, accuracy and
    loss when the round was evaluated).
    """

    kind: Literal["start", "round", "run", "end"]
    progress: GridProgress
    run: GridRun | None = None
    outcome: RunOutcome | None = None
    summary: dict[str, Any] | None = None
    report: dict[str, Any] | None = None


def plan_json(grid: Grid) -> str:
    """``plan.json``: every run's key, index, label and axis values."""
    runs = [{"key": r.key, "index": r.index, "label": r.label, "assignment": r.assignment} for r in grid.runs]
    return json.dumps({"name": grid.name, "runs": runs, "analysis": grid.analysis}, indent=2, default=str)


#: Rounds between two checkpoints of a grid's runs, unless told otherwise.
DEFAULT_CHECKPOINT_EVERY = 10


def run_grid(grid: Grid, store: ResultStore, executor: Executor, *, retry_failed: bool = False,
             on_event: Callable[[GridEvent], None] | None = None, threads_per_run: int = 1,
             checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY) -> GridProgress:
    """Compute the grid's unfinished runs into ``store``; return the counts.

    Finished runs are skipped; failed ones are skipped unless ``retry_failed``.
    Every run computes with ``threads_per_run`` torch threads, so the results
    do not depend on the executor or its worker count. Damaged runs (see
    :meth:`ResultStore.verify`) are moved aside to ``damaged/`` first, and
    recomputed when they belong to the grid. Each outcome is committed as it
    arrives. Runs checkpoint every ``checkpoint_every`` rounds (0: never) into
    ``store.checkpoint_dir(key)`` when the executor's workers share the output
    folder, and resume from there, so an interruption at any moment loses at
    most the rounds since each in-flight run's last checkpoint. A run's
    checkpoint is removed when it commits.

    Every round of every run is logged to ``events.jsonl`` (``round`` events;
    a ``resume`` event names the round a run restarted from) when the
    executor reports rounds.
    """
    if checkpoint_every < 0:
        from fedpoison.errors import ConfigError

        raise ConfigError(f"checkpoint_every: expected an integer >= 0, got {checkpoint_every}")
    emit = on_event or (lambda event: None)
    every = checkpoint_every if executor.shares_files else 0
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
        progress.rounds_total = sum(r.config.rounds for r in todo)
        store.log("grid", total=progress.total, to_run=progress.to_run, skipped=progress.skipped,
                  executor=type(executor).__name__, workers=executor.workers, checkpoint_every=every)
        emit(GridEvent("start", progress))

        def tasks() -> Any:
            for r in todo:
                store.log("start", key=r.key)
                progress.live[r.key] = 0
                ckpt = str(store.checkpoint_dir(r.key)) if every else None
                yield RunTask(r.key, r.config.to_dict(), r.label, threads=threads_per_run, checkpoint_dir=ckpt,
                              checkpoint_every=every)

        def on_round(report: dict[str, Any]) -> None:
            key = report.get("key")
            if key not in progress.live:  # a late report of a run already over
                return
            done = int(report["round"])
            if "resumed_from" in report:
                start = int(report["resumed_from"])
                if start:
                    store.log("resume", key=key, round=start)
                progress.rounds_done += start - progress.live[key]
                progress.live[key] = start
            progress.rounds_computed += done - progress.live[key]
            progress.rounds_done += done - progress.live[key]
            progress.live[key] = done
            store.log("round", key=key, **{k: v for k, v in report.items() if k not in ("key", "resumed_from")})
            emit(GridEvent("round", progress, run=by_key[key], report=report))

        def over(key: str) -> None:
            """A run finished or failed: it has no rounds left."""
            run_rounds = by_key[key].config.rounds
            progress.rounds_done += run_rounds - progress.live.pop(key, 0)

        progress.started_at = time.time()
        outcomes = executor.run(tasks(), on_round=on_round) if executor.reports_rounds else executor.run(tasks())
        try:
            for outcome in outcomes:
                run = by_key[outcome.key]
                over(outcome.key)
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
        store.tidy_checkpoints()
        store.log("end", done=progress.done, failed=progress.failed)
        emit(GridEvent("end", progress))
    return progress
