"""FoundationFL: synthetic updates from the received updates' extreme values, before a robust rule.

Reference: Minghong Fang, Seyedsina Nabavirazavi, Zhuqing Liu, Wei Sun,
Sundararaja Sitharama Iyengar and Haibo Yang, "Do We Really Need to Design New
Byzantine-robust Aggregation Rules?", NDSS 2025 (arXiv:2501.17381).

The server takes the coordinate-wise extremes of the ``n`` received updates,

.. math:: g^{\\max}_c = \\max_i g_{ic}, \\qquad g^{\\min}_c = \\min_i g_{ic},

scores each update by its distance to the nearer extreme,

.. math:: s_i = \\min\\bigl(\\|g_i - g^{\\max}\\|, \\|g_i - g^{\\min}\\|\\bigr),

and appends ``m`` synthetic updates, each a copy of the update farthest from
both extremes, :math:`g_{i^*}` with :math:`i^* = \\arg\\max_i s_i`. The
foundational rule named in ``defense.name`` (``trimmed_mean`` or ``median``, as
in the paper) then aggregates the ``n + m`` rows. An attacker who pushes its rows
to an extreme makes itself the nearest to that extreme and never :math:`i^*`;
the synthetic copies move every coordinate's order statistics towards
:math:`g_{i^*}`.

With :math:`r = g^{\\max} - g^{\\min}` and the mid-range vector
:math:`\\mu = (g^{\\max} + g^{\\min}) / 2` the score is exactly
:math:`s_i^2 = \\|r\\|^2 / 4 + \\|g_i - \\mu\\|^2 - |\\langle g_i - \\mu, r\\rangle|`: it ranks the
updates by their distance from the mid-range vector, less their tilt towards one extreme. The most
central update scores lowest. Without an attacker the copy is the most outlying honest update, and on
non-IID data that is one client's class-biased update (docs/defenses.md measures the consequence).

``defense.ffl_score: coordinate`` (not in the paper) takes the smaller distance
per coordinate before the norm, :math:`\\|\\min(|g_i - g^{\\max}|, |g_i - g^{\\min}|)\\|`.
With the paper's score, a row at the maximum of some coordinates and at the
minimum of the others (Fang et al.'s Trim attack, sign flipping, large Gaussian
noise) is far from both extreme vectors and can be the one copied; with the
per-coordinate score it scores 0.

Variant: ``defense.ffl_synthetic`` is ``m``; by default ``m = floor(n / 2)``,
the paper's default (Sec. VI-A 6, "the server generates n/2 synthetic updates"). Only rows whose entries are all finite
take part in the extremes and the scores (the server drops the others before
any rule runs). Each synthetic row carries the sample weight of
:math:`g_{i^*}`; ``groups`` maps it back to that client, so the rule's weights
trace back to it. ``info["ffl_client"]`` is the id of the client copied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.rows import distances_to, finite_rows
from fedpoison.defenses.base import PreResult, RoundContext
from fedpoison.defenses.registry import PRE_AGGREGATORS


def _scores_over_finite_rows(x: Tensor, score: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Tensor:
    """``score(rows, max, min)`` of the finite rows against their coordinate-wise extremes; ``-inf`` elsewhere."""
    finite = finite_rows(x)
    scores = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
    if not bool(finite.any()):
        return scores
    good = x if bool(finite.all()) else x[finite]
    scores[finite] = score(good, good.amax(dim=0), good.amin(dim=0))
    return scores


def coordinate_extreme_scores(x: Tensor, block_rows: int = 16) -> Tensor:
    """``(n,)`` :math:`\\|\\min(|x_i - x^{\\max}|, |x_i - x^{\\min}|)\\|` with the minimum taken per coordinate.

    The ``ffl_score: coordinate`` variant (not the paper's Eq. 4): a row that sits
    at one of the two extremes in every coordinate, the max in some and the min
    in others, scores 0. Non-finite rows score ``-inf``. Computed a block of rows
    at a time.

    Example
    -------
    >>> coordinate_extreme_scores(torch.tensor([[0.0, 4.0], [1.0, 1.0], [4.0, 0.0]]))
    tensor([0.0000, 1.4142, 0.0000])
    """

    def score(good: Tensor, hi: Tensor, lo: Tensor) -> Tensor:
        return torch.cat([torch.linalg.vector_norm(torch.minimum((b - hi).abs(), (b - lo).abs()), dim=1)
                          for b in good.split(block_rows)])

    return _scores_over_finite_rows(x, score)


def extreme_scores(x: Tensor) -> Tensor:
    """``(n,)`` FoundationFL scores :math:`\\min(\\|x_i - x^{\\max}\\|, \\|x_i - x^{\\min}\\|)` over the finite rows.

    Rows holding NaN or Inf score ``-inf`` (never chosen) and take no part in
    the extremes.

    Example
    -------
    >>> extreme_scores(torch.tensor([[0.0, 0.0], [1.0, 1.0], [4.0, 4.0]]))
    tensor([0.0000, 1.4142, 0.0000])
    """
    return _scores_over_finite_rows(x, lambda good, hi, lo: torch.minimum(distances_to(good, hi),
                                                                           distances_to(good, lo)))


class FoundationFLParams(BaseModel):
    """Parameters of the ``foundation_fl`` pre-aggregator."""

    model_config = ConfigDict(extra="forbid")
    #: m: synthetic updates appended; ``None`` appends floor(n / 2) (the paper's default), at least one.
    ffl_synthetic: int | None = Field(None, ge=1)
    #: paper: Eq. 4, the smaller of the distances to the max and min vectors; coordinate: the per-coordinate
    #: smaller distance, then the norm (not in the paper; see the module docstring).
    ffl_score: Literal["paper", "coordinate"] = "paper"


@PRE_AGGREGATORS.register(
    "foundation_fl",
    description="FoundationFL: append m copies of the update farthest from the coordinate-wise max and min "
    "vectors, then aggregate with the rule (trimmed_mean or median).",
    params=FoundationFLParams,
    reference="Fang et al. 2025, Do We Really Need to Design New Byzantine-robust Aggregation Rules? (NDSS).",
    variant="synthetic rows = copies of argmax_i min(|g_i - g_max|, |g_i - g_min|); m = defense.ffl_synthetic, "
    "default floor(n / 2) as in the paper",
    requires="the rule's requirement holds for n + m rows",
)
class FoundationFL:
    """Append ``m`` synthetic copies of the update farthest from both coordinate-wise extremes."""

    def __init__(self, params: FoundationFLParams | None = None, *, f: int = 0) -> None:
        self.params = params or FoundationFLParams()
        self.f = f

    @staticmethod
    def rows_out(n: int, params: FoundationFLParams | None = None) -> int:
        """``n + m`` rows."""
        m = (params or FoundationFLParams()).ffl_synthetic
        return n + (max(1, n // 2) if m is None else m)

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> PreResult:
        """Append the synthetic rows (see the module docstring)."""
        n = updates.shape[0]
        m = self.rows_out(n, self.params) - n
        scores = extreme_scores(updates) if self.params.ffl_score == "paper" else coordinate_extreme_scores(updates)
        star = int(torch.argmax(scores))
        rows = torch.cat([updates, updates[star].expand(m, -1)])
        w = torch.cat([weights, weights[star].expand(m)])
        groups = torch.zeros(n + m, n, dtype=updates.dtype, device=updates.device)
        groups[torch.arange(n), torch.arange(n)] = 1.0
        groups[n:, star] = 1.0
        info = {"ffl_client": float(ctx.client_ids[star]), "ffl_synthetic": float(m)}
        return PreResult(rows, w, 0, groups, info)
