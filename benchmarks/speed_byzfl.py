"""ByzFL as a benchmark contender: the speed workloads with ByzFL's federated framework.

ByzFL 0.0.11's own classes: one ``byzfl.Client`` per client (its own model copy, a
``DataLoader`` over its IID partition, ``torch.optim.SGD`` through ByzFL's model
interface), ``client.compute_model_update(steps)`` for local training, a
``byzfl.Server`` whose ``RobustAggregator`` is ByzFL's ``Average`` (W1, W2, W3)
or ``Krum`` (W1-krum) over the clients' weights, and for W1-krum a
``byzfl.ByzantineClient`` running ByzFL's ``SignFlipping`` on the honest vectors
(it replaces the first 10 clients' vectors; those clients still train, so every
contender does the same training work). The model is registered into ByzFL's model
module under the name ``cnn28``/``mlp`` (the same architecture as the others).
Evaluation after the first and the last round. Note: ByzFL's ``Average`` is the
unweighted mean; with IID equal-size clients it equals FedAvg.

torchvision: the PyPI wheel is built against the CUDA torch and cannot load next to
this machine's CPU torch; ByzFL imports it only for its own dataset loaders, which
this script does not use, so a stub module stands in for it.

Run: ``benchmarks/.env-peers/bin/python benchmarks/speed_byzfl.py W1``
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speed_common import WORKLOADS, peer_workload_arg  # noqa: E402
from speed_reference import FMNIST, build, init_seed, load  # noqa: E402


class _Stub(types.ModuleType):
    """A module whose every attribute is a do-nothing callable (ByzFL builds transforms at import)."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def _stub_torchvision() -> None:
    tv = _Stub("torchvision")
    tv.datasets = _Stub("torchvision.datasets")  # type: ignore[attr-defined]
    tv.transforms = _Stub("torchvision.transforms")  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": tv, "torchvision.datasets": tv.datasets,
                        "torchvision.transforms": tv.transforms})


def main(name: str) -> dict[str, float]:
    _stub_torchvision()
    import byzfl.fed_framework.models as bmodels
    from byzfl import ByzantineClient, Client, Server

    w = WORKLOADS[name]
    setattr(bmodels, w.model, lambda: build(w.model))
    x_tr, y_tr, x_te, y_te = load(FMNIST)
    x_tr, y_tr = x_tr[: w.limit], y_tr[: w.limit]
    rng = np.random.default_rng(0)
    parts = np.array_split(rng.permutation(w.limit), w.clients)
    common = {"model_name": w.model, "device": "cpu", "weight_decay": 0.0, "milestones": [],
              "learning_rate_decay": 1.0}
    agg = {"name": "Krum", "parameters": {"f": w.attackers}} if w.defense == "krum" else {"name": "Average", "parameters": {}}
    torch.manual_seed(init_seed(0))  # the global model: the same initial weights as the others
    server = Server({**common, "optimizer_name": "SGD", "learning_rate": 1.0, "aggregator_info": agg,
                     "pre_agg_list": [], "test_loader": DataLoader(TensorDataset(x_te, y_te), batch_size=2048)})
    clients = [
        Client({**common, "optimizer_name": "SGD", "optimizer_params": {"momentum": w.momentum},
                "learning_rate": w.lr, "loss_name": "CrossEntropyLoss", "LabelFlipping": False, "nb_labels": 10,
                "momentum": 0.0, "store_per_client_metrics": False,
                "training_dataloader": DataLoader(TensorDataset(x_tr[p], y_tr[p]), batch_size=w.batch_size,
                                                  shuffle=True)})
        for p in parts
    ]
    attacker = ByzantineClient({"f": w.attackers, "name": "SignFlipping", "parameters": {}}) if w.attackers else None
    steps = w.steps if w.steps is not None else w.epochs * -(-w.samples // w.batch_size)
    acc = float("nan")
    for rnd in range(w.rounds):
        state = server.model.state_dict()
        chosen = sorted(rng.choice(w.clients, w.per_round, replace=False).tolist())
        vectors = []
        for c in chosen:
            clients[c].set_model_state(state)
            clients[c].compute_model_update(steps)
            vectors.append(clients[c].get_flat_parameters())
        if attacker is not None:
            vectors = vectors[w.attackers:] + attacker.apply_attack(vectors[w.attackers:])
        server.update_model_with_weights(vectors)
        if rnd in (0, w.rounds - 1):
            acc = server.compute_test_accuracy()
    return {"final_accuracy": acc}


if __name__ == "__main__":
    workload = peer_workload_arg(__doc__.splitlines()[0])
    t0 = time.perf_counter()
    out = main(workload)
    out["inner_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out), flush=True)
