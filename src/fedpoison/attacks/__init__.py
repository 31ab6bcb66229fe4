"""Attacks: data poisoning, crafted updates, the threat model and schedules.

Importing this package imports every module in it, which registers every attack in :data:`ATTACKS`
(``fedpoison list attacks``); ``docs/attacks.md`` describes each one.
"""

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge, MaliciousTraining
from fedpoison.attacks.registry import ATTACKS, register_attack
from fedpoison.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackKind", "Knowledge", "MaliciousTraining", "register_attack"]
