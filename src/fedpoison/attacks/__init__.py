"""Attacks: data poisoning, crafted updates, the threat model and schedules.

Importing this package registers every attack in :data:`ATTACKS`
(``fedpoison list attacks``); ``docs/attacks.md`` describes each one.
"""

from fedpoison.attacks import (  # noqa: F401  (registration)
    alie,
    backdoor,
    fang,
    free_rider,
    ipm,
    label_flip,
    mimic,
    min_max,
    noise,
    nonfinite,
    scaling,
    sign_flip,
)
from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.registry import ATTACKS, register_attack

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackKind", "Knowledge", "register_attack"]
