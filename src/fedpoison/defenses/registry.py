"""Registries of aggregation rules and pre-aggregators.

A rule or pre-aggregator is a class registered with its params model; it is
built as ``cls(params, f=f)`` where ``params`` is the validated instance and
``f`` the number of Byzantine rows the defense assumes. Registry ``meta``:

- ``requires``: the rule's requirement on n and f, in words (``"n >= 4f + 3"``).
- ``filters``: True for rules that keep some rows and drop others (detection
  metrics are reported for them).
"""

from __future__ import annotations

from collections.abc import Callable

from fedpoison.defenses.base import AggregationRule, PreAggregator
from fedpoison.registry import Registry

#: Factories ``cls(params, f=f)`` of aggregation rules.
RULES: Registry[Callable[..., AggregationRule]] = Registry("aggregation rule")
#: Factories ``cls(params, f=f)`` of pre-aggregators.
PRE_AGGREGATORS: Registry[Callable[..., PreAggregator]] = Registry("pre-aggregator")


