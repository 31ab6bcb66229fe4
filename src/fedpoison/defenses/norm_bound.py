"""Norm bounding with optional weak differential privacy (Sun et al. 2019).

Reference: Ziteng Sun, Peter Kairouz, Ananda Theertha Suresh and H. Brendan
McMahan, "Can You Really Backdoor Federated Learning?", 2019, Section 4
("norm thresholding of updates" and "(weak) differential privacy").

Variant, as in the paper: each update is clipped to L2 norm :math:`M`,

.. math:: \\Delta_i \\leftarrow \\Delta_i \\min(1, M / \\|\\Delta_i\\|),

the clipped updates are averaged with the sample weights (FedAvg's), and,
with ``defense.noise_std`` :math:`\\sigma > 0`, Gaussian noise
:math:`N(0, \\sigma^2 I)` from ``ctx.generator`` is added to the average (the
paper's weak DP; e.g. :math:`M = 3`, :math:`\\sigma = 0.025`). The bound is
``defense.clip_norm``, or adaptive like the ``clip`` pre-aggregator (the
``defense.clip_quantile`` of the round's norms, median by default) when it is
unset; the two keys mean the same thing in both.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.core.draws import gaussian_like
from fedpoison.core.rows import clip_factors, row_norms
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.clipping import ClipBoundParams, clip_bound
from fedpoison.defenses.registry import RULES


class NormBoundParams(ClipBoundParams):
    """Parameters of ``norm_bound``."""

    #: Standard deviation of the Gaussian noise added to the aggregate (0: no noise).
    noise_std: float = Field(default=0.0, ge=0.0)


@RULES.register(
    "norm_bound",
    tags=("changes_scale",),
    description="Norm bounding: clip each update to clip_norm (or a quantile of the norms), weighted "
    "mean, optional Gaussian noise (weak DP).",
    params=NormBoundParams,
    reference="Sun et al. 2019, Can You Really Backdoor Federated Learning? (norm bounding + weak DP).",
    requires="none on n and f (bounds each row's influence to clip_norm / n)",
    filters=False,
)
class NormBound:
    """Clip, sample-weighted mean, optional noise."""

    def __init__(self, params: NormBoundParams | None = None, *, f: int = 0) -> None:
        self.params = params or NormBoundParams()
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        p = self.params
        n = updates.shape[0]
        norms = row_norms(updates)
        bound = clip_bound(norms, p.clip_norm, p.clip_quantile)
        factors = clip_factors(norms, bound)
        w = weights.to(updates.dtype)
        w = w / w.sum()
        agg = (w * factors) @ updates
        info = {"clip_bound": float(bound), "noise_std": p.noise_std}
        if p.noise_std > 0:
            agg = agg + p.noise_std * gaussian_like(agg.shape, generator=ctx.generator, like=agg)
        return AggregationResult(
            agg, w, torch.ones(n, dtype=torch.bool, device=updates.device), norms, int((norms > bound).sum()), info
        )
