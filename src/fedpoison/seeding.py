"""Seeded generators, one per purpose, derived from the run seed.

Every random draw in a run takes an explicit generator from :func:`generator`,
keyed by the run seed, a purpose and ids (round, client). Generators are derived
afresh from those keys rather than carried along, so a round's randomness does
not depend on what earlier rounds drew: a resumed run and an uninterrupted one
draw the same bits, and adding an attack does not change honest clients' batches.
"""

from __future__ import annotations

import numpy as np
import torch

PURPOSES: dict[str, int] = {
    "init": 1,
    "partition": 2,
    "malicious": 3,
    "sampling": 4,
    "train": 5,
    "attack": 6,
    "poison": 7,
    "schedule": 8,
    "defense": 9,
    "audit": 10,
    "root": 11,
    "server": 12,
    "indicator": 13,
}


def derive_seed(seed: int, purpose: str, *ids: int) -> int:
    """A 63-bit seed for ``(seed, purpose, *ids)``; distinct keys give independent streams."""
    ss = np.random.SeedSequence([seed, PURPOSES[purpose], *[int(i) for i in ids]])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def generator(seed: int, purpose: str, *ids: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` for ``(seed, purpose, *ids)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, purpose, *ids))
