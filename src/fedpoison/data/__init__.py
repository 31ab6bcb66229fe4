"""Datasets (in-memory tensors) and partitioners (client index sets)."""

from fedpoison.data import builtin, files, partition  # noqa: F401  (registration)
from fedpoison.data.base import DATASETS, PARTITIONERS, Dataset
from fedpoison.data.partition import partition_counts

__all__ = ["DATASETS", "PARTITIONERS", "Dataset", "load_dataset", "partition_counts"]


def load_dataset(cfg: "DatasetConfig", seed: int = 0) -> Dataset:  # noqa: F821
    """Load the dataset ``cfg.name`` (optionally truncated to ``cfg.limit`` samples)."""
    ds = DATASETS.get(cfg.name, key="dataset.name").obj(cfg, seed)
    if cfg.limit is not None and cfg.limit < len(ds.y_train):
        ds = Dataset(ds.name, ds.x_train[: cfg.limit], ds.y_train[: cfg.limit],
                     ds.x_test, ds.y_test, ds.num_classes)
    return ds
