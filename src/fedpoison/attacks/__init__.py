"""Attacks: data poisoning, crafted updates, the threat model and schedules."""

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.registry import ATTACKS

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackKind", "Knowledge"]
