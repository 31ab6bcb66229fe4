"""Whole-config range checks: numbers the code can compute with, and partitions that split.

These run at the end of config resolution (:func:`fedpoison.plugins.resolve_config`):

* every float in the config, plug-in parameters included, is finite and of
  magnitude at most :data:`MAX_MAGNITUDE` (``local.lr=1e308`` or ``.inf``
  validate as floats, then overflow on the first step);
* partition parameters stay where the partitioners give the split they
  promise (:data:`PARTITION_RANGES`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedpoison.errors import ConfigError

if TYPE_CHECKING:
    from fedpoison.config import ExperimentConfig

#: Largest magnitude of any float in a config: squares of it (norms) stay finite in float32 sums.
MAX_MAGNITUDE = 1e9
#: ``partition.<key>: (low, high)`` inclusive ranges in which the partitioners are exact.
PARTITION_RANGES: dict[str, tuple[float, float]] = {
    "alpha": (1e-3, 1e4),   # Dir(alpha): below, numpy's draws round to one-hot; above, to uniform
    "sigma": (1e-3, 10.0),  # log-normal sizes: above ~10 one client takes everything
    "power": (0.1, 100.0),  # Pareto tail: below 0.1 the draws overflow to inf
}


def _floats(data: Any, prefix: str = "") -> list[tuple[str, float]]:
    if isinstance(data, Mapping):
        return [kv for k, v in data.items() for kv in _floats(v, f"{prefix}{k}.")]
    if isinstance(data, list | tuple):
        return [kv for i, v in enumerate(data) for kv in _floats(v, f"{prefix[:-1]}[{i}].")]
    if isinstance(data, float):
        return [(prefix[:-1], data)]
    return []


def check_numbers(cfg: ExperimentConfig) -> None:
    """Every float is finite and at most :data:`MAX_MAGNITUDE` in magnitude; else one ConfigError."""
    for key, value in _floats(cfg.model_dump()):
        if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
            raise ConfigError(f"{key}: expected a finite number of magnitude at most {MAX_MAGNITUDE:g}, got {value!r}")


def check_partition(cfg: ExperimentConfig) -> None:
    """Partition parameters in the ranges where the split is what it promises."""
    params = cfg.partition.params_dict()
    for key, (low, high) in PARTITION_RANGES.items():
        value = params.get(key)
        if isinstance(value, float | int) and not isinstance(value, bool) and not low <= value <= high:
            raise ConfigError(f"partition.{key}: expected a number in [{low:g}, {high:g}] "
                              f"(outside it the split degenerates), got {value!r}")
    min_samples = params.get("min_samples")
    if isinstance(min_samples, int) and min_samples * cfg.clients.num > 10**9:
        raise ConfigError(f"partition.min_samples: {cfg.clients.num} clients x {min_samples} samples is "
                          "more than any dataset holds")


def check_ranges(cfg: ExperimentConfig) -> None:
    """All range checks of this module."""
    check_numbers(cfg)
    check_partition(cfg)
