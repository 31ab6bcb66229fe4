"""Registries of aggregation rules and pre-aggregators.

A rule or pre-aggregator is a class registered with its params model; it is
built as ``cls(params, f=f)`` where ``params`` is the validated instance and
``f`` the number of Byzantine rows the defense assumes. Registry ``meta``:

- ``requires``: the rule's requirement on n and f, in words (``"n >= 4f + 3"``).
- ``filters``: True for rules that keep some rows and drop others (detection
  metrics are reported for them).

Every registered class's ``__call__`` checks its inputs first, so a wrong
shape, dtype or weight vector is an :class:`~fedpoison.errors.UpdateError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedpoison.defenses.base import AggregationRule, PreAggregator
from fedpoison.defenses.inputs import checked_call
from fedpoison.registry import Registry


class StepRegistry(Registry[Callable[..., Any]]):
    """A registry of rules or pre-aggregators whose calls check their inputs (:mod:`fedpoison.defenses.inputs`)."""

    def register(self, name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register as :meth:`Registry.register` does, after wrapping ``__call__`` with the input checks."""
        inner = super().register(name, **kwargs)

        def decorate(obj: Callable[..., Any]) -> Callable[..., Any]:
            return inner(checked_call(obj, f"{self.family} '{name}'"))

        return decorate


#: Factories ``cls(params, f=f)`` of aggregation rules.
RULES: Registry[Callable[..., AggregationRule]] = StepRegistry("aggregation rule")
#: Factories ``cls(params, f=f)`` of pre-aggregators.
PRE_AGGREGATORS: Registry[Callable[..., PreAggregator]] = StepRegistry("pre-aggregator")


