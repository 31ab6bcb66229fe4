"""Coordinate-wise trimmed mean (Yin et al. 2018).

Reference: Dong Yin, Yudong Chen, Kannan Ramchandran and Peter Bartlett,
"Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
ICML 2018, Algorithm 1 option II (``trmean_beta``).

Variant: for each coordinate, drop the ``b`` largest and the ``b`` smallest of
the ``n`` values and average the ``n - 2b`` left. ``b = floor(beta * n)`` when
``defense.beta`` is set (the paper's fraction), else ``b = f`` (the number of
Byzantine rows the defense assumes, as in ByzFL and most evaluations). Sample
weights are ignored.

Guarantee used by the tests: with ``b >= f`` Byzantine rows, every coordinate of
the output lies within the range of the honest values of that coordinate.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.order_statistics import coordinate_trimmed_mean
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES
from fedpoison.defenses.requirements import enforce
from fedpoison.registry import Requirement


class TrimmedMeanParams(BaseModel):
    """Parameters of ``trimmed_mean``."""

    model_config = ConfigDict(extra="forbid")
    #: Fraction trimmed from each end (b = floor(beta * n)); ``None`` trims b = f rows from each end.
    beta: float | None = Field(default=None, ge=0.0, lt=0.5)


def trim_count(n: int, f: int, beta: float | None) -> int:
    """Rows trimmed from each end: ``floor(beta * n)``, or ``f`` when ``beta`` is ``None``."""
    return math.floor(beta * n) if beta is not None else f


#: At least one value left per coordinate; robust when b >= f.
TRIMMED_MEAN_REQUIRES = Requirement(
    "n >= 2b + 1 (b = f, or floor(beta * n)); robust when b >= f",
    lambda n, f, p: n >= 2 * trim_count(n, f, getattr(p, "beta", None)) + 1,
)


@RULES.register(
    "trimmed_mean",
    description="Coordinate-wise trimmed mean: drop the b largest and b smallest values (b = f or floor(beta*n)).",
    params=TrimmedMeanParams,
    reference="Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates (trmean).",
    requires=TRIMMED_MEAN_REQUIRES,
    filters=False,
)
class TrimmedMean:
    """Coordinate-wise trimmed mean; reports weight ``1/n`` per row."""

    def __init__(self, params: TrimmedMeanParams | None = None, *, f: int = 0) -> None:
        self.beta = (params or TrimmedMeanParams()).beta
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n = updates.shape[0]
        b = trim_count(n, self.f, self.beta)
        enforce(TRIMMED_MEAN_REQUIRES, "trimmed_mean", n, self.f, TrimmedMeanParams(beta=self.beta), b=b)
        agg = coordinate_trimmed_mean(updates, b)
        return AggregationResult(
            agg,
            torch.full((n,), 1.0 / n, dtype=updates.dtype, device=updates.device),
            torch.ones(n, dtype=torch.bool, device=updates.device),
            info={"trimmed_per_side": float(b)},
        )
