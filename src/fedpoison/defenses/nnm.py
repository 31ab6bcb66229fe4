"""Nearest-neighbour mixing, NNM (Allouah et al. 2023), pre-aggregator ``nnm``.

Reference: Youssef Allouah, Sadegh Farhadkhani, Rachid Guerraoui, Nirupam Gupta,
Rafael Pinot and John Stephan, "Fixing by Mixing: A Recipe for Optimal
Byzantine ML under Heterogeneity", AISTATS 2023, Algorithm 1.

Variant, as in the paper: each row is replaced by the uniform mean of its
``n - f`` nearest rows in L2, itself included (it is forced in, even when
another row is at distance 0). Distances come from one Gram product and the
mixing is one ``(n, n) @ (n, d)`` product; ``groups`` is that mixing matrix, so
the rule's selection traces back to the mixed clients. Row weights are passed
on unchanged (row ``i`` still stands for client ``i``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedpoison.core.rows import pairwise_sq_distances
from fedpoison.defenses.base import PreResult, RoundContext
from fedpoison.defenses.registry import PRE_AGGREGATORS
from fedpoison.defenses.requirements import at_least, enforce
from fedpoison.registry import NoParams


def nnm_mixing(sq_dist: Tensor, f: int) -> Tensor:
    """``(n, n)`` row-stochastic matrix: row ``i`` averages the ``n - f`` nearest rows to ``i``."""
    n = sq_dist.shape[0]
    k = n - f
    d = sq_dist.clone()
    d.fill_diagonal_(-1.0)  # self first, whatever the ties
    idx = torch.topk(d, k, dim=1, largest=False).indices
    mix = torch.zeros(n, n, dtype=sq_dist.dtype, device=sq_dist.device)
    mix.scatter_(1, idx, 1.0 / k)
    return mix


NNM_REQUIRES = at_least(1, 1, "n >= f + 1")


@PRE_AGGREGATORS.register(
    "nnm",
    description="Nearest-neighbour mixing: replace each row by the mean of its n - f nearest rows.",
    params=NoParams,
    reference="Allouah et al. 2023, Fixing by Mixing (NNM).",
    requires=NNM_REQUIRES,
)
class NNM:
    """Nearest-neighbour mixing."""

    def __init__(self, params: NoParams | None = None, *, f: int = 0) -> None:
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> PreResult:
        """Pre-aggregate one round's rows (see the class docstring)."""
        n = updates.shape[0]
        enforce(NNM_REQUIRES, "nnm", n, self.f)
        mix = nnm_mixing(pairwise_sq_distances(updates), self.f)
        mixed = mix @ updates
        return PreResult(mixed, weights, 0, mix, {})
