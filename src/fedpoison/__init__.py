"""fedpoison: simulate model-poisoning attacks on federated learning and the defenses, and measure both.

Quick start
-----------
>>> import fedpoison
>>> result = fedpoison.run(overrides=["rounds=2"])          # doctest: +SKIP
>>> result.summary["final_accuracy"]                         # doctest: +SKIP
"""

__version__ = "0.1.0"

from fedpoison.config import ExperimentConfig
from fedpoison.errors import ConfigError, DataError
from fedpoison.plugins import load_config
from fedpoison.simulation import RunResult, run

__all__ = ["ConfigError", "DataError", "ExperimentConfig", "RunResult", "__version__", "load_config", "run"]
