"""Divide-and-Conquer, DnC (Shejwalkar & Houmansadr 2021).

Reference: Virat Shejwalkar and Amir Houmansadr, "Manipulating the Byzantine:
Optimizing Model Poisoning Attacks and Defenses for Federated Learning",
NDSS 2021, Algorithm 2.

Variant, as in the paper: for each of ``dnc_iters`` iterations, draw ``dnc_dims``
coordinates at random (without replacement, from ``ctx.generator``), center the
sub-sampled updates on their mean, compute the top right singular vector
``v`` of the centered ``(n, b)`` matrix, score each row by its squared
projection :math:`s_i = \\langle x_i - \\mu, v \\rangle^2`, and keep the
``n - floor(c f)`` rows with the lowest scores (``c`` = ``dnc_filter``). The rows
kept in every iteration are averaged (uniformly). The singular vector comes
from the ``n x n`` Gram matrix of the centered sub-matrix (its top
eigenvector ``u`` gives :math:`s_i = \\sigma^2 u_i^2`), so no SVD of the
``(n, b)`` matrix is taken. Paper defaults: ``b = 10000``, ``c = 1``; the number
of iterations (5 here) is the paper's ``niters``. ``scores`` are the rows'
scores averaged over iterations, each iteration's divided by its largest.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.draws import permutation
from fedpoison.core.rows import finite_rows, gram
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES
from fedpoison.defenses.requirements import enforce, require
from fedpoison.registry import Requirement


class DnCParams(BaseModel):
    """Parameters of ``dnc``."""

    model_config = ConfigDict(extra="forbid")
    #: Iterations, each on a fresh random subset of coordinates.
    dnc_iters: int = Field(default=5, ge=1, le=100)
    #: Coordinates sampled per iteration (all when the update is shorter).
    dnc_dims: int = Field(default=10_000, ge=1)
    #: Filtering fraction c: each iteration drops the floor(c * f) highest scores.
    dnc_filter: float = Field(default=1.0, ge=0.0)


def dnc_outlier_scores(sub: Tensor) -> Tensor:
    """``(n,)`` float64 squared projections of the centered rows of ``sub`` on their top right singular vector.

    Computed in float64 after dividing by the largest magnitude (scores are
    only compared with each other), so rows of ``1e30`` neither overflow nor
    wipe out the honest rows' digits. Rows with NaN/Inf score ``+inf``.
    """
    finite = finite_rows(sub)
    out = torch.full((sub.shape[0],), float("inf"), dtype=torch.float64, device=sub.device)
    if not bool(finite.any()):
        return out
    x = sub[finite].to(torch.float64)
    scale = x.abs().max()
    x = x / scale if bool(scale > 0) else x
    centered = x - x.mean(dim=0)
    evals, evecs = torch.linalg.eigh(gram(centered))  # ascending eigenvalues
    out[finite] = evals[-1].clamp_min(0.0) * evecs[:, -1].square()
    return out


#: At least one row kept after dropping ``floor(c f)``.
DNC_REQUIRES = Requirement(
    "n - floor(c f) >= 1 rows kept",
    lambda n, f, p: n - math.floor(getattr(p, "dnc_filter", 1.0) * f) >= 1,
)


@RULES.register(
    "dnc",
    tags=("stochastic",),
    description="Divide-and-Conquer: drop the rows with the largest projections on the top singular "
    "direction of random coordinate subsets.",
    params=DnCParams,
    reference="Shejwalkar & Houmansadr 2021, Manipulating the Byzantine (DnC, Algorithm 2).",
    requires=DNC_REQUIRES,
    filters=True,
)
class DnC:
    """Divide-and-Conquer spectral filtering."""

    def __init__(self, params: DnCParams | None = None, *, f: int = 0) -> None:
        self.params = params or DnCParams()
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n, d = updates.shape
        p = self.params
        drop = math.floor(p.dnc_filter * self.f)
        keep_n = n - drop
        enforce(DNC_REQUIRES, "dnc", n, self.f, p, c=p.dnc_filter)
        b = min(p.dnc_dims, d)
        good = torch.ones(n, dtype=torch.bool, device=updates.device)
        score_sum = torch.zeros(n, dtype=torch.float64, device=updates.device)
        for _ in range(p.dnc_iters):
            dims = permutation(d, ctx.generator, updates.device)[:b].sort().values
            s = dnc_outlier_scores(updates[:, dims])
            order = torch.sort(s, stable=True).indices
            kept = torch.zeros(n, dtype=torch.bool, device=updates.device)
            kept[order[:keep_n]] = True
            good &= kept
            finite = s[torch.isfinite(s)]
            top = finite.max() if finite.numel() else torch.ones((), dtype=s.dtype, device=s.device)
            score_sum += s / top if bool(top > 0) else s
        n_good = int(good.sum())
        require(n_good >= 1, "dnc", "at least one row kept in every iteration", n=n, f=self.f, kept=n_good)
        w = good.to(updates.dtype) / n_good
        return AggregationResult(
            w @ updates, w, good, (score_sum / p.dnc_iters).to(updates.dtype), info={"kept": float(n_good), "dims": float(b)}
        )
