"""TensorBoard: event files under ``<out>/tensorboard/<run name>/``.

Written with ``torch.utils.tensorboard`` (needs the ``tensorboard`` package,
``pip install 'fedpoison[tensorboard]'``; no TensorFlow). Each history column is
a scalar series over rounds; the summary's numbers are scalars under
``summary/`` at the last round; the config and the summary are also logged as
text. View with ``tensorboard --logdir <out>/tensorboard``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from fedpoison.errors import ConfigError
from fedpoison.tracking.base import TRACKERS, TrackedRun, Tracker


def run_folder_name(name: str, key: str) -> str:
    """A file-system-safe folder name for a run: its label, then its key."""
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_")[:80]
    return f"{safe}-{key}" if safe else key


@TRACKERS.register("tensorboard", description="TensorBoard event files in <out>/tensorboard (fedpoison[tensorboard])")
class TensorBoardTracker(Tracker):
    """Scalars per round, the config and the summary as text."""

    def __init__(self, run: TrackedRun) -> None:
        super().__init__(run)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("track: tensorboard needs the 'tensorboard' package, not installed "
                              "(pip install 'fedpoison[tensorboard]')") from None
        self.logdir = run.folder / "tensorboard" / run_folder_name(run.name, run.key)
        self._writer: Any = SummaryWriter(log_dir=str(self.logdir))
        config = yaml.safe_dump(run.config, sort_keys=False)
        self._writer.add_text("config", "    " + config.replace("\n", "\n    "), 0)
        self._last = 0

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log one round's metrics, the round as the step."""
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)
        self._last = max(self._last, step)

    def log_summary(self, summary: Mapping[str, float], text: str) -> None:
        """Log the run's final numbers."""
        for name, value in summary.items():
            self._writer.add_scalar(f"summary/{name}", value, self._last)
        self._writer.add_text("summary", "    " + json.dumps(json.loads(text), indent=2).replace("\n", "\n    "),
                              self._last)

    def close(self, ok: bool = True) -> None:
        """Flush and close the run."""
        self._writer.close()
