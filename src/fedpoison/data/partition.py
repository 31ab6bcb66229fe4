"""Seeded partitioners: split the training set among clients as index sets.

Each partitioner returns one sorted int64 index tensor per client into the
training set; clients never hold copies of the data. Every client gets at least
``partition.min_samples`` samples: a client left short takes random samples from
the largest clients, which keeps the intended skew for everyone else.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.data.base import PARTITIONERS
from fedpoison.errors import ConfigError


class PartitionParams(BaseModel):
    """The key every built-in partition takes: the smallest client."""

    model_config = ConfigDict(extra="forbid")

    #: Every client gets at least this many samples.
    min_samples: int = Field(10, ge=1)


class DirichletParams(PartitionParams):
    """Params of the Dirichlet label-skew partition."""

    #: Concentration: small is skewed, large is near-uniform.
    alpha: float = Field(0.5, gt=0.0)


class ShardsParams(PartitionParams):
    """Params of the sort-and-shard partition."""

    #: Distinct classes per client.
    classes_per_client: int = Field(2, ge=1)


class FangParams(PartitionParams):
    """Params of Fang et al.'s group-bias partition."""

    #: Probability that a sample of label l goes to group l.
    bias: float = Field(0.5, ge=0.0, le=1.0)


class QuantitySkewParams(PartitionParams):
    """Params of the quantity-skew partition."""

    #: Client-size distribution and its spread.
    distribution: Literal["lognormal", "powerlaw"] = "lognormal"
    sigma: float = Field(1.0, gt=0.0)
    power: float = Field(1.5, gt=0.0)


def _finish(parts: list[np.ndarray], min_samples: int, rng: np.random.Generator) -> list[Tensor]:
    """Top clients up to ``min_samples`` from the largest ones; return sorted tensors."""
    parts = [np.asarray(p, dtype=np.int64) for p in parts]
    total = sum(len(p) for p in parts)
    if total < min_samples * len(parts):
        raise ConfigError(
            f"partition.min_samples: {len(parts)} clients x {min_samples} samples needs "
            f"{min_samples * len(parts)} training samples, the dataset has {total}"
        )
    for i in range(len(parts)):
        while len(parts[i]) < min_samples:
            donor = int(np.argmax([len(p) for p in parts]))
            need = min(min_samples - len(parts[i]), len(parts[donor]) - min_samples)
            take = rng.choice(len(parts[donor]), size=need, replace=False)
            mask = np.ones(len(parts[donor]), dtype=bool)
            mask[take] = False
            parts[i] = np.concatenate([parts[i], parts[donor][take]])
            parts[donor] = parts[donor][mask]
    return [torch.from_numpy(np.sort(p)) for p in parts]


