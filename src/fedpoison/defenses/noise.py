"""Randomness for defenses, drawn only from the round's ``ctx.generator``.

The generator may live on another device than the updates (a CPU generator
for a CUDA run); draws happen on the generator's device and are then moved.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal noise with ``x``'s shape, dtype and device, from ``generator``."""
    z = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return z.to(x.device)


def permutation(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """A random permutation of ``range(n)`` from ``generator``, on ``device``."""
    return torch.randperm(n, generator=generator, device=generator.device).to(device)
