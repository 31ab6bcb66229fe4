"""What each registered attack costs per round, against plain local training (``attack.name: none``).

Every attack in the registry (so attacks added later are included) runs the
same federation side by side in one process: digits, the MLP, 10 clients all
taking part, 3 of them malicious in every round (``always_participate``),
1 local epoch of batch 16, FedAvg. Each attack is configured with its defaults
and the least knowledge it needs. After one warm-up round per attack, the
attacks take turns round by round (``--rounds`` each), so load drifts on a
shared machine hit them alike. A round's cost is the CPU time of the process
(``time.process_time``, one torch thread) over the round: training of honest and
malicious clients, the attack's own training and crafting, and aggregation (no
evaluation runs in the timed rounds). CPU time rather than wall time, because
on a shared machine the wall time mostly measures the other processes. The
figure is the median over rounds, and the ratio is that over the median of the
no-attack rounds.

``--workload fmnist`` runs the same on Fashion-MNIST with cnn28 (10 clients
of 100 samples, ``dataset.limit: 1000``), where a round's training is heavier.

Run: ``python benchmarks/attack_cost.py [--workload digits|fmnist] [--rounds 5] [--no-write]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_common import machine, update_results

COMMON = [
    "partition.name=iid", "clients.num=10", "clients.fraction=1.0",
    "local.epochs=1", "local.batch_size=16", "local.engine=sequential", "defense.name=mean",
    "rounds=1000", "eval.every=1000",
]
WORKLOADS: dict[str, tuple[str, list[str]]] = {
    "digits": ("digits, MLP", ["dataset.name=digits", "model.name=mlp", *COMMON]),
    "fmnist": ("Fashion-MNIST (1,000 samples), cnn28",
               ["dataset.name=fashion-mnist", "dataset.limit=1000", "model.name=cnn28", *COMMON]),
}


def overrides_for(name: str, meta: dict[str, Any]) -> list[str]:
    """The attack's config: 3 malicious clients in every round, the least knowledge it needs."""
    if name == "none":
        return ["attack.name=none"]
    return [f"attack.name={name}", "attack.count=3", "attack.always_participate=true",
            f"attack.knowledge={meta.get('knowledge', 'local')}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="digits")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()
    before = machine()

    import torch

    torch.set_num_threads(1)
    from fedpoison.attacks import ATTACKS
    from fedpoison.errors import ConfigError
    from fedpoison.plugins import load_config
    from fedpoison.simulation.federation import build_federation
    from fedpoison.simulation.loop import LoopState, run_round

    what, base_cfg = WORKLOADS[args.workload]
    names = ["none", *sorted(ATTACKS.names())]
    runs: dict[str, tuple[Any, LoopState]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        meta = {} if name == "none" else dict(ATTACKS.get(name).meta)
        try:
            fed = build_federation(load_config(None, [*base_cfg, *overrides_for(name, meta)]))
        except ConfigError as exc:
            skipped[name] = str(exc)
            continue
        state = LoopState(params=fed.init_params.clone())
        run_round(fed, state)  # warm-up (and round 0's evaluation)
        runs[name] = (fed, state)
    costs: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (fed, state) in runs.items():
            start = time.process_time()
            run_round(fed, state)
            costs[name].append(time.process_time() - start)
    after = machine()
    base = statistics.median(costs["none"])
    rows = sorted(((statistics.median(c), name) for name, c in costs.items()), key=lambda r: r[0])
    lines = [
        f"## Attack cost per round against plain local training ({what})",
        "",
        f"Command: `python benchmarks/attack_cost.py --workload {args.workload} --rounds {args.rounds}`",
        "",
        f"Workload: {what}, 10 clients all taking part, 3 malicious in every round, 1 epoch of batch 16,",
        "sequential engine, FedAvg; each attack with its defaults and the least knowledge it needs. The",
        "attacks take turns round by round in one process after a warm-up round each. Cost = CPU time of the",
        "process (one torch thread) over a round: training (honest and malicious, the attack's own training",
        f"and crafting) + aggregation, no evaluation; median of {args.rounds} rounds.",
        "",
        f"Machine: {before['cpu']}, {before['cores']} cores, torch {before['torch']}, Python {before['python']}.",
        f"**Shared machine**: load average {before['loadavg']} before, {after['loadavg']} after.",
        "",
        "| attack | CPU s / round | x no attack |",
        "|---|---:|---:|",
    ]
    for cost, name in rows:
        lines.append(f"| `{name}` | {cost:.3f} | {cost / base:.2f} |")
    for name, why in skipped.items():
        lines.append(f"| `{name}` | not run: {why} | |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        update_results(f"attack_cost_{args.workload}", body)


if __name__ == "__main__":
    main()
