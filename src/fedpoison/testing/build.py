"""Build registered plug-ins the way a run builds them, for tests and notebooks."""

from __future__ import annotations

from typing import Any

from fedpoison.attacks.base import Attack


def build_defense_step(name: str, f: int = 0, *, pre: bool = False, **params: Any) -> Any:
    """A registered aggregation rule (or, with ``pre=True``, pre-aggregator) with ``params`` and ``f``."""
    from fedpoison.defenses.registry import PRE_AGGREGATORS, RULES

    entry = (PRE_AGGREGATORS if pre else RULES).get(name)
    return entry.obj(entry.params(**params), f=f)


def build_attack(name: str, *, collude: bool = False, input_shape: tuple[int, ...] = (1, 8, 8),
                 num_classes: int = 10, **params: Any) -> Attack:
    """A registered attack with ``params``, for ``num_classes`` classes of inputs of ``input_shape``."""
    from fedpoison.attacks import ATTACKS

    entry = ATTACKS.get(name)
    attack: Attack = entry.obj(entry.params(**params), num_classes=num_classes, input_shape=input_shape,
                               collude=collude)
    return attack


def build_auditor(name: str, *, num_clients: int = 6, **params: Any) -> Any:
    """A registered auditor with ``params`` for a federation of ``num_clients``."""
    from fedpoison.audit import AUDITORS

    entry = AUDITORS.get(name)
    return entry.obj(entry.params(**params), num_clients=num_clients)
