"""The plain PyTorch reference: a sequential client loop over preloaded tensors, no framework.

Written for the benchmarks the way a researcher would write a tight FedAvg
script: read Fashion-MNIST's IDX files into tensors once, deal IID index sets,
and per round train each sampled client with ``torch.optim.SGD`` on the
global model, stack the updates, aggregate (sample-weighted mean, or Krum),
step. It imports nothing from fedpoison. Evaluation happens after the first
and the last round, as fedpoison's ``eval.every = rounds`` does.

Run: ``python benchmarks/speed_reference.py W1`` (workloads in speed_common.py).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_common import FMNIST, WORKLOADS, Workload


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(folder: str) -> tuple[torch.Tensor, ...]:
    d = Path(folder)
    x_tr = torch.from_numpy(read_idx(d / "train-images-idx3-ubyte.gz").astype(np.float32) / 255.0)[:, None]
    y_tr = torch.from_numpy(read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64))
    x_te = torch.from_numpy(read_idx(d / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0)[:, None]
    y_te = torch.from_numpy(read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    return x_tr, y_tr, x_te, y_te


def build(name: str) -> nn.Module:
    if name == "cnn28":
        return nn.Sequential(
            nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(512, 128), nn.ReLU(), nn.Linear(128, 10),
        )
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def init_seed(seed: int = 0) -> int:
    """The torch seed fedpoison draws its initial model from (``derive_seed(seed, "init")``).

    Seeding the same architecture with it gives the same initial weights as
    fedpoison's run, so final accuracies compare like for like.
    """
    ss = np.random.SeedSequence([seed, 1])  # 1 = fedpoison.seeding.PURPOSES["init"]
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def krum(updates: torch.Tensor, f: int) -> torch.Tensor:
    """Krum (Blanchard et al. 2017): the row with the smallest sum of n - f - 2 nearest squared distances."""
    n = len(updates)
    d2 = torch.cdist(updates, updates) ** 2
    k = max(n - f - 2, 1)
    scores = d2.sort(dim=1).values[:, 1 : k + 1].sum(1)
    return updates[scores.argmin()]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(x[i : i + 2048]).argmax(1) == y[i : i + 2048]).sum()) for i in range(0, len(y), 2048))
    model.train()
    return correct / len(y)


def main(w: Workload, seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_tr, y_tr, x_te, y_te = load(FMNIST)
    x_tr, y_tr = x_tr[: w.limit].contiguous(), y_tr[: w.limit].contiguous()
    parts = [torch.from_numpy(p) for p in np.array_split(rng.permutation(w.limit), w.clients)]
    attackers = set(range(w.attackers))

    torch.manual_seed(init_seed(seed))
    model = build(w.model)
    params = list(model.parameters())
    global_flat = torch.cat([p.detach().reshape(-1) for p in params])
    d = global_flat.numel()

    def load_global() -> None:
        offset = 0
        with torch.no_grad():
            for p in params:
                p.copy_(global_flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()

    acc, train_s = float("nan"), 0.0
    for rnd in range(w.rounds):
        t_train = time.perf_counter()
        if w.attackers:
            honest = rng.permutation(np.arange(w.attackers, w.clients))[: w.per_round - w.attackers]
            chosen = np.sort(np.concatenate([np.arange(w.attackers), honest]))
        else:
            chosen = np.sort(rng.choice(w.clients, w.per_round, replace=False))
        updates = torch.empty(len(chosen), d)
        sizes = torch.empty(len(chosen))
        for row, c in enumerate(chosen.tolist()):
            load_global()
            opt = torch.optim.SGD(params, lr=w.lr, momentum=w.momentum)
            idx = parts[c]
            n = len(idx)
            bs = min(w.batch_size, n)
            batches = []
            if w.steps is not None:
                while len(batches) < w.steps:
                    perm = idx[torch.randperm(n)]
                    batches += [perm[i : i + bs] for i in range(0, n, bs)][: w.steps - len(batches)]
            else:
                for _ in range(w.epochs):
                    perm = idx[torch.randperm(n)]
                    batches += [perm[i : i + bs] for i in range(0, n, bs)]
            for b in batches:
                loss = F.cross_entropy(model(x_tr[b]), y_tr[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
            updates[row] = torch.cat([p.detach().reshape(-1) for p in params]) - global_flat
            sizes[row] = n
            if c in attackers:
                updates[row] *= -1.0  # sign flipping (Li et al. 2019, RSA)
        train_s += time.perf_counter() - t_train
        if w.defense == "krum":
            agg = krum(updates, f=w.attackers)
        else:
            agg = (sizes[:, None] * updates).sum(0) / sizes.sum()
        global_flat = global_flat + agg
        if rnd == 0 or rnd == w.rounds - 1:
            load_global()
            acc = accuracy(model, x_te, y_te)
    return {"final_accuracy": acc, "train_s": train_s}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = main(WORKLOADS[args.workload])
    out["inner_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out), flush=True)
