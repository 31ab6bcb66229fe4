"""Server-side defenses: aggregation rules, pre-aggregators and their composition.

Importing this package registers every rule (``RULES``) and pre-aggregator
(``PRE_AGGREGATORS``) and the config check of their requirements on n and f.
See ``docs/defenses.md`` for the list, parameters and references.
"""

from fedpoison.defenses import (  # noqa: F401  (registration)
    bucketing,
    bulyan,
    centered_clipping,
    clipping,
    dnc,
    flame,
    fltrust,
    foolsgold,
    geometric_median,
    krum,
    mean,
    median,
    nnm,
    norm_bound,
    requirements,
    signguard,
    trimmed_mean,
)
from fedpoison.defenses.base import AggregationResult, ParamSlice, PreResult, RoundContext
from fedpoison.defenses.compose import Defense, build_defense
from fedpoison.defenses.registry import PRE_AGGREGATORS, RULES

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
