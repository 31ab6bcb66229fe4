"""Executors: where a grid's runs are computed.

An :class:`Executor` takes :class:`RunTask` s (a key and a resolved config as
plain data) and yields one :class:`RunOutcome` per task as the tasks finish.
Workers only compute: they return the run's files as bytes and never touch the
results store, so the store has a single writer (the grid process) and an
executor needs no shared file system. That keeps a remote executor small: a
Ray executor is a class that submits :func:`execute` as a remote task, waits
with ``ray.wait`` and yields the outcomes, registered with::

    @EXECUTORS.register("ray", description="Ray tasks on a cluster")
    class RayExecutor(Executor): ...

Two executors come with fedpoison: ``local`` (worker processes on this
machine) and ``inline`` (the grid's own process, one run at a time; for
debugging and tests).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing
import os
import select
import signal
import tempfile
import threading
import time
import traceback
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpoison.registry import Registry


@dataclass(frozen=True)
class RunTask:
    """One run to compute.

    Attributes
    ----------
    key:
        The config hash; the run's identity in the store.
    config:
        The resolved config as plain data (``ExperimentConfig.to_dict()``).
    label:
        A short name for progress lines.
    threads:
        Torch intra-op threads the run computes with (pinned by :func:`execute`),
        whatever the worker count.
    checkpoint_dir:
        Where the run keeps its checkpoint (``None``: no checkpoints). A run
        whose folder already holds one resumes from it.
    checkpoint_every:
        Rounds between checkpoints (0: none).
    """

    key: str
    config: dict[str, Any]
    label: str = ""
    threads: int = 1
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0


#: A per-round progress report sent by a worker: ``key``, ``round`` (rounds done), ``rounds``,
#: ``resumed_from`` (the round its checkpoint held, on the first report of a resumed run) and
#: ``test_accuracy`` / ``test_loss`` when the round was evaluated.
RoundReport = dict[str, Any]


@dataclass
class RunOutcome:
    """What computing one task gave.

    Attributes
    ----------
    key:
        The task's key.
    ok:
        Whether the run finished.
    files:
        File name -> content of a finished run (what ``RunResult.save`` writes).
    error:
        The traceback or message of a failed run.
    wall_s:
        Seconds the run took in its worker.
    worker:
        Where it ran (``host:pid``).
    """

    key: str
    ok: bool
    files: dict[str, bytes] = field(default_factory=dict)
    error: str = ""
    wall_s: float = 0.0
    worker: str = ""


#: What this process has warmed up: (dataset, model, engine, device) tuples.
_WARMED: set[tuple[Any, ...]] = set()


def _round_reporter(task: RunTask, on_round: Callable[[RoundReport], None] | None
                    ) -> Callable[[dict[str, Any]], None] | None:
    """A round-record callback that sends :data:`RoundReport` s of ``task`` to ``on_round``."""
    if on_round is None:
        return None
    first = True

    def report(record: dict[str, Any]) -> None:
        nonlocal first
        msg: RoundReport = {"key": task.key, "round": int(record["round"]) + 1,
                            "rounds": int(task.config.get("rounds", 0))}
        if first:
            msg["resumed_from"] = int(record["round"])
            first = False
        for name in ("test_accuracy", "test_loss"):
            if isinstance(record.get(name), float):
                msg[name] = record[name]
        with contextlib.suppress(Exception):  # progress must never fail a run
            on_round(msg)

    return report


def _compute(cfg: Any, task: RunTask, progress: Callable[[dict[str, Any]], None] | None) -> Any:
    """Run ``cfg``, checkpointing into ``task.checkpoint_dir`` and resuming from it when it holds one.

    A checkpoint that cannot be used (cut short, another version's) is thrown
    away and the run starts over: the results are the same either way.
    """
    from fedpoison.errors import ConfigError
    from fedpoison.simulation.checkpoint import CHECKPOINT, run_with_checkpoints

    if not task.checkpoint_dir or task.checkpoint_every <= 0:
        return run_with_checkpoints(cfg, progress=progress)
    folder = Path(task.checkpoint_dir)
    if (folder / CHECKPOINT).is_file():
        try:
            return run_with_checkpoints(cfg, out=folder, every=task.checkpoint_every, resume=True,
                                        progress=progress)
        except ConfigError:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return run_with_checkpoints(cfg, out=folder, every=task.checkpoint_every, progress=progress)


def _warm_up(cfg: Any) -> None:
    """Run one round of ``cfg`` once per process and kind of model, and throw it away.

    The first run in a fresh process pays one-off costs (lazy imports, the
    first vmap/autograd calls, allocator growth) that would otherwise inflate
    its ``seconds_per_round`` several-fold; warming up keeps timings comparable
    across runs whichever worker computes them.
    """
    from fedpoison.simulation import run

    kind = (cfg.dataset.name, str(sorted(cfg.dataset.params_dict().items())), cfg.model.name, cfg.local.engine,
            cfg.device)
    if kind in _WARMED:
        return
    _WARMED.add(kind)
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(cfg.model_copy(update={"rounds": 1}))


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run with exactly ``threads`` torch intra-op threads, restored afterwards.

    A run's last bits depend on its thread count (the engine choice, the lanes,
    parallel reductions); a grid pins it per run, so results do not depend on
    how many workers share the machine.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def execute(task: RunTask, *, warm_up: bool = True,
            on_round: Callable[[RoundReport], None] | None = None) -> RunOutcome:
    """Compute one run; any exception becomes a failed outcome with its traceback.

    This is the whole job of a worker, in any executor: validate the config,
    run the simulation (checkpointing it when the task asks), and return the
    files ``RunResult.save`` writes. With ``warm_up``, the first run of each
    kind in a process is preceded by a discarded one-round run (see
    :func:`_warm_up`); ``wall_s`` excludes it. ``on_round`` receives a
    :data:`RoundReport` after every round.
    """
    import socket

    where = f"{socket.gethostname()}:{os.getpid()}"
    start = time.perf_counter()
    try:
        from fedpoison.plugins import validate_config

        cfg = validate_config(task.config)
        if cfg.key() != task.key:
            raise RuntimeError(f"config key mismatch: task {task.key}, resolved {cfg.key()} "
                               "(is the worker's fedpoison the same version as the grid's?)")
        with pinned_threads(task.threads):
            if warm_up:
                _warm_up(cfg)
                start = time.perf_counter()
            result = _compute(cfg, task, _round_reporter(task, on_round))
        with tempfile.TemporaryDirectory(prefix="fedpoison-run-") as tmp:
            result.save(tmp)
            files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
        return RunOutcome(task.key, True, files=files, wall_s=time.perf_counter() - start, worker=where)
    except Exception:
        return RunOutcome(task.key, False, error=traceback.format_exc(), wall_s=time.perf_counter() - start,
                          worker=where)


class Executor(ABC):
    """Computes run tasks and yields their outcomes as they finish.

    Contract: :meth:`run` yields exactly one outcome per task (a worker that
    dies yields a failed outcome), in completion order. Closing the iterator
    early (the grid was interrupted) cancels what has not finished. Use as a
    context manager so workers are released.

    Two optional abilities, declared by class attributes:

    * ``reports_rounds``: :meth:`run` takes ``on_round`` and calls it, in the
      grid's process, with each run's :data:`RoundReport` s;
    * ``shares_files``: workers see the grid's output folder (same machine or
      a shared file system), so runs can checkpoint into it.
    """

    #: Whether :meth:`run` accepts ``on_round`` and reports every round of every run.
    reports_rounds: bool = False
    #: Whether the workers can write into the grid's output folder (checkpoints).
    shares_files: bool = False

    def __init__(self, *, workers: int = 1) -> None:
        #: Worker slots (runs in flight at most).
        self.workers = workers

    @abstractmethod
    def run(self, tasks: Iterable[RunTask], on_round: Callable[[RoundReport], None] | None = None
            ) -> Iterator[RunOutcome]:
        """Yield one outcome per task, as each finishes.

        An executor with ``reports_rounds`` calls ``on_round`` (in this
        process) with each run's round reports; others ignore it, and the grid
        passes it only to executors that report rounds.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Executors by name (``fedpoison grid --executor NAME``); each is built as ``cls(workers=N)``.
