"""What checkpointing grid runs costs: a checkpoint's size and write time against a round's time.

Workload: the Fashion-MNIST FedAvg of ``core_fmnist.py`` (50 clients x 600
samples, cnn28, 1 epoch, batch 32), with a sign-flip attack and the median
rule, so a checkpoint holds the attackers' last rows too. It times ``--rounds``
rounds, then ``--saves`` atomic checkpoint writes (temp file, fsync, rename)
of the resulting state, and reports the overhead of the grid's default,
a checkpoint every 10 rounds. Digits stands in when Fashion-MNIST is missing.

Run: ``python benchmarks/checkpoint_cost.py [--rounds 2] [--saves 5] [--no-write]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_common import machine, update_results

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()
    before = machine()

    from fedpoison.experiments.runner import DEFAULT_CHECKPOINT_EVERY
    from fedpoison.plugins import load_config
    from fedpoison.simulation.checkpoint import CHECKPOINT, save_checkpoint
    from fedpoison.simulation.federation import build_federation
    from fedpoison.simulation.loop import LoopState, run_round

    data = ["dataset.name=fashion-mnist", "model.name=cnn28", "dataset.limit=30000"] if FMNIST.is_dir() else []
    cfg = load_config(overrides=[*data, "clients.num=50", f"rounds={args.rounds}", "local.batch_size=32",
                                 "attack.name=sign_flip", "attack.fraction=0.2", "defense.name=median"])
    fed = build_federation(cfg)
    state = LoopState(params=fed.init_params.clone())
    round_s = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        run_round(fed, state)
        round_s.append(time.perf_counter() - t0)
    saves = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.saves):
            t0 = time.perf_counter()
            save_checkpoint(fed, state, Path(tmp))
            saves.append(time.perf_counter() - t0)
        size_mib = (Path(tmp) / CHECKPOINT).stat().st_size / 2**20
    after = machine()
    per_round, per_save = statistics.median(round_s), statistics.median(saves)
    every = DEFAULT_CHECKPOINT_EVERY
    overhead = per_save / (every * per_round)
    dataset = "Fashion-MNIST, cnn28" if data else "digits, mlp (Fashion-MNIST not installed)"
    body = f"""## Checkpoints of grid runs: size and write time

Command: `python benchmarks/checkpoint_cost.py --rounds {args.rounds} --saves {args.saves}`

Workload: {dataset}, 50 clients, batch 32, sign flip (20 %) against the median;
{cfg.model.name if cfg.model.name != 'auto' else 'the default'} model of {fed.spec.dim:,} parameters.
A checkpoint is written atomically (temp file, fsync, rename).

Machine: {before['cpu']}, {before['cores']} cores, torch {before['torch']}, Python {before['python']}.
**Shared machine**: load average {before['loadavg']} before, {after['loadavg']} after.

| figure | value |
|---|---:|
| checkpoint size | {size_mib:.2f} MiB |
| write time (median of {args.saves}) | {per_save * 1000:.1f} ms |
| round time (median of {args.rounds}) | {per_round:.2f} s |
| overhead of a checkpoint every {every} rounds | {overhead * 100:.2f} % |
"""
    print(body)
    if not args.no_write:
        update_results("checkpoint_cost", body)


if __name__ == "__main__":
    main()
