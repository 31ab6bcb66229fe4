"""CPU cost of one FedSGD iteration of the reproductions' protocols: 100 clients, one SGD step each.

The reproductions' time estimates (docs/reproductions.md) rest on this figure:
Fang et al. 2020's Table 2(c) protocol is 100 client steps of batch 64 on ``fang_dnn``
(dense 200), FoundationFL's Table I(b) 100 client steps of batch 32 on ``fang_dnn``
with ``hidden: 100``. The script times the clients' forward and backward passes one
after another on one torch thread and reports **process CPU time** (not wall time), so
the figure does not depend on how busy a shared machine is.

    python benchmarks/fang_dnn_step.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from fedpoison.models import build_model  # noqa: E402
from fedpoison.models.zoo import FangDNNParams  # noqa: E402

#: (label, batch size, dense width)
PROTOCOLS = [("Fang et al. 2020 Table 2(c)", 64, 200), ("FoundationFL Table I(b)", 32, 100)]


def iteration_cpu_s(batch: int, hidden: int, clients: int, repeats: int) -> float:
    """Least process CPU seconds over ``repeats`` for ``clients`` forward+backward passes of ``batch``."""
    model = build_model("fang_dnn", (1, 28, 28), 10, FangDNNParams(hidden=hidden))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(clients, batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (clients, batch), generator=g)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for k in range(clients):
            model.zero_grad()
            F.cross_entropy(model(x[k]), y[k]).backward()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, one thread")
    for label, batch, hidden in PROTOCOLS:
        cpu = iteration_cpu_s(batch, hidden, args.clients, args.repeats)
        print(f"{label}: {args.clients} client steps of batch {batch}, dense {hidden}: {cpu:.2f} s CPU per iteration")


if __name__ == "__main__":
    main()
