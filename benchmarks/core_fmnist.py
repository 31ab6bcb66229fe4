"""Issue 2's benchmark: fedpoison against a plain PyTorch script on Fashion-MNIST FedAvg.

Workload: Fashion-MNIST, 50 clients x 600 IID samples, the 28x28 CNN, 1 local epoch, batch 32,
lr 0.05, momentum 0, 5 rounds, every client in every round. Both contenders run
in the same benchmark run, each in its own subprocess (wall time includes
start-up, imports and data loading; peak RSS is per process), interleaved, and
medians are reported. Goal: fedpoison <= 1.10x the script's wall time and
<= 1.2x its peak memory.

Run: ``python benchmarks/core_fmnist.py [--repeats 3] [--no-write]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_common import (
    Contender,
    best_reference,
    compare,
    machine,
    markdown_table,
    reference_contenders,
    update_results,
)

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()
    before = machine()
    contenders = [
        *reference_contenders("core"),
        Contender("fedpoison (engine auto)", [sys.executable, str(HERE / "speed_fedpoison.py"), "core"]),
    ]
    summaries = compare(contenders, args.repeats)
    after = machine()
    ref, fp = best_reference(summaries), summaries[-1]
    time_ratio = fp["wall_s"] / ref["wall_s"]
    mem_ratio = fp["peak_mib"] / ref["peak_mib"]
    body = f"""## Core: Fashion-MNIST FedAvg, fedpoison vs a plain PyTorch script (issue 2)

Command: `python benchmarks/core_fmnist.py --repeats {args.repeats}`

Workload: Fashion-MNIST, 50 clients x 600 IID samples, cnn28, 1 epoch, batch 32, lr 0.05, momentum 0, 5 rounds, all
clients every round; evaluation after the first and the last round in both. Whole-process wall time
(start-up, imports and data loading included) and peak RSS of each process, medians of
{args.repeats} interleaved runs. fedpoison's `local.engine=auto` used engine: `{fp.get('result', {}).get('engine', '?')}`.

Machine: {before['cpu']}, {before['cores']} cores, torch {before['torch']} ({before['torch_threads']} intra-op
threads), Python {before['python']}. **Shared machine**: load average {before['loadavg']} before,
{after['loadavg']} after; other engineers' jobs ran at the same time, so absolute times are noisy.

{markdown_table(summaries, ref['name'])}

Ratios are to the faster script variant ({ref['name']}). All contenders ran with `OMP_WAIT_POLICY=PASSIVE`
(see speed_common.py: on the loaded machine OpenMP's default spinning made two-thread steps 25x slower).

Training phase only (sum over rounds, medians): script {ref['result'].get('train_s', float('nan')):.2f} s, fedpoison
{fp['result'].get('train_s', float('nan')):.2f} s.

Goal: time <= 1.10x, memory <= 1.2x. Measured: time **{time_ratio:.2f}x** ({'met' if time_ratio <= 1.10 else 'not met'}),
memory **{mem_ratio:.2f}x** ({'met' if mem_ratio <= 1.2 else 'not met'}).
"""
    print(body)
    if not args.no_write:
        update_results("core_fmnist", body)


if __name__ == "__main__":
    main()
