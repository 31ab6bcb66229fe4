"""Server-side defenses: aggregation rules, pre-aggregators and their composition."""

from fedpoison.defenses import mean  # noqa: F401  (registration)
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
