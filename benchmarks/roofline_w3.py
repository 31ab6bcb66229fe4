"""How fast can W3 possibly be on this machine? A roofline bound from FLOPs and measured GEMM peak.

W3 (speed_common.py) is FedSGD: 50 rounds x 100 clients x one SGD step of batch 64 on cnn28, i.e.
320,000 sample passes (forward and backward). This script

1. counts the multiply-adds of one sample's forward and backward pass through cnn28 from the layer
   shapes (the input gradient of the first layer is not needed, so it is not counted);
2. measures this machine's float32 matrix-multiply throughput on all its cores (the best any
   convolution or linear kernel can do here);
3. divides: the least training time any implementation can have, at 100% of that peak, against the
   reference's and fedpoison's measured training times (passed in, or taken from RESULTS.md's W3 table).

Run: ``python benchmarks/roofline_w3.py [--reference-train-s S] [--fedpoison-train-s S]``
"""

from __future__ import annotations

import argparse
import time

import torch

SAMPLES = 50 * 100 * 64  # rounds x clients x batch


def cnn28_flops_per_sample(num_classes: int = 10) -> dict[str, float]:
    """FLOPs (2 per multiply-add) of one sample's forward + backward pass, by layer."""
    conv1 = 16 * 24 * 24 * (1 * 5 * 5)  # output positions x kernel volume
    conv2 = 32 * 8 * 8 * (16 * 5 * 5)
    fc1 = 512 * 128
    fc2 = 128 * num_classes
    return {
        # forward + weight gradient; no input gradient for the first layer
        "conv1": 2 * conv1 * 2,
        # forward + weight gradient + input gradient
        "conv2": 2 * conv2 * 3,
        "fc1": 2 * fc1 * 3,
        "fc2": 2 * fc2 * 3,
    }


def gemm_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul throughput with ``threads`` intra-op threads (best of ``repeats``)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--reference-train-s", type=float, default=None)
    parser.add_argument("--fedpoison-train-s", type=float, default=None)
    args = parser.parse_args()
    per_sample = cnn28_flops_per_sample()
    total = sum(per_sample.values()) * SAMPLES
    peak = gemm_gflops(args.threads)
    floor_s = total / (peak * 1e9)
    print(f"cnn28 forward+backward per sample: {sum(per_sample.values()) / 1e6:.2f} MFLOP "
          + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in per_sample.items()))
    print(f"W3: {SAMPLES:,} sample passes = {total / 1e12:.2f} TFLOP")
    print(f"float32 GEMM peak, {args.threads} threads: {peak:.0f} GFLOP/s")
    print(f"least possible training time at 100% of that peak: {floor_s:.1f} s")
    if args.reference_train_s:
        print(f"reference training {args.reference_train_s:.1f} s: the most any engine can gain is "
              f"{args.reference_train_s / floor_s:.2f}x; it runs at {floor_s / args.reference_train_s:.0%} of peak")
    if args.fedpoison_train_s:
        print(f"fedpoison training {args.fedpoison_train_s:.1f} s: {floor_s / args.fedpoison_train_s:.0%} of peak")
