"""``fedpoison demo``: the quick start's small comparative grid on digits, and its report.

Three attacks (none, an untargeted sign flip, a backdoor) against three
defenses (FedAvg, the coordinate-wise median, FedAvg behind a norm auditor
that quarantines flagged clients), on the bundled digits data, 20 clients of
which 20 % are malicious, 10 rounds. It finishes in a few minutes on two
cores, writes the report, and checks the three headline claims on the result
tables (:mod:`fedpoison.results.findings`).

``DEMO_GRID`` is also shipped as ``scenarios/demo.yaml``.
"""

from __future__ import annotations

import copy
from typing import Any

DEMO_GRID: dict[str, Any] = {
    "name": "demo",
    "description": (
        "How much do an untargeted attack (sign flip) and a backdoor hurt FedAvg on digits, and how much "
        "do the median rule and a norm auditor buy back? 20 clients, 4 of them malicious, 10 rounds."
    ),
    "base": {
        "rounds": 10,
        "dataset": {"name": "digits"},
        "clients": {"num": 20},
        "attack": {"fraction": 0.2},
    },
    "axes": {
        "attack": [
            {"name": "none"},
            {"name": "sign_flip", "scale": 4.0},
            {"name": "model_replacement", "scale": 2.0},
        ],
        "seed": [0, 1],
    },
    "zip": [
        {"defense.name": ["mean", "median", "mean"],
         "audit.name": ["none", "none", "norm_mad"]},
    ],
    "analysis": {"last_k": 3, "target_accuracy": 0.8},
}


def demo_grid(seeds: int = 2, rounds: int | None = None) -> dict[str, Any]:
    """The demo grid with ``seeds`` seeds (0, 1, ...) and optionally another number of rounds."""
    grid = copy.deepcopy(DEMO_GRID)
    grid["axes"]["seed"] = list(range(seeds))
    if rounds is not None:
        grid["base"]["rounds"] = rounds
    return grid
