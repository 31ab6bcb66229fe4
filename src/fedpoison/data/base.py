"""The in-memory dataset type and the dataset and partitioner registries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fedpoison.registry import Registry


@dataclass(frozen=True)
class Dataset:
    """A dataset loaded once as tensors, with the split the dataset defines.

    Attributes
    ----------
    name:
        Registry name.
    x_train, x_test:
        float32 inputs of shape ``(N, C, H, W)`` for images or ``(N, D)`` for
        vectors, scaled to ``[0, 1]`` for images.
    y_train, y_test:
        int64 labels in ``[0, num_classes)``.
    num_classes:
        Number of classes.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch axis."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with its tensors on ``device``."""
        return Dataset(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.num_classes,
        )


#: Loader signature: ``loader(params, seed: int) -> Dataset``, where ``params`` is an
#: instance of the dataset's registered params model. Registry meta: ``input_shape``
#: (in words, for ``fedpoison list``) and ``default_model`` (what ``model.name: auto`` picks).
DatasetLoader = Callable[[Any, int], Dataset]

DATASETS: Registry[DatasetLoader] = Registry("dataset")

#: Partitioner signature: ``fn(labels, num_clients, params, generator) -> list[Tensor]``,
#: one int64 index tensor per client into the training set; ``params`` is an instance of
#: the partition's registered params model.
Partitioner = Callable[[Tensor, int, Any, torch.Generator], list[Tensor]]

PARTITIONERS: Registry[Partitioner] = Registry("partition")
