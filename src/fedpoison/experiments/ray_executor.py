"""The Ray executor: a grid's runs as Ray tasks on a local or remote cluster.

Each run is one Ray task that calls :func:`~fedpoison.experiments.executor.execute`
and returns the run's files as bytes. The grid process stays the only writer
of the results store, so a resumed grid on Ray skips finished runs exactly as
the local executor does, and the cluster needs no shared file system.

Resources are declared per task: ``cpus_per_run`` CPUs (default 1) and, for
runs whose ``device`` is not ``cpu``, ``gpus_per_run`` GPUs (a fraction such as
0.25 packs four runs on one card).

Start a cluster and point a grid at it::

    # on the head node
    ray start --head --port=6379
    # on every other node (fedpoison installed in the same environment)
    ray start --address=HEAD_IP:6379
    # anywhere with access to the head
    fedpoison grid scenarios/attack_impact.yaml --out results/ --executor ray --address HEAD_IP:6379

Without ``--address`` a private local Ray instance is started with
``--workers`` CPUs and shut down when the grid ends; ``--address auto``
connects to a cluster already running on this machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from fedpoison.errors import ConfigError
from fedpoison.experiments.executor import EXECUTORS, Executor, RunOutcome, RunTask, execute


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray: expected the 'ray' package, not installed "
                          "(pip install 'fedpoison[ray]')") from None
    return ray


def _execute_in_ray(task: RunTask) -> RunOutcome:
    """The body of every Ray task: one run, its files returned as bytes."""
    return execute(task)


@EXECUTORS.register(
    "ray",
    description="Ray tasks on a local or remote cluster (fedpoison[ray]); --address auto|HOST:PORT.",
)
class RayExecutor(Executor):
    """Submit each run as a Ray task and yield outcomes as they finish.

    Parameters
    ----------
    workers:
        Runs in flight at most (and the CPUs of a private local instance).
    address:
        ``None`` starts a private local instance; ``"auto"`` or ``"HOST:PORT"``
        connects to an existing cluster.
    cpus_per_run, gpus_per_run:
        Resources each task declares to Ray's scheduler.
    """

    def __init__(self, *, workers: int = 1, address: str | None = None, cpus_per_run: float = 1.0,
                 gpus_per_run: float = 0.0) -> None:
        super().__init__(workers=max(workers, 1))
        ray = _import_ray()
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                # workers import fedpoison from the driver's environment
                src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
                ray.init(num_cpus=self.workers, runtime_env={"env_vars": {"PYTHONPATH": src}}, **kwargs)
            self._owns = True
        #: A private local instance runs on this machine, so its runs can checkpoint into the output folder.
        self.shares_files = not address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self._fn = ray.remote(_execute_in_ray)

    def _submit(self, task: RunTask) -> Any:
        gpus = self.gpus_per_run if task.config.get("device", "cpu") != "cpu" else 0.0
        return self._fn.options(num_cpus=self.cpus_per_run, num_gpus=gpus, max_retries=0).remote(task)

    def run(self, tasks: Iterable[RunTask], on_round: Any = None) -> Iterator[RunOutcome]:
        """Run ``tasks`` and yield each outcome as it finishes (no round reports: ``on_round`` is unused)."""
        ray = self._ray
        queue = iter(tasks)
        pending: dict[Any, RunTask] = {}
        try:
            while True:
                while len(pending) < self.workers:
                    task = next(queue, None)
                    if task is None:
                        break
                    pending[self._submit(task)] = task
                if not pending:
                    return
                ready, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ready[0])
                try:
                    yield ray.get(ready[0])
                except Exception as exc:  # the worker died, or Ray could not run the task
                    yield RunOutcome(task.key, False, error=f"ray task failed: {exc!r}")
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Shut the workers down."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False
