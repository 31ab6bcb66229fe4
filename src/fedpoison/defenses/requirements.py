"""Requirements of rules on n (rows) and f (assumed Byzantine rows), checked twice.

A rule or pre-aggregator class may define

- ``violation(n, f, params) -> str | None`` (static): the requirement it
  breaks for ``n`` rows and ``f`` Byzantine rows, in words, or ``None``;
- ``rows_out(n, params) -> int`` (static, pre-aggregators only): how many
  rows it hands on (bucketing makes ``ceil(n / s)`` buckets);
- ``per_client_state = True`` (rules only): it keys state by client id, so no
  pre-aggregator may regroup rows before it.

At call time a rule raises :class:`~fedpoison.errors.AggregationError` through
:func:`require`; it never falls back to another rule. When the participants per
round are known at validation time, :func:`check_config` (registered with
:func:`fedpoison.config.register_check`) fails the config instead, so a bad
combination never starts a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedpoison.config import register_check
from fedpoison.errors import AggregationError, ConfigError

if TYPE_CHECKING:
    from fedpoison.config import ExperimentConfig


def requirement_error(rule: str, requirement: str, **values: Any) -> AggregationError:
    """An :class:`AggregationError` naming the rule, the requirement and the values."""
    got = ", ".join(f"{k}={v}" for k, v in values.items())
    return AggregationError(f"{rule}: requires {requirement}, got {got}")


def require(ok: bool, rule: str, requirement: str, **values: Any) -> None:
    """Raise :func:`requirement_error` unless ``ok``."""
    if not ok:
        raise requirement_error(rule, requirement, **values)


def assumed_f(config: ExperimentConfig) -> int:
    """The ``f`` a defense assumes for ``config`` (:attr:`ExperimentConfig.assumed_f`)."""
    return config.assumed_f


@register_check
def check_config(config: ExperimentConfig) -> None:
    """Fail validation when the configured n and f break the defense's requirements."""
    from fedpoison.defenses.registry import PRE_AGGREGATORS, RULES

    section = config.defense
    n = config.participants_per_round
    f = assumed_f(config)
    for i, name in enumerate(section.pre):
        entry = PRE_AGGREGATORS.get(name, key=f"defense.pre[{i}]")
        params = section.params(entry.params)
        _check(entry.obj, f"defense.pre[{i}] '{name}'", n, f, params)
        rows_out = getattr(entry.obj, "rows_out", None)
        if rows_out is not None:
            n = rows_out(n, params)
    entry = RULES.get(section.name, key="defense.name")
    _check(entry.obj, f"defense.name '{section.name}'", n, f, section.params(entry.params))
    if getattr(entry.obj, "per_client_state", False):
        regroups = [p for p in section.pre if getattr(PRE_AGGREGATORS.get(p).obj, "rows_out", None)]
        if regroups:
            raise ConfigError(
                f"defense.name '{section.name}': keeps per-client history, so it needs one row per client; "
                f"defense.pre {regroups} regroups rows into buckets (remove it or choose another rule)"
            )


def _check(cls: Any, where: str, n: int, f: int, params: Any) -> None:
    violation = getattr(cls, "violation", None)
    if violation is None:
        return
    broken = violation(n, f, params)
    if broken:
        raise ConfigError(
            f"{where}: requires {broken}, got n={n} rows per round and f={f} "
            "(set defense.f, clients.per_round or attack.fraction/count)"
        )
