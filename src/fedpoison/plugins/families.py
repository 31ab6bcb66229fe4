"""The seven plug-in families and their registries, found in one place."""

from __future__ import annotations

from typing import Any

from fedpoison.plugins.loading import load_entry_points
from fedpoison.registry import Registry

#: ``fedpoison list`` names of the families, in the order of a run's data flow.
FAMILY_NAMES = ("datasets", "partitions", "models", "attacks", "defenses", "pre-aggregators", "auditors")


def registries() -> dict[str, Registry[Any]]:
    """Every family's registry by its ``fedpoison list`` name, built-ins and installed plug-ins loaded."""
    from fedpoison.attacks import ATTACKS
    from fedpoison.audit import AUDITORS
    from fedpoison.data import DATASETS, PARTITIONERS
    from fedpoison.defenses import PRE_AGGREGATORS, RULES
    from fedpoison.models import MODELS

    load_entry_points()
    return {"datasets": DATASETS, "partitions": PARTITIONERS, "models": MODELS, "attacks": ATTACKS,
            "defenses": RULES, "pre-aggregators": PRE_AGGREGATORS, "auditors": AUDITORS}
