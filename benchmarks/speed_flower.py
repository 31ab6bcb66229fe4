"""Flower as a benchmark contender: the speed workloads in Flower's simulation engine.

Plain Flower 1.42 (Message API, ``run_simulation`` with the Ray backend), written the way
Flower's own examples are: a ClientApp that trains the node's IID partition with a
plain PyTorch loop and replies with its new weights, and a ServerApp that runs
Flower's ``FedAvg`` (W1, W2, W3) or Flower's ``Krum`` (W1-krum). Sign-flipping nodes
(W1-krum) reply ``global - update``. The server evaluates the global model after the
first and the last round. One single-CPU node per core, as Flower's docs advise.

Run from ``benchmarks/.env-peers`` (``flwr[simulation]`` lives there, never in the project):
``benchmarks/.env-peers/bin/python benchmarks/speed_flower.py W1``
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed_common import WORKLOADS, peer_workload_arg  # noqa: E402
from speed_reference import FMNIST, accuracy, build, init_seed, load  # noqa: E402

_DATA: dict[str, tuple[torch.Tensor, ...]] = {}


def data(limit: int) -> tuple[torch.Tensor, ...]:
    """Fashion-MNIST, loaded once per process (each Ray worker loads its own copy)."""
    if "d" not in _DATA:
        x_tr, y_tr, x_te, y_te = load(FMNIST)
        _DATA["d"] = (x_tr[:limit], y_tr[:limit], x_te, y_te)
    return _DATA["d"]


def make_apps(name: str) -> tuple[object, object, dict[str, float]]:
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg, Krum

    w = WORKLOADS[name]
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        pid = int(context.node_config["partition-id"])
        x_tr, y_tr, _, _ = data(w.limit)
        rng = np.random.default_rng(0)
        idx = torch.from_numpy(np.array_split(rng.permutation(w.limit), w.clients)[pid])
        model = build(w.model)
        model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.SGD(model.parameters(), lr=w.lr, momentum=w.momentum)
        n, bs = len(idx), min(w.batch_size, len(idx))
        batches: list[torch.Tensor] = []
        target = w.steps if w.steps is not None else w.epochs * ((n + bs - 1) // bs)
        while len(batches) < target:
            perm = idx[torch.randperm(n)]
            batches += [perm[i : i + bs] for i in range(0, n, bs)][: target - len(batches)]
        model.train()
        for b in batches:
            loss = F.cross_entropy(model(x_tr[b]), y_tr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if pid < w.attackers:  # sign flipping: send global - update
            with torch.no_grad():
                for p, p0 in zip(model.parameters(), before, strict=True):
                    p.copy_(2 * p0 - p)
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                              "metrics": MetricRecord({"num-examples": n})})
        return Message(content=content, reply_to=msg)

    server_app = ServerApp()
    out: dict[str, float] = {}

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(init_seed(0))
        model = build(w.model)
        _, _, x_te, y_te = data(w.limit)
        fraction = w.per_round / w.clients
        if w.defense == "krum":
            strategy = Krum(fraction_train=fraction, fraction_evaluate=0.0, min_available_nodes=w.clients,
                            num_malicious_nodes=w.attackers)
        else:
            strategy = FedAvg(fraction_train=fraction, fraction_evaluate=0.0, min_available_nodes=w.clients)

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round not in (1, w.rounds):
                return None
            model.load_state_dict(arrays.to_torch_state_dict())
            out["final_accuracy"] = accuracy(model, x_te, y_te)
            return MetricRecord({"accuracy": out["final_accuracy"]})

        strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=w.rounds,
                       evaluate_fn=evaluate)

    return server_app, client_app, out


if __name__ == "__main__":
    workload = peer_workload_arg(__doc__.splitlines()[0])
    t0 = time.perf_counter()
    from flwr.simulation import run_simulation

    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *sys.path])  # Ray workers import this module
    import speed_flower  # the apps by reference, so each Ray worker caches the data in its module

    server_app, client_app, out = speed_flower.make_apps(workload)
    cores = os.cpu_count() or 1
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=WORKLOADS[workload].clients,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": cores}})
    out["inner_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out), flush=True)
