"""The tracker interface: what a run tells an experiment tracker, and nothing more.

A tracker is an observer. It receives the run's resolved config once, each
round's numeric metrics (the columns of ``history.csv``), and the run's final
summary; it never feeds anything back into the run, so a run gives the same
``history.csv`` with or without tracking.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedpoison.registry import Registry


def numeric_metrics(row: Mapping[str, Any], *, skip: tuple[str, ...] = ("round",)) -> dict[str, float]:
    """The finite numbers of a record, as floats (booleans as 0/1); names in ``skip`` are left out.

    Strings, lists, missing and non-finite values are left out: trackers store
    numbers only, and NaN marks "not measured this round" in ``history.csv``.
    """
    out: dict[str, float] = {}
    for name, value in row.items():
        if name in skip or isinstance(value, str) or value is None:
            continue
        if isinstance(value, bool | np.bool_):
            out[name] = 1.0 if value else 0.0
        elif isinstance(value, numbers.Real):
            number = float(value)
            if math.isfinite(number):
                out[name] = number
    return out


def flatten_config(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``dotted.key -> text`` (lists and ``None`` as their YAML-ish text)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_config(value, prefix=f"{name}."))
        else:
            out[name] = "null" if value is None else str(value)
    return out


@dataclass(frozen=True)
class TrackedRun:
    """Who a tracked run is.

    Attributes
    ----------
    folder:
        The output folder the local backends write under (a run's ``--out``,
        or a grid's results directory).
    experiment:
        The experiment (grid) name; trackers group runs under it.
    name:
        The run's display name (a grid run's label).
    key:
        The run's config hash, logged as a tag.
    config:
        The resolved config as plain data.
    """

    folder: Path
    experiment: str
    name: str
    key: str
    config: dict[str, Any] = field(default_factory=dict)


class Tracker(ABC):
    """One backend's logger for one run: opened with the run, then rounds, then the summary, then closed."""

    def __init__(self, run: TrackedRun) -> None:
        self.run = run

    @abstractmethod
    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log one round's metrics at ``step`` (the round index)."""

    @abstractmethod
    def log_summary(self, summary: Mapping[str, float], text: str) -> None:
        """Log the run's final numbers (``text`` is the whole ``summary.json``)."""

    @abstractmethod
    def close(self, ok: bool = True) -> None:
        """Flush and close; ``ok=False`` marks the run as failed where the backend can."""


#: Experiment trackers by name (``--track NAME[,NAME]`` or ``track:`` in a config).
TRACKERS: Registry[type[Tracker]] = Registry("trackers")