def _rng(generator: torch.Generator) -> np.random.Generator:
    seed = int(torch.randint(2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


@PARTITIONERS.register("iid", description="Uniformly shuffled, equal-sized shards.", params=PartitionParams)
def iid(labels: Tensor, num_clients: int, params: PartitionParams, generator: torch.Generator) -> list[Tensor]:
    """Shuffle all indices and deal them into ``num_clients`` near-equal parts."""
    rng = _rng(generator)
    perm = rng.permutation(len(labels))
    return _finish(list(np.array_split(perm, num_clients)), params.min_samples, rng)


@PARTITIONERS.register(
    "dirichlet",
    description="Label skew: each class is split among clients by Dir(partition.alpha).",
    reference="Hsu, Qi & Brown 2019, 'Measuring the Effects of Non-Identical Data Distribution'.",
    params=DirichletParams,
)
def dirichlet(labels: Tensor, num_clients: int, params: DirichletParams, generator: torch.Generator) -> list[Tensor]:
    """For each class, draw client shares from ``Dir(alpha * 1)`` and split its samples so."""
    rng = _rng(generator)
    y = labels.cpu().numpy()
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        shares = rng.dirichlet(np.full(num_clients, params.alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for k, piece in enumerate(np.split(idx, cuts)):
            parts[k].append(piece)
    return _finish([np.concatenate(p) for p in parts], params.min_samples, rng)


@PARTITIONERS.register(
    "shards",
    description="Pathological split: each client gets partition.classes_per_client classes.",
    reference="McMahan et al. 2017, 'Communication-Efficient Learning' (sort-and-shard).",
    params=ShardsParams,
)
def shards(labels: Tensor, num_clients: int, params: ShardsParams, generator: torch.Generator) -> list[Tensor]:
    """Sort by label, cut into ``num_clients * classes_per_client`` shards, deal them at random."""
    rng = _rng(generator)
    y = labels.cpu().numpy()
    order = np.lexsort((rng.random(len(y)), y))
    pieces = np.array_split(order, num_clients * params.classes_per_client)
    deal = rng.permutation(len(pieces)).reshape(num_clients, params.classes_per_client)
    return _finish([np.concatenate([pieces[j] for j in row]) for row in deal], params.min_samples, rng)


@PARTITIONERS.register(
    "fang",
    description="Group bias of Fang et al.: label l goes to group l with probability partition.bias.",
    reference="Fang et al. 2020, 'Local Model Poisoning Attacks to Byzantine-Robust FL', Sec. 4.1.",
    params=FangParams,
)
def fang(labels: Tensor, num_clients: int, params: FangParams, generator: torch.Generator) -> list[Tensor]:
    """Fang et al.'s split: clients form one group per class, and samples join groups by label.

    A sample of label ``l`` joins group ``l`` with probability ``bias`` and a
    uniformly chosen other group otherwise, then a uniformly chosen client
    within the group.
    """
    rng = _rng(generator)
    y = labels.cpu().numpy()
    num_classes = int(y.max()) + 1
    groups = np.array_split(rng.permutation(num_clients), num_classes)
    groups = [g for g in groups if len(g)] or [np.arange(num_clients)]
    n_groups = len(groups)
    home = y % n_groups
    other = (home + 1 + rng.integers(0, max(n_groups - 1, 1), size=len(y))) % n_groups
    group = np.where(rng.random(len(y)) < params.bias, home, other if n_groups > 1 else home)
    owner = np.empty(len(y), dtype=np.int64)
    for gi, members in enumerate(groups):
        sel = np.flatnonzero(group == gi)
        owner[sel] = members[rng.integers(0, len(members), size=len(sel))]
    return _finish([np.flatnonzero(owner == k) for k in range(num_clients)], params.min_samples, rng)


@PARTITIONERS.register(
    "quantity_skew",
    description="Unequal client sizes from a log-normal (partition.sigma) or power law (partition.power).",
    reference="Li et al. 2022, 'Federated Learning on Non-IID Data Silos: An Experimental Study'.",
    params=QuantitySkewParams,
)
def quantity_skew(labels: Tensor, num_clients: int, params: QuantitySkewParams, generator: torch.Generator) -> list[Tensor]:
    """Draw client sizes, then deal a random permutation in those sizes (labels stay IID)."""
    rng = _rng(generator)
    n = len(labels)
    if params.distribution == "lognormal":
        raw = rng.lognormal(0.0, params.sigma, size=num_clients)
    else:
        raw = rng.pareto(params.power, size=num_clients) + 1.0
    spare = n - params.min_samples * num_clients
    if spare < 0:
        return _finish([np.arange(0)] * num_clients, params.min_samples, rng)
    sizes = params.min_samples + np.floor(raw / raw.sum() * spare).astype(int)
    sizes[np.argmax(sizes)] += n - sizes.sum()
    perm = rng.permutation(n)
    return _finish(list(np.split(perm, np.cumsum(sizes)[:-1])), params.min_samples, rng)


def partition_counts(labels: Tensor, parts: list[Tensor], num_classes: int) -> Tensor:
    """``(num_clients, num_classes)`` int64 table of class counts per client."""
    y = labels.cpu()
    return torch.stack([torch.bincount(y[p.cpu()], minlength=num_classes) for p in parts])
