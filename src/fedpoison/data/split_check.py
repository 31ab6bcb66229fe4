"""Checks on a partition's output: every client's samples are its own, in range, and enough.

A partitioner with parameters at an extreme can return a split that is not the
one it promises; whatever the cause, :func:`check_split` refuses it before any
training with one :class:`~fedpoison.errors.ConfigError` line.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedpoison.errors import ConfigError


def check_split(parts: list[Tensor], num_samples: int, num_clients: int, min_samples: int, name: str) -> None:
    """Raise ConfigError unless ``parts`` are ``num_clients`` disjoint index sets into ``range(num_samples)``."""
    where = f"partition.name={name}"
    if len(parts) != num_clients:
        raise ConfigError(f"{where}: expected {num_clients} clients' index sets, got {len(parts)}")
    flat = torch.cat([p.reshape(-1).to("cpu", torch.int64) for p in parts]) if parts else torch.zeros(0, dtype=torch.int64)
    if len(flat) and (int(flat.min()) < 0 or int(flat.max()) >= num_samples):
        raise ConfigError(f"{where}: expected sample indices in 0..{num_samples - 1}, got {int(flat.min())}.."
                          f"{int(flat.max())} (the partition parameters are too extreme for this dataset)")
    if len(torch.unique(flat)) != len(flat):
        raise ConfigError(f"{where}: the split hands {len(flat) - len(torch.unique(flat))} samples to several "
                          "clients (the partition parameters are too extreme for this dataset)")
    short = [k for k, p in enumerate(parts) if len(p) < min_samples]
    if short:
        raise ConfigError(f"{where}: clients {short[:5]} got fewer than partition.min_samples={min_samples} samples")
