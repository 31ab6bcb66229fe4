"""MLflow: runs in a local tracking store, ``sqlite:///<out>/mlflow.db`` by default.

The config is logged as params (dotted keys) and as the artifact
``config.yaml``; each history column is a metric with the round as its step;
the summary's numbers are metrics named ``summary.<name>`` and ``summary.json``
an artifact. Artifacts go to ``<out>/mlartifacts``. Set ``MLFLOW_TRACKING_URI``
to log to another store or a server instead. Needs ``mlflow``
(``pip install 'fedpoison[mlflow]'``). Browse with
``mlflow ui --backend-store-uri sqlite:///<out>/mlflow.db``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import yaml

from fedpoison.errors import ConfigError
from fedpoison.tracking.base import TRACKERS, TrackedRun, Tracker, flatten_config

#: MLflow's limit on a param value's length.
_PARAM_MAX = 6000
#: Metrics per ``log_batch`` call (MLflow accepts at most 1000).
_BATCH = 900


def tracking_uri(run: TrackedRun) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a SQLite store in the output folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run.folder / 'mlflow.db').resolve()}"


def experiment_id(client: Any, name: str, artifacts: str) -> str:
    """The id of experiment ``name``, created (with its artifacts in ``artifacts``) if needed."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifacts))


@TRACKERS.register("mlflow", description="MLflow runs in sqlite:///<out>/mlflow.db or MLFLOW_TRACKING_URI (fedpoison[mlflow])")
class MlflowTracker(Tracker):
    """Params, per-round metrics with the round as step, summary metrics and artifacts."""

    def __init__(self, run: TrackedRun) -> None:
        super().__init__(run)
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("track: mlflow needs the 'mlflow' package, not installed "
                              "(pip install 'fedpoison[mlflow]')") from None
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        run.folder.mkdir(parents=True, exist_ok=True)
        self.uri = tracking_uri(run)
        self._client = MlflowClient(tracking_uri=self.uri)
        artifacts = (run.folder / "mlartifacts").resolve().as_uri()
        exp = experiment_id(self._client, run.experiment, artifacts)
        self.run_id = self._client.create_run(exp, run_name=run.name,
                                              tags={"fedpoison.key": run.key}).info.run_id
        params = [Param(k, v[:_PARAM_MAX]) for k, v in flatten_config(run.config).items()]
        for i in range(0, len(params), 100):
            self._client.log_batch(self.run_id, params=params[i:i + 100])
        self._client.log_text(self.run_id, yaml.safe_dump(run.config, sort_keys=False), "config.yaml")

    def _metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(name, value, now, step) for name, value in metrics.items()]
        for i in range(0, len(rows), _BATCH):
            self._client.log_batch(self.run_id, metrics=rows[i:i + _BATCH])

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log one round's metrics, the round as the step."""
        self._metrics(metrics, step)

    def log_summary(self, summary: Mapping[str, float], text: str) -> None:
        """Log the run's final numbers."""
        self._metrics({f"summary.{k}": v for k, v in summary.items()}, 0)
        self._client.log_text(self.run_id, text, "summary.json")

    def close(self, ok: bool = True) -> None:
        """Flush and close the run."""
        self._client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")
