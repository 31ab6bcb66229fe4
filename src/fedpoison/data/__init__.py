"""Datasets (in-memory tensors) and partitions (client index sets)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from fedpoison.data import builtin, files, partition  # noqa: F401  (registration)
from fedpoison.data.base import DATASETS, PARTITIONERS, Dataset
from fedpoison.data.partition import partition_counts

if TYPE_CHECKING:
    import torch

    from fedpoison.config import DatasetSection, PartitionSection

__all__ = ["DATASETS", "PARTITIONERS", "Dataset", "load_dataset", "partition_clients", "partition_counts"]


def load_dataset(section: DatasetSection, seed: int = 0) -> Dataset:
    """Load the dataset ``section.name`` with its params (optionally truncated to ``section.limit`` samples)."""
    entry = DATASETS.get(section.name, key="dataset.name")
    ds = entry.obj(section.params(entry.params), seed)
    if section.limit is not None and section.limit < len(ds.y_train):
        ds = Dataset(ds.name, ds.x_train[: section.limit], ds.y_train[: section.limit],
                     ds.x_test, ds.y_test, ds.num_classes)
    return ds


def partition_clients(
    section: PartitionSection, labels: Tensor, num_clients: int, generator: torch.Generator
) -> list[Tensor]:
    """Split the training set among ``num_clients`` with the partition ``section.name`` and its params."""
    entry = PARTITIONERS.get(section.name, key="partition.name")
    return entry.obj(labels, num_clients, section.params(entry.params), generator)
