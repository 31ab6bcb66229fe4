"""Requirements of rules on n (rows) and f (assumed Byzantine rows), declared once.

A rule or pre-aggregator declares its requirement as a
:class:`~fedpoison.registry.Requirement` in its registration
(``requires=...``). The same object is used

- by config validation, when the rows per round are known
  (:mod:`fedpoison.plugins.resolve`), so a bad combination never starts a run;
- at call time, through :func:`enforce`: the rule raises
  :class:`~fedpoison.errors.AggregationError` and never falls back to another rule;
- by ``fedpoison list defenses`` and the docs, which show its text.

A pre-aggregator that changes the number of rows also defines
``rows_out(n, params) -> int`` (static; bucketing makes ``ceil(n / s)``
buckets), and a rule that keys state by client id declares the
``per_client_state`` tag, so no pre-aggregator may regroup rows before it.
"""

from __future__ import annotations

from typing import Any

from fedpoison.errors import AggregationError
from fedpoison.registry import Requirement


def requirement_error(rule: str, requirement: str, **values: Any) -> AggregationError:
    """An :class:`AggregationError` naming the rule, the requirement and the values."""
    got = ", ".join(f"{k}={v}" for k, v in values.items())
    return AggregationError(f"{rule}: requires {requirement}, got {got}")


def require(ok: bool, rule: str, requirement: str, **values: Any) -> None:
    """Raise :func:`requirement_error` unless ``ok``."""
    if not ok:
        raise requirement_error(rule, requirement, **values)


def enforce(requirement: Requirement, rule: str, n: int, f: int, params: Any = None, **values: Any) -> None:
    """Raise :func:`requirement_error` when ``n`` rows and ``f`` Byzantine rows break ``requirement``."""
    if requirement.violated(n, f, params):
        raise requirement_error(rule, requirement.text, n=n, f=f, **values)


def at_least(a: int, b: int, text: str) -> Requirement:
    """The requirement ``n >= a f + b``, e.g. ``at_least(2, 3, "n >= 2f + 3")``."""
    return Requirement(text, lambda n, f, params: n >= a * f + b)
