"""Server-side defenses: aggregation rules, pre-aggregators and their composition.

Importing this package imports every module in it, which registers every rule
(``RULES``) and pre-aggregator (``PRE_AGGREGATORS``).
See ``docs/defenses.md`` for the list, parameters and references.
"""

from fedpoison.defenses.base import AggregationResult, ParamSlice, PreResult, RoundContext
from fedpoison.defenses.compose import Defense, build_defense
from fedpoison.defenses.registry import PRE_AGGREGATORS, RULES
from fedpoison.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = [
    "PRE_AGGREGATORS",
    "RULES",
    "AggregationResult",
    "Defense",
    "ParamSlice",
    "PreResult",
    "RoundContext",
    "build_defense",
]
