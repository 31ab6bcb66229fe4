"""Random draws for attacks and defenses, only from an explicit generator.

The generator may live on another device than the tensors it serves (a CPU
generator in a CUDA run): draws are made on the generator's device and then
moved, so the same seed gives the same bits on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_like(
    shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator, like: Tensor, std: float = 1.0
) -> Tensor:
    """``N(0, std^2)`` draws of ``shape``, on ``like``'s device and dtype.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> gaussian_like((2, 3), generator=g, like=torch.zeros(1, dtype=torch.float64)).dtype
    torch.float64
    """
    draw = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=like.dtype)
    if std != 1.0:
        draw = draw * std
    return draw.to(like.device)


def uniform_like(shape: tuple[int, ...], *, generator: torch.Generator, like: Tensor) -> Tensor:
    """``U[0, 1)`` draws of ``shape``, on ``like``'s device and dtype."""
    draw = torch.rand(shape, generator=generator, device=generator.device)
    return draw.to(device=like.device, dtype=like.dtype)


def permutation(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """A uniformly random permutation of ``range(n)`` (int64), on ``device``."""
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def random_subset(n: int, k: int, *, generator: torch.Generator, device: torch.device) -> Tensor:
    """``(k,)`` int64 indices of ``k`` distinct items of ``range(n)``, drawn uniformly.

    The first ``k`` entries of :func:`permutation`.
    """
    return permutation(n, generator, device)[:k]
