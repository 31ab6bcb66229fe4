"""fedpoison inside a Flower app: robust strategy, auditing and malicious clients.

Install with ``pip install 'fedpoison[flower]'`` (Flower's Message API,
``flwr[simulation]>=1.42,<1.43``, the range this integration is tested on).

- :class:`RobustStrategy`: a Flower strategy (a subclass of Flower's
  ``FedAvg``) that aggregates with any fedpoison defense and optional auditor,
  and reports what they did as metrics and as :class:`RoundReport` records.
- :class:`MaliciousClient`: makes a ClientApp's train reply malicious with a
  fedpoison attack (data poisoning before training, crafted update after).
- :func:`experiment_config`: reads fedpoison settings from a Flower run config
  (``[tool.flwr.app.config.fedpoison.*]`` in the app's ``pyproject.toml``).

Importing this package checks only that Flower is installed; Flower itself is
imported on first use of a name. ``docs/flower.md`` is the user guide.
"""

from __future__ import annotations

import warnings
from importlib import import_module, metadata
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

#: The Flower versions this integration is tested with (the ``flower`` extra).
FLOWER_REQUIREMENT = "flwr[simulation]>=1.42,<1.43"
_TESTED_MINOR = (1, 42)

if find_spec("flwr") is None:
    raise ImportError(
        "fedpoison.integrations.flower needs Flower (package 'flwr'), which is not installed: "
        f"install fedpoison[flower] (pip install 'fedpoison[flower]', i.e. {FLOWER_REQUIREMENT!r})"
    )


def _check_version() -> None:
    try:
        version = metadata.version("flwr")
    except metadata.PackageNotFoundError:  # pragma: no cover - importable but not installed as a dist
        return
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts != _TESTED_MINOR:
        warnings.warn(
            f"fedpoison's Flower integration is tested with {FLOWER_REQUIREMENT!r}, found flwr {version}; "
            "the Message API it uses may differ",
            stacklevel=3,
        )


_check_version()

_EXPORTS = {
    "ArrayLayout": "fedpoison.integrations.flower.records",
    "MaliciousClient": "fedpoison.integrations.flower.malicious",
    "RobustStrategy": "fedpoison.integrations.flower.strategy",
    "RoundReport": "fedpoison.integrations.flower.report",
    "experiment_config": "fedpoison.integrations.flower.config",
    "check_deployable": "fedpoison.integrations.flower.malicious",
}

__all__ = [
    "FLOWER_REQUIREMENT",
    "ArrayLayout",
    "MaliciousClient",
    "RobustStrategy",
    "RoundReport",
    "check_deployable",
    "experiment_config",
]

if TYPE_CHECKING:
    from fedpoison.integrations.flower.config import experiment_config
    from fedpoison.integrations.flower.malicious import MaliciousClient, check_deployable
    from fedpoison.integrations.flower.records import ArrayLayout
    from fedpoison.integrations.flower.report import RoundReport
    from fedpoison.integrations.flower.strategy import RobustStrategy


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use (Flower and torch load then)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
