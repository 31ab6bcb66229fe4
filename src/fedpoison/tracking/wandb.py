"""Weights & Biases, offline: runs written under ``<out>/wandb`` for a later ``wandb sync``.

The config is the run's config; each round's metrics are one ``log`` call with
the round as step; the summary goes into the run's summary. Nothing is sent
over the network (``mode="offline"``). Needs ``wandb``
(``pip install 'fedpoison[wandb]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedpoison.errors import ConfigError
from fedpoison.tracking.base import TRACKERS, TrackedRun, Tracker


@TRACKERS.register("wandb", description="Weights & Biases offline runs in <out>/wandb (fedpoison[wandb])")
class WandbTracker(Tracker):
    """An offline W&B run per fedpoison run."""

    def __init__(self, run: TrackedRun) -> None:
        super().__init__(run)
        try:
            import wandb
        except ImportError:
            raise ConfigError("track: wandb needs the 'wandb' package, not installed "
                              "(pip install 'fedpoison[wandb]')") from None
        run.folder.mkdir(parents=True, exist_ok=True)
        self._run: Any = wandb.init(mode="offline", dir=str(run.folder), project=run.experiment, name=run.name,
                                    config=run.config, tags=[run.key], reinit="create_new")
        self._last_step = -1

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log one round's metrics, the round as the step.

        W&B's steps only go forward, so metrics of a round older than the last
        one logged are left out: the per-round ``detection_*`` columns, which
        are computed when the run ends, reach W&B for the last round only (and
        in the summary); ``history.csv`` has all of them.
        """
        if step < self._last_step:
            return
        self._last_step = step
        self._run.log(dict(metrics), step=step)

    def log_summary(self, summary: Mapping[str, float], text: str) -> None:
        """Log the run's final numbers."""
        self._run.summary.update(dict(summary))

    def close(self, ok: bool = True) -> None:
        """Flush and close the run."""
        self._run.finish(exit_code=0 if ok else 1)
