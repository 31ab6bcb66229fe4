"""Check the memory formula of docs/performance.md on runs with 1,000 clients.

Each configuration runs in its own subprocess, which records its RSS after the
imports, after loading the data, after building the federation (model, the
clients' index sets) and at the end (peak, ``ru_maxrss``). The formula

    peak ~= runtime + dataset + partition + c_u * k * d * 4 B + 3 * e(k) * d * 4 B + history

with ``e(k)`` the rows the batched engine stacks at once (each lane's vmap chunk,
``min(max_clients, ceil(k / lanes))``, summed over the lanes; three copies: parameters,
momentum buffers, gradients) is fitted once (``c_u``, the live copies of the per-round
``k x d`` update matrix, from the smallest and the largest ``k``) and then checked on the configurations it was not
fitted on, including a run with 5x the rounds (nothing but the history may grow).

Run: ``python benchmarks/speed_memory.py [--no-write]``
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_common import machine, measure, update_results

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024


def _rss() -> dict[str, float]:
    with open("/proc/self/status") as fh:
        now = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return {"now_mib": now / 1024, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(overrides: list[str]) -> None:
    """One measured run (in a subprocess)."""
    stages: dict[str, Any] = {"start": _rss()}
    import torch

    import fedpoison  # noqa: F401
    from fedpoison.plugins import load_config
    from fedpoison.simulation.federation import build_federation
    from fedpoison.simulation.loop import LoopState, run_round

    stages["imports"] = _rss()
    cfg = load_config(None, overrides)
    fed = build_federation(cfg)
    stages["federation"] = _rss()
    data = fed.data
    dataset_bytes = sum(t.numel() * t.element_size() for t in (data.x_train, data.y_train, data.x_test, data.y_test))
    partition_bytes = sum(p.numel() * p.element_size() for p in fed.parts)
    state = LoopState(params=fed.init_params.clone())
    while state.round < cfg.rounds:
        run_round(fed, state)
    stages["end"] = _rss()
    out = {"stages": stages, "dataset_mib": dataset_bytes / MIB, "partition_mib": partition_bytes / MIB,
           "d": fed.spec.dim, "k": cfg.participants_per_round, "rounds": cfg.rounds,
           "engine": type(fed.engine).__name__, "threads": torch.get_num_threads(),
           "lanes": getattr(fed.engine, "workers", 1), "chunk": getattr(fed.engine, "max_clients", None)}
    print("RESULT " + json.dumps(out), flush=True)


BASE = ["dataset.name=fashion-mnist", "clients.num=1000", "partition.name=iid", "model.name=mlp",
        "local.epochs=1", "local.batch_size=32", "local.momentum=0.9", "eval.every=1000"]
CONFIGS = [  # (label, per_round, rounds)
    ("k=100", 100, 2),
    ("k=400", 400, 2),
    ("k=1000", 1000, 2),
    ("k=1000, 10 rounds", 1000, 10),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    before = machine()
    rows = []
    for label, k, rounds in CONFIGS:
        m = measure([sys.executable, __file__, "--child", *BASE, f"clients.per_round={k}", f"rounds={rounds}"])
        if m.returncode != 0:
            print(m.log_tail)
            raise SystemExit(f"{label}: failed")
        r = m.result
        r["label"], r["peak_mib"] = label, m.maxrss_mib
        rows.append(r)
        print(f"{label}: peak {m.maxrss_mib:.0f} MiB, stages {r['stages']}", flush=True)
    d = rows[0]["d"]
    base = rows[0]["stages"]["federation"]["now_mib"]
    runtime = rows[0]["stages"]["imports"]["now_mib"]
    load_peak = rows[0]["stages"]["federation"]["peak_mib"]
    # fit c_u on the smallest and the largest k (2 rounds each)
    (k1, p1), (k2, p2) = (rows[0]["k"], rows[0]["peak_mib"]), (rows[2]["k"], rows[2]["peak_mib"])
    matrix = lambda k: k * d * 4 / MIB  # noqa: E731
    lanes, chunk = rows[0]["lanes"], rows[0]["chunk"] or 10**9

    def engine(k: int) -> float:
        """The batched engine's stacked rows (3 copies of each lane's chunk), in MiB."""
        n_lanes = min(lanes, k)
        per_lane = min(chunk, -(-k // n_lanes))
        return 3 * n_lanes * per_lane * d * 4 / MIB

    c_u = ((p2 - engine(k2)) - (p1 - engine(k1))) / (matrix(k2) - matrix(k1))
    fixed = p1 - engine(k1) - c_u * matrix(k1)
    lines = []
    for r in rows:
        pred = max(fixed + c_u * matrix(r["k"]) + engine(r["k"]), load_peak)
        err = (r["peak_mib"] - pred) / r["peak_mib"]
        lines.append(f"| {r['label']} | {r['k']} | {r['rounds']} | {matrix(r['k']):.0f} | {engine(r['k']):.0f} | {pred:.0f} | "
                     f"{r['peak_mib']:.0f} | {100 * err:+.1f}% |")
    r0 = rows[0]
    body = f"""## Memory with 1,000 clients (issue 7): the formula of docs/performance.md, checked

Command: `python benchmarks/speed_memory.py`

Runs: Fashion-MNIST (all 60,000 training images), 1,000 IID clients of 60 samples (index sets into
one copy of the data), MLP (d = {d:,} parameters), 1 epoch, batch 32, momentum 0.9, engine `auto`
({r0['engine']}), k clients per round. Peak = `ru_maxrss` of the run's process.

Machine: {before['cpu']}, {before['cores']} cores, torch {before['torch']}. Shared machine (load {before['loadavg']}).

Measured parts (k=100 run): runtime after imports {runtime:.0f} MiB; dataset tensors {r0['dataset_mib']:.0f} MiB;
the 1,000 index sets {r0['partition_mib']:.2f} MiB; RSS after building the federation {base:.0f} MiB (peak
while loading {load_peak:.0f} MiB: the gzip bytes and the uint8 arrays are alive while the float32 tensors
are made).

The batched engine's own rows: {lanes} lanes, vmap chunk {rows[0]['chunk']}, 3 stacked copies (parameters,
momentum, gradients) of min(chunk, ceil(k / lanes)) rows per lane (column "engine"; it stops growing at
k = {lanes * chunk if chunk < 10**9 else 'any'}). Fitted on k=100 and k=1000: fixed part {fixed:.0f} MiB, **c_u = {c_u:.2f}**
live copies of the k x d float32 update matrix at the peak of a round.

| run | k | rounds | k x d x 4 B (MiB) | engine (MiB) | predicted peak (MiB) | measured peak (MiB) | error |
|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(lines)}

The 10-round run checks that nothing but the history grows with the rounds.
"""
    print(body)
    if not args.no_write:
        update_results("speed_memory", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