EXECUTORS: Registry[type[Executor]] = Registry("executors")


@EXECUTORS.register("inline", description="Runs one at a time in the grid's own process (debugging, tests).")
class InlineExecutor(Executor):
    """Runs tasks one after another in this process."""

    reports_rounds = True
    shares_files = True

    def __init__(self, *, workers: int = 1, warm_up: bool = True) -> None:
        self.workers = 1
        self.warm_up = warm_up

    def run(self, tasks: Iterable[RunTask], on_round: Callable[[RoundReport], None] | None = None
            ) -> Iterator[RunOutcome]:
        """Run ``tasks`` and yield each outcome as it finishes; round reports go to ``on_round``."""
        for task in tasks:
            yield execute(task, warm_up=self.warm_up, on_round=on_round)


#: Modules the fork server imports once, so that forked workers start with them loaded.
PRELOAD = ("fedpoison.simulation", "fedpoison.experiments.executor", "sklearn.datasets")


def _set_parent_death_signal() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies.

    A grid killed with SIGKILL then leaves no orphan worker computing a run
    that the next invocation will compute again.
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _die_with(grid_pid: int) -> None:
    """Kill this process as soon as the grid process ``grid_pid`` is gone (a daemon thread).

    A pool worker does not notice its grid's death by itself: it holds the
    write ends of its own queues (and, forked from a fork server, keeps the
    server alive), so a grid killed with SIGKILL would leave it computing a run
    that the next invocation computes again. The kernel's parent-death signal
    covers spawned workers; this watch (a pidfd, or polling where there is
    none) covers forked ones.
    """
    def watch() -> None:
        try:
            fd = os.pidfd_open(grid_pid)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                try:
                    os.kill(grid_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="fedpoison-grid-watch", daemon=True).start()


