"""fedpoison: simulate model-poisoning attacks on federated learning and the defenses, and measure both.

The names below are imported on first use, so ``import fedpoison`` (and the
``fedpoison --help`` command) does not pay for torch until a run needs it.

Quick start
-----------
>>> import fedpoison
>>> result = fedpoison.run(overrides=["rounds=2"])          # doctest: +SKIP
>>> result.summary["final_accuracy"]                         # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fedpoison.errors import ConfigError, DataError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fedpoison.config import ExperimentConfig
    from fedpoison.plugins import load_config
    from fedpoison.simulation import RunResult, run

#: Public name -> the module that defines it (imported by :func:`__getattr__` on first use).
_LAZY = {
    "ExperimentConfig": "fedpoison.config",
    "load_config": "fedpoison.plugins",
    "RunResult": "fedpoison.simulation",
    "run": "fedpoison.simulation",
}

__all__ = ["ConfigError", "DataError", "ExperimentConfig", "RunResult", "__version__", "load_config", "run"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fedpoison' has no attribute {name!r}")
