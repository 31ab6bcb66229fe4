"""Bulyan (El Mhamdi et al. 2018) over Krum.

Reference: El Mahdi El Mhamdi, Rachid Guerraoui and Sébastien Rouault, "The
Hidden Vulnerability of Distributed Learning in Byzantium", ICML 2018,
Algorithm "Bulyan" with A = Krum.

Variant, as in the paper:

1. Selection: pick ``theta = n - 2f`` rows one at a time; each pick is the Krum
   winner (lowest sum of squared distances to its ``r - f - 2`` nearest rows,
   ``r`` being the rows not yet picked), which is then removed. All distances
   come from one Gram product computed once; each pick only re-scores the
   ``r x r`` sub-matrix. When ``r - f - 2 < 1`` (only the last pick, and only
   for ``f <= 1``) one neighbour is used so the pick still depends on the data.
2. Aggregation: for each coordinate, average the ``beta = theta - 2f`` picked
   values closest to the picked rows' median.

Requirement: ``n >= 4f + 3``. Sample weights are ignored.

Guarantee used by the tests: each coordinate of the output lies within the
honest values' range of that coordinate widened by that range's width on
each side, whatever the ``f`` Byzantine rows hold.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedpoison.core.order_statistics import coordinate_closest_to_median_mean
from fedpoison.core.rows import krum_scores, pairwise_sq_distances
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES
from fedpoison.defenses.requirements import at_least, enforce
from fedpoison.registry import NoParams

BULYAN_REQUIRES = at_least(4, 3, "n >= 4f + 3")


def bulyan_select(sq_dist: Tensor, f: int, theta: int) -> Tensor:
    """``(theta,)`` indices picked by iterated Krum, in pick order.

    Each pick masks the picked rows out of the distance matrix (``+inf``
    columns, ignored rows) and takes the lowest score; ties go to the lowest
    index.
    """
    n = sq_dist.shape[0]
    device = sq_dist.device
    remaining = torch.ones(n, dtype=torch.bool, device=device)
    picks = torch.empty(theta, dtype=torch.long, device=device)
    inf = torch.tensor(float("inf"), dtype=sq_dist.dtype, device=device)
    for t in range(theta):
        # Krum over the rows not picked yet (picked rows: nobody's neighbour, score inf).
        scores = krum_scores(sq_dist, f, valid=remaining)
        # NaN-free: inf + finite = inf; a row of inf distances scores inf.
        pick = int(torch.argmin(torch.where(torch.isnan(scores), inf, scores)))
        if not bool(remaining[pick]):  # every remaining score is inf: lowest remaining index
            pick = int(torch.nonzero(remaining)[0, 0])
        picks[t] = pick
        remaining[pick] = False
    return picks


@RULES.register(
    "bulyan",
    description="Bulyan: n - 2f rows picked by iterated Krum, then per coordinate the mean of the "
    "n - 4f values closest to their median.",
    params=NoParams,
    reference="El Mhamdi et al. 2018, The Hidden Vulnerability of Distributed Learning in Byzantium (Bulyan over Krum).",
    requires=BULYAN_REQUIRES,
    filters=True,
)
class Bulyan:
    """Bulyan over Krum; ``scores`` are the first pick's Krum scores."""

    def __init__(self, params: NoParams | None = None, *, f: int = 0) -> None:
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n = updates.shape[0]
        f = self.f
        enforce(BULYAN_REQUIRES, "bulyan", n, f)
        theta, beta = n - 2 * f, n - 4 * f
        sq = pairwise_sq_distances(updates)
        picks = bulyan_select(sq, f, theta)
        picked = updates[picks]  # advanced indexing: index_select on CPU rows was 8x slower
        agg = coordinate_closest_to_median_mean(picked, beta)
        selected = torch.zeros(n, dtype=torch.bool, device=updates.device)
        selected[picks] = True
        w = selected.to(updates.dtype) / theta
        return AggregationResult(
            agg, w, selected, krum_scores(sq, f), info={"selected": float(theta), "beta": float(beta)}
        )
