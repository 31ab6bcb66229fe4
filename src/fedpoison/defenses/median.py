"""Coordinate-wise median (Yin et al. 2018).

Reference: Dong Yin, Yudong Chen, Kannan Ramchandran and Peter Bartlett,
"Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
ICML 2018, Algorithm 1 option I (``med``).

Variant: the usual median of each coordinate over the ``n`` rows; for even
``n`` the mean of the two middle values (as in the paper's definition and in
``numpy.median``), not ``torch.median``'s lower middle value. Sample weights are
ignored: a weighted median would let a client that claims many samples move it.

Guarantee used by the tests: when ``f < n/2`` rows are Byzantine, every
coordinate of the output lies within the range of the honest values of that
coordinate, whatever the Byzantine rows hold.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedpoison.core.order_statistics import coordinate_median
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES
from fedpoison.defenses.requirements import at_least, enforce
from fedpoison.registry import NoParams

#: The breakdown requirement: a majority of honest rows.
MEDIAN_REQUIRES = at_least(2, 1, "n >= 2f + 1")


@RULES.register(
    "median",
    description="Coordinate-wise median of the updates (sample weights ignored).",
    params=NoParams,
    reference="Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates (median).",
    requires=MEDIAN_REQUIRES,
    filters=False,
)
class Median:
    """Coordinate-wise median; reports weight ``1/n`` per row (rows mix per coordinate)."""

    def __init__(self, params: NoParams | None = None, *, f: int = 0) -> None:
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n = updates.shape[0]
        enforce(MEDIAN_REQUIRES, "median", n, self.f)
        agg = coordinate_median(updates)
        return AggregationResult(
            agg,
            torch.full((n,), 1.0 / n, dtype=updates.dtype, device=updates.device),
            torch.ones(n, dtype=torch.bool, device=updates.device),
        )
