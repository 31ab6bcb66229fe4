"""Geometric median by smoothed Weiszfeld: RFA (Pillutla et al. 2022).

Reference: Krishna Pillutla, Sham M. Kakade and Zaid Harchaoui, "Robust
Aggregation for Federated Learning", IEEE Transactions on Signal Processing
70, 2022 (RFA, Algorithm 3: smoothed Weiszfeld).

Variant: minimise the smoothed objective
:math:`g_\\nu(z) = \\sum_i \\alpha_i \\max(\\nu, \\|z - x_i\\|)` (in the paper's
smoothing, each distance below :math:`\\nu` is replaced by :math:`\\nu`) with the
Weiszfeld update

.. math:: \\beta_i = \\frac{\\alpha_i}{\\max(\\nu, \\|z - x_i\\|)}, \\qquad
    z \\leftarrow \\frac{\\sum_i \\beta_i x_i}{\\sum_i \\beta_i},

for at most ``max_iter`` iterations, stopping early when the iterate moves by
less than ``tol`` times its norm. (RFA stops on the objective's relative
decrease; with a row at 1e30 the objective's rounding swallows every honest
term, so that test stops after one step.) :math:`\\alpha_i` are uniform by default
(``defense.weighting: samples`` uses the clients' sample counts as RFA does;
uniform is the default because a client can lie about its count). Two
deliberate choices: the iteration starts at the origin (the server's no-op
update, as ByzFL does) rather than at the weighted mean, because with a bounded
budget a mean start stays wherever a ``1e30`` row put it; and the default budget
is 10 iterations with early stopping, not RFA's 3 (``defense.max_iter: 3``
restores it).

Each iteration reads the update matrix twice (one ``X @ z`` product for the
distances, from norms computed once, and one ``beta @ X`` product) and
allocates no ``(n, d)`` temporary; rows whose distance the product cannot
resolve in float32 are recomputed from explicit differences. The reported
``weights`` are the last step's normalised :math:`\\beta` (the aggregate is
exactly ``weights @ updates``) and ``scores`` the rows' distances to the
aggregate.

Guarantee used by the tests (Minsker 2015, Lemma 2.1): with a fraction
:math:`\\alpha = f / n < 1/2` of arbitrary rows, the geometric median lies within
:math:`\\frac{2(1-\\alpha)}{1-2\\alpha} \\max_{i\\ \\mathrm{honest}} \\|x_i - \\bar x_H\\|`
of the honest mean :math:`\\bar x_H`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.rows import distances_to, row_norms
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES
from fedpoison.defenses.requirements import at_least, enforce


class GeometricMedianParams(BaseModel):
    """Parameters of ``geometric_median``."""

    model_config = ConfigDict(extra="forbid")
    #: Maximum Weiszfeld iterations (the rule's bounded budget).
    max_iter: int = Field(default=10, ge=1, le=10_000)
    #: Smoothing nu: distances below it count as nu (RFA's smoothed Weiszfeld).
    smoothing: float = Field(default=1e-6, gt=0.0)
    #: Stop when the iterate moves by less than this fraction of its norm.
    tol: float = Field(default=1e-6, ge=0.0)
    #: ``uniform`` weights every row alike; ``samples`` by sample count (RFA).
    weighting: Literal["uniform", "samples"] = "uniform"


def smoothed_weiszfeld(
    x: Tensor, alpha: Tensor, *, max_iter: int, smoothing: float, tol: float
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Return ``(z, weights, distances, iterations)`` for the smoothed geometric median of the rows.

    ``alpha`` are non-negative row weights (normalised here). ``weights`` are
    the normalised Weiszfeld weights of the last step (``z == weights @ x``)
    and ``distances`` the rows' distances to ``z``.
    """
    a = alpha.to(x.dtype)
    a = a / a.sum()
    z = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    sq = row_norms(x).square()
    dist = sq.sqrt()  # distances to the origin
    w = a
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (iterations are reported)
        beta = a / dist.clamp_min(smoothing)
        # A row at infinite distance has weight 0; never divide by a zero sum.
        w = beta / beta.sum() if bool(beta.sum() > 0) else a
        z_new = w @ x
        dist = distances_to(x, z_new, sq_norms=sq)
        moved = float(torch.linalg.vector_norm(z_new - z))
        z = z_new
        if moved <= tol * float(torch.linalg.vector_norm(z)):
            break
    return z, w, dist, it


#: Breakdown point 1/2.
GEOMED_REQUIRES = at_least(2, 1, "n >= 2f + 1")


@RULES.register(
    "geometric_median",
    description="Geometric median (RFA): smoothed Weiszfeld from the origin, at most max_iter iterations.",
    params=GeometricMedianParams,
    reference="Pillutla et al. 2022, Robust Aggregation for Federated Learning (RFA, smoothed Weiszfeld).",
    requires=GEOMED_REQUIRES,
    filters=False,
)
class GeometricMedian:
    """RFA's geometric median; ``scores`` are the rows' distances to the aggregate."""

    def __init__(self, params: GeometricMedianParams | None = None, *, f: int = 0) -> None:
        self.params = params or GeometricMedianParams()
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n = updates.shape[0]
        enforce(GEOMED_REQUIRES, "geometric_median", n, self.f)
        p = self.params
        alpha = weights if p.weighting == "samples" else torch.ones(n, dtype=updates.dtype, device=updates.device)
        z, w, dist, iters = smoothed_weiszfeld(
            updates, alpha, max_iter=p.max_iter, smoothing=p.smoothing, tol=p.tol
        )
        return AggregationResult(
            z, w, torch.ones(n, dtype=torch.bool, device=updates.device), dist, info={"iterations": float(iters)}
        )
