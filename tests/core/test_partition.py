"""Partitioners: seeded, complete, minimum sizes, and the skew they promise."""

from __future__ import annotations

import pytest
import torch

from fedpoison.config import DatasetSection
from fedpoison.data import PARTITIONERS, load_dataset, partition_counts
from fedpoison.seeding import generator


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    return load_dataset(DatasetSection()).y_train


def split(labels: torch.Tensor, name: str, num: int = 20, seed: int = 0, **kw: object) -> list[torch.Tensor]:
    entry = PARTITIONERS.get(name)
    return entry.obj(labels, num, entry.params(**kw), generator(seed, "partition"))


@pytest.mark.parametrize("name", PARTITIONERS.names())
def test_every_sample_goes_to_exactly_one_client(labels: torch.Tensor, name: str) -> None:
    parts = split(labels, name)
    allidx = torch.cat(parts)
    assert len(parts) == 20
    assert torch.equal(torch.sort(allidx).values, torch.arange(len(labels)))
    assert min(len(p) for p in parts) >= 10


@pytest.mark.parametrize("name", PARTITIONERS.names())
def test_same_seed_same_split_other_seed_other_split(labels: torch.Tensor, name: str) -> None:
    a, b, c = split(labels, name, seed=1), split(labels, name, seed=1), split(labels, name, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def _mean_tv_from_uniform(labels: torch.Tensor, parts: list[torch.Tensor]) -> float:
    counts = partition_counts(labels, parts, 10).float()
    props = counts / counts.sum(1, keepdim=True)
    global_p = torch.bincount(labels, minlength=10).float() / len(labels)
    return float(0.5 * (props - global_p).abs().sum(1).mean())


def test_dirichlet_alpha_controls_skew(labels: torch.Tensor) -> None:
    skewed = _mean_tv_from_uniform(labels, split(labels, "dirichlet", alpha=0.1))
    uniform = _mean_tv_from_uniform(labels, split(labels, "dirichlet", alpha=100.0))
    # alpha=0.1: most clients hold a few classes (total variation from the global mix is large)
    assert skewed > 0.6
    # alpha=100: every client's mix is close to the global one
    assert uniform < 0.15
    counts = partition_counts(labels, split(labels, "dirichlet", alpha=0.1), 10)
    assert (counts > 0).sum(1).float().mean() < 6  # classes per client


def test_shards_give_few_classes_per_client(labels: torch.Tensor) -> None:
    counts = partition_counts(labels, split(labels, "shards", classes_per_client=2, min_samples=1), 10)
    # each shard may straddle one class boundary, but two classes dominate each client
    top2 = counts.sort(1, descending=True).values[:, :2].sum(1) / counts.sum(1)
    assert (top2 >= 0.8).all() and (counts > 0).sum(1).float().mean() <= 3


def test_fang_bias_sends_labels_to_their_group(labels: torch.Tensor) -> None:
    # bias 1.0: every sample of label l lands in group l, so clients see one class
    counts = partition_counts(labels, split(labels, "fang", bias=1.0, min_samples=1), 10)
    assert ((counts > 0).sum(1) == 1).all()
    mixed = partition_counts(labels, split(labels, "fang", bias=0.1), 10)
    assert (mixed > 0).sum(1).float().mean() > 8


def test_quantity_skew_gives_unequal_sizes(labels: torch.Tensor) -> None:
    sizes = torch.tensor([len(p) for p in split(labels, "quantity_skew", sigma=1.5)]).float()
    assert sizes.max() > 4 * sizes.min()
    assert sizes.min() >= 10


def test_too_many_clients_for_min_samples_is_a_config_error(labels: torch.Tensor) -> None:
    from fedpoison import ConfigError

    with pytest.raises(ConfigError, match=r"partition\.min_samples"):
        split(labels, "iid", num=1000, min_samples=10)
