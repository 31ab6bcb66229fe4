"""Experiment tracking: log runs to TensorBoard, MLflow or Weights & Biases.

Pick backends with ``--track tensorboard,mlflow`` (``fedpoison run`` and
``fedpoison grid``) or ``track: [tensorboard]`` in a config. Each backend is an
optional extra (``pip install 'fedpoison[tensorboard]'``, ``[mlflow]``,
``[wandb]``) and writes into the run's or grid's output folder:

* ``fedpoison run`` logs each round as it ends;
* ``fedpoison grid`` logs each run when it commits, from its ``history.csv``,
  ``config.yaml`` and ``summary.json``, in the grid's process (one writer per
  store, whatever the executor; a run resumed after a kill is logged once).

Trackers only observe: a run's results are the same with or without them.

In Python::

    from fedpoison.tracking import RunTrackers
    with RunTrackers.open(["tensorboard"], folder="runs/x", config=cfg) as trackers:
        result = fedpoison.run(cfg, progress=trackers.log_record)
        trackers.finish(result.summary)
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedpoison.errors import ConfigError, FedPoisonWarning
from fedpoison.tracking import mlflow as _mlflow  # noqa: F401  (registers "mlflow"; imports mlflow when used)
from fedpoison.tracking import tensorboard as _tensorboard  # noqa: F401  (registers "tensorboard")
from fedpoison.tracking import wandb as _wandb  # noqa: F401  (registers "wandb")
from fedpoison.tracking.base import TRACKERS, TrackedRun, Tracker, flatten_config, numeric_metrics

__all__ = ["TRACKERS", "GridTracking", "RunTrackers", "TrackedRun", "Tracker", "TrackingWarning", "flatten_config",
           "numeric_metrics", "parse_track"]


class TrackingWarning(FedPoisonWarning):
    """A finished run could not be logged to a tracker (its results are stored all the same)."""


def parse_track(*sources: str | Sequence[str] | None) -> list[str]:
    """Tracker names from ``--track a,b`` strings and ``track:`` lists, checked and deduplicated."""
    names: list[str] = []
    for source in sources:
        if not source:
            continue
        items = source.split(",") if isinstance(source, str) else list(source)
        for item in items:
            if not isinstance(item, str):
                raise ConfigError(f"track: expected tracker names ({', '.join(TRACKERS.names())}), got {item!r}")
            name = item.strip()
            if not name:
                continue
            TRACKERS.get(name, key="track")
            if name not in names:
                names.append(name)
    return names


def summary_numbers(summary: Mapping[str, Any]) -> dict[str, float]:
    """The run-level numbers of a summary (lists, texts and the versions left out)."""
    return numeric_metrics({k: v for k, v in summary.items() if k != "versions"}, skip=())


class RunTrackers:
    """The trackers of one run, used together: :meth:`log_record` per round, then :meth:`finish`.

    Use as a context manager; leaving it by an exception closes the trackers
    with the run marked failed.
    """

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers
        self._closed = False

    @classmethod
    def open(cls, names: Iterable[str], *, folder: str | Path, config: Any, experiment: str = "fedpoison",
             name: str | None = None) -> RunTrackers:
        """Open backends ``names`` for a run of ``config`` (an ExperimentConfig or a plain dict)."""
        data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        key = config.key() if hasattr(config, "key") else str(data.get("key", "run"))
        run = TrackedRun(Path(folder), experiment, name or f"run-{key}", key, data)
        opened: list[Tracker] = []
        try:
            for backend in parse_track(list(names)):
                opened.append(TRACKERS.get(backend, key="track").obj(run))
        except BaseException:
            for tracker in opened:
                tracker.close(ok=False)
            raise
        return cls(opened)

    def log_record(self, record: Mapping[str, Any]) -> None:
        """Log one history record (a round's row) to every tracker; its ``round`` is the step."""
        metrics = numeric_metrics(record)
        for tracker in self.trackers:
            tracker.log_round(int(record["round"]), metrics)

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Log the summary and close every tracker, the run marked finished."""
        text = json.dumps(dict(summary), default=str)
        numbers = summary_numbers(summary)
        for tracker in self.trackers:
            tracker.log_summary(numbers, text)
        self.close(ok=True)

    def close(self, ok: bool = True) -> None:
        """Close every tracker (once)."""
        if self._closed:
            return
        self._closed = True
        for tracker in self.trackers:
            tracker.close(ok=ok)

    def __enter__(self) -> RunTrackers:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close(ok=exc_type is None)


def track_run_files(names: Sequence[str], files: Mapping[str, bytes], *, folder: str | Path, experiment: str,
                    name: str) -> None:
    """Log a finished run from its files (``config.yaml``, ``history.csv``, ``summary.json``)."""
    import pandas as pd
    import yaml

    from fedpoison.plugins import validate_config

    config = validate_config(yaml.safe_load(files["config.yaml"]))
    history = pd.read_csv(io.BytesIO(files["history.csv"]))
    summary = json.loads(files.get("summary.json", b"{}"))
    with RunTrackers.open(names, folder=folder, config=config, experiment=experiment, name=name) as trackers:
        for row in history.to_dict("records"):
            trackers.log_record(row)
        trackers.finish(summary)


class GridTracking:
    """A grid event observer that logs each run to the trackers when it commits.

    Pass it (or a function calling it) as ``run_grid(..., on_event=...)``. A
    run that cannot be logged (the tracking store broke, a disk filled up) is a
    :class:`TrackingWarning` and an entry in :attr:`errors`; the grid goes on.
    """

    def __init__(self, names: Sequence[str], *, folder: str | Path, experiment: str) -> None:
        self.errors: list[str] = []
        self.names = parse_track(list(names))
        self.folder = Path(folder)
        self.experiment = experiment

    def __call__(self, event: Any) -> None:
        """Log the run of a ``run`` event that finished; ignore every other event."""
        if event.kind != "run" or event.outcome is None or not event.outcome.ok or not self.names:
            return
        try:
            track_run_files(self.names, event.outcome.files, folder=self.folder, experiment=self.experiment,
                            name=event.run.label)
        except Exception as exc:  # an observer must not stop the grid: the run is committed already
            message = f"track: could not log run {event.run.label} ({event.run.key}): {exc}"
            self.errors.append(message)
            warnings.warn(message, TrackingWarning, stacklevel=2)
