"""Fashion-MNIST checks of neurotoxin, pgd_backdoor and cerberus (small, CPU-sized).

Run from the repository root (each run is skipped when its result file exists)::

    PYTHONPATH=src python3 examples/attacks2020/checks.py --out /work/runs/atk1 [--dataset digits] [a|b|c ...]

- ``a``: under FedAvg, each backdoor reaches ASR >= 0.8 with clean accuracy within 0.03 of no attack;
- ``b``: neurotoxin's backdoor outlives plain ``backdoor`` (same data, same schedule) over 3 seeds;
- ``c``: against ``norm_bound`` and ``multi_krum``, ``pgd_backdoor`` keeps a higher ASR than
  ``model_replacement`` with the same poisoned data.

Every run's summary and per-round history go to ``OUT/<name>.json``; ``summarise.py`` prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import fedpoison

FMNIST = [
    "dataset.name=fashion-mnist", "dataset.limit=3000", "model.name=cnn28",
    "partition.name=fang", "partition.bias=0.5", "clients.num=20", "clients.fraction=1.0",
    "local.epochs=2", "local.batch_size=16", "local.lr=0.05", "local.momentum=0.9",
    "server.lr=1.0", "eval.every=1",
]
#: the fast version: scikit-learn's digits with the MLP (cnn28 needs 28x28 inputs), more rounds
DIGITS = [
    "dataset.name=digits", "model.name=mlp",
    "partition.name=fang", "partition.bias=0.5", "clients.num=20", "clients.fraction=1.0",
    "local.epochs=2", "local.batch_size=16", "local.lr=0.05", "local.momentum=0.9",
    "server.lr=1.0", "eval.every=1",
]
#: rounds per group on digits (a and c: total; b: total, attack rounds start..end)
DIGITS_ROUNDS = {"a": ["rounds=15"], "b": ["rounds=25", "attack.start_round=5", "attack.end_round=9"],
                 "b2": ["rounds=30", "attack.start_round=5", "attack.end_round=14"], "c": ["rounds=15"]}
#: the same poisoned data for every backdoor: 20% malicious, half of each one's samples copied with the trigger
POISON = ["attack.target_class=0", "attack.fraction=0.2", "attack.poison_mode=append", "attack.poison_fraction=0.5"]

RUNS: dict[str, dict[str, list[str]]] = {
    "a": {
        f"a_{name}": ["rounds=8", "defense.name=mean", *([f"attack.name={name}", *POISON] if name != "none" else [])]
        for name in ("none", "backdoor", "neurotoxin", "pgd_backdoor", "cerberus")
    },
    "b": {
        f"b_{name}_s{seed}": ["rounds=14", "defense.name=mean", f"seed={seed}", f"attack.name={name}", *POISON,
                              "attack.start_round=2", "attack.end_round=6"]
        for seed in (0, 1, 2) for name in ("backdoor", "neurotoxin")
    },
    # b with a longer attack (10 rounds), so that both backdoors are established before the attacker stops
    "b2": {
        f"b2_{name}_s{seed}": ["rounds=16", "defense.name=mean", f"seed={seed}", f"attack.name={name}", *POISON,
                               "attack.start_round=2", "attack.end_round=6"]
        for seed in (0, 1, 2) for name in ("backdoor", "neurotoxin")
    },
    "c": {
        f"c_{defense}_{name}": ["rounds=8", f"defense.name={defense}", f"attack.name={name}", *POISON]
        for defense in ("norm_bound", "multi_krum") for name in ("pgd_backdoor", "model_replacement")
    },
}


def clean(value: object) -> object:
    """JSON-safe: NaN becomes null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dataset", choices=["fmnist", "digits"], default="fmnist")
    parser.add_argument("groups", nargs="*", default=["a", "b", "c"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for group in args.groups:
        for name, overrides in RUNS[group].items():
            base = FMNIST
            if args.dataset == "digits":
                name, base = f"digits_{name}", DIGITS
                overrides = [*overrides, *DIGITS_ROUNDS[group]]  # later keys win
            path = args.out / f"{name}.json"
            if path.exists():
                continue
            start = time.perf_counter()
            result = fedpoison.run(overrides=[*base, *overrides])
            record = {
                "name": name, "overrides": [*base, *overrides], "seconds": time.perf_counter() - start,
                "summary": {k: clean(v) for k, v in result.summary.items()},
                "history": [{k: clean(v) for k, v in row.items()} for row in result.history.to_dict("records")],
            }
            path.write_text(json.dumps(record, indent=1, default=str))
            print(name, f"{record['seconds']:.0f}s", result.summary.get("clean_accuracy"),
                  result.summary.get("attack_success_rate"), flush=True)


if __name__ == "__main__":
    main()