#: This worker's channel to the grid process for round reports (set by :func:`_init_worker`).
_REPORTS: Any = None


def _init_worker(threads: int, grid_pid: int, reports: Any = None) -> None:
    global _REPORTS
    _REPORTS = reports
    warnings.simplefilter("ignore")  # the grid process has shown the config's warnings already
    _set_parent_death_signal()
    _die_with(grid_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the grid process's to handle
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    import fedpoison.simulation  # noqa: F401 - pay the imports before the first run's clock starts


def _execute_reporting(task: RunTask) -> RunOutcome:
    """:func:`execute` in a pool worker, its round reports sent to the grid through a queue."""
    queue = _REPORTS
    return execute(task, on_round=queue.put if queue is not None else None)


@EXECUTORS.register("local", description="Worker processes on this machine, one run each at a time.")
class LocalExecutor(Executor):
    """Runs tasks in ``workers`` processes on this machine.

    Workers are forked from a fork server that has imported the simulator
    (``start_method="forkserver"``, the default where available), or spawned.
    At most ``workers`` tasks are in flight, so a task in flight is a task
    running. Each worker uses ``cpu_count // workers`` torch threads (at
    least one), so the workers do not fight over cores. A worker that dies
    (out of memory, killed) fails the tasks it and its pool-mates held; the
    pool is rebuilt for the rest. Workers send their round reports through a
    queue that :meth:`run` drains while it waits.
    """

    reports_rounds = True
    shares_files = True
    #: Seconds between two looks at the round reports while runs are in flight.
    POLL_S = 0.2

    def __init__(self, *, workers: int = 1, threads: int | None = None, start_method: str | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers: expected an integer >= 1, got {workers}")
        self.workers = workers
        cpus = os.cpu_count() or 1
        self.threads = threads if threads is not None else max(1, math.floor(cpus / workers))
        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if self.start_method not in methods:
            raise ValueError(f"start_method: expected one of {', '.join(methods)}, got {self.start_method!r}")
        self._pool: ProcessPoolExecutor | None = None
        self._reports: Any = None

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            # The fork server is a fresh process (safe to fork, unlike a parent that may have run
            # torch's thread pools); it imports the simulator once and every worker is forked from it.
            ctx.set_forkserver_preload(list(PRELOAD))
        self._reports = ctx.Queue()  # a fresh one: a killed worker may have left the old one locked
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(self.threads, os.getpid(), self._reports))

    def _drain(self, on_round: Callable[[RoundReport], None] | None) -> None:
        """Pass the round reports that have arrived to ``on_round``."""
        import queue

        while self._reports is not None:
            try:
                msg = self._reports.get_nowait()
            except (queue.Empty, OSError, ValueError, EOFError):
                return
            if on_round is not None:
                on_round(msg)

    def run(self, tasks: Iterable[RunTask], on_round: Callable[[RoundReport], None] | None = None
            ) -> Iterator[RunOutcome]:
        """Run ``tasks`` and yield each outcome as it finishes; round reports go to ``on_round``."""
        pending = iter(tasks)
        running: dict[Future[RunOutcome], RunTask] = {}
        self._pool = self._new_pool()
        target = _execute_reporting if on_round is not None else execute
        try:
            exhausted = False
            while True:
                while not exhausted and len(running) < self.workers:
                    task = next(pending, None)
                    if task is None:
                        exhausted = True
                        break
                    running[self._pool.submit(target, task)] = task
                if not running:
                    return
                done: set[Future[RunOutcome]] = set()
                while not done:
                    done, _ = wait(running, timeout=self.POLL_S, return_when=FIRST_COMPLETED)
                    self._drain(on_round)
                broken = False
                for fut in done:
                    task = running.pop(fut)
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        broken = True
                        yield RunOutcome(task.key, False, error="BrokenProcessPool: a worker process died "
                                         "(killed, or out of memory) while this run was in its pool\n")
                    except Exception:
                        yield RunOutcome(task.key, False, error=traceback.format_exc())
                if broken:
                    for fut, task in list(running.items()):
                        running.pop(fut)
                        yield RunOutcome(task.key, False, error="BrokenProcessPool: a worker process died "
                                         "(killed, or out of memory) while this run was in its pool\n")
                    self._shutdown()
                    self._pool = self._new_pool()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        pool, self._pool = self._pool, None
        reports, self._reports = self._reports, None
        if reports is not None:
            with contextlib.suppress(Exception):
                reports.cancel_join_thread()
                reports.close()
        if pool is None:
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # a run in flight would otherwise finish before the grid can exit
            with contextlib.suppress(Exception):
                p.terminate()
        for p in procs:
            with contextlib.suppress(Exception):
                p.join(timeout=5)

    def close(self) -> None:
        """Shut the workers down."""
        self._shutdown()


def prestart(name: str) -> None:
    """Start what executor ``name`` needs in the background (the local fork server), if anything.

    The fork server's imports then overlap with the grid's own validation.
    """
    if name == "local" and "forkserver" in multiprocessing.get_all_start_methods():
        from multiprocessing import forkserver

        with contextlib.suppress(Exception):
            multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))
            forkserver.ensure_running()


def executor_class(name: str) -> type[Executor]:
    """The executor registered as ``name``; unknown names raise a ConfigError naming them."""
    import fedpoison.experiments.ray_executor  # noqa: F401  (registers "ray"; imports ray only when used)

    return EXECUTORS.get(name, key="--executor").obj


def make_executor(name: str, *, workers: int, **options: Any) -> Executor:
    """Build a registered executor by name (unknown names raise a ConfigError naming them).

    ``options`` go to the executor's constructor (e.g. ``address`` for ``ray``).
    """
    return executor_class(name)(workers=workers, **options)
