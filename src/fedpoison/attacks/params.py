"""Parameter pieces shared by several attacks, so a key means the same everywhere.

``attack.target_class``, ``attack.poison_fraction``, ``attack.scale`` and
``attack.std`` are defined once here and reused by every attack that takes
them; checks that need the dataset (a class index below ``num_classes``) run
when the attack is built, and name the key and the value.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fedpoison.errors import ConfigError


class AttackParams(BaseModel):
    """Base of every attack's params model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class TargetParams(AttackParams):
    """Data poisoning towards one class."""

    #: The class poisoned samples are relabelled to.
    target_class: int = Field(0, ge=0)
    #: Share of the malicious client's samples that are poisoned.
    poison_fraction: float = Field(0.5, ge=0.0, le=1.0)
    #: ``replace``: poison those samples in place (BadNets); ``append``: keep every
    #: clean sample and add poisoned copies of them (Bagdasaryan et al.'s batches
    #: of clean plus backdoored inputs).
    poison_mode: Literal["replace", "append"] = "replace"


def check_class(key: str, value: int, num_classes: int) -> int:
    """Return ``value`` if it is a class index, else raise :class:`ConfigError` naming ``key``."""
    if not 0 <= value < num_classes:
        raise ConfigError(f"{key}: expected a class in [0, {num_classes}), got {value}")
    return value
