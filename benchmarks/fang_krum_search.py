"""Fang et al.'s Krum attack: the lambda search, benign distances once vs every halving.

The search halves lambda until Krum picks the crafted copies of -lambda*s. The
first version rebuilt the (k + c, d) matrix and recomputed all pairwise
distances at each halving: O(steps x n^2 x d). ``fang_krum_rows`` now computes
the benign-to-benign block and the benign rows' dot products with s once per
round (:class:`fedpoison.attacks.fang.KrumSearch`), so a halving costs
O(n^2). This script times both on the shape of the Fang Table 2(c) protocol
(80 benign rows + 20 crafted, d = 266,060, the fang_dnn model) and checks they
return the same lambda and rows.

    python benchmarks/fang_krum_search.py --repeats 3 [--spread 3e-3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from fedpoison.attacks.fang import (  # noqa: E402
    change_direction,
    fang_krum_lambda_max,
    fang_krum_rows,
    krum_picks_crafted,
)


def slow_search(benign: torch.Tensor, c: int, n: int, threshold: float = 1e-5) -> tuple[torch.Tensor, float, int]:
    """The first version: every halving materialises the rows and recomputes every distance."""
    s = change_direction(benign)
    lam = fang_krum_lambda_max(benign, num_participants=n, num_malicious=c)
    steps = 0
    while lam >= threshold:
        steps += 1
        rows = (-lam * s).repeat(c, 1)
        if krum_picks_crafted(benign.double(), rows.double(), c, neighbours=n - c - 2):
            return rows, lam, steps
        lam /= 2.0
    return (-lam * s).repeat(c, 1), lam, steps


def benign_rows(k: int, d: int, seed: int, spread: float) -> torch.Tensor:
    """Gradient-like rows: a shared direction (scale 1e-3) plus per-client spread (float32).

    The smaller the spread against the shared direction, the more halvings Krum needs.
    """
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g) * 1e-3
    return mean + torch.randn(k, d, generator=g) * spread


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=80, help="benign rows")
    p.add_argument("--c", type=int, default=20, help="crafted rows")
    p.add_argument("--d", type=int, default=266_060, help="parameters (fang_dnn: 266,060)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--spread", type=float, default=3e-3, help="per-client spread around the shared direction")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    n = args.k + args.c
    fast_t, slow_t = [], []
    for r in range(args.repeats):
        benign = benign_rows(args.k, args.d, r, args.spread)
        t0 = time.perf_counter()
        fast_rows, fast_lam = fang_krum_rows(benign, num_malicious=args.c, num_participants=n)
        t1 = time.perf_counter()
        slow_rows, slow_lam, steps = slow_search(benign, args.c, n)
        t2 = time.perf_counter()
        assert fast_lam == slow_lam and torch.equal(fast_rows, slow_rows), "fast and slow searches disagree"
        fast_t.append(t1 - t0)
        slow_t.append(t2 - t1)
        print(f"repeat {r}: {steps} halvings, lambda {fast_lam:.3g}; fast {t1 - t0:.2f} s, slow {t2 - t1:.2f} s",
              flush=True)
    fm, sm = statistics.median(fast_t), statistics.median(slow_t)
    print(f"median: fast {fm:.2f} s, slow {sm:.2f} s, speed-up {sm / fm:.1f}x; same lambda and rows in every repeat")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} thread(s), load average {[round(x, 2) for x in os.getloadavg()]}")


if __name__ == "__main__":
    main()
