"""FedAvg: the (sample-weighted or uniform) mean of the update rows.

Reference: McMahan et al. 2017, 'Communication-Efficient Learning of Deep
Networks from Decentralized Data' (FederatedAveraging, weights n_k / n).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES


def weighted_mean(updates: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(sum_i w_i x_i / sum_i w_i, normalised w)``.

    .. math:: \\bar x = \\sum_i \\frac{w_i}{\\sum_j w_j} x_i
    """
    w = weights.to(updates.dtype)
    w = w / w.sum()
    return w @ updates, w


class MeanParams(BaseModel):
    """Parameters of ``mean``."""

    model_config = ConfigDict(extra="forbid")
    #: ``samples`` weights rows by client sample count (FedAvg); ``uniform`` by 1/n.
    weighting: Literal["samples", "uniform"] = "samples"


@RULES.register(
    "mean",
    description="FedAvg: sample-weighted (defense.weighting: samples) or uniform mean.",
    params=MeanParams,
    reference="McMahan et al. 2017, FederatedAveraging.",
    requires="none (f = 0: a single row can move it arbitrarily)",
    filters=False,
)
class Mean:
    """FedAvg aggregation over the update matrix."""

    def __init__(self, params: MeanParams, *, f: int = 0) -> None:
        self.weighting = params.weighting

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        if self.weighting == "uniform":
            weights = torch.ones_like(weights)
        agg, w = weighted_mean(updates, weights)
        n = updates.shape[0]
        return AggregationResult(agg, w, torch.ones(n, dtype=torch.bool, device=updates.device))
