"""Multi-metrics: keep the updates whose whitened cosine, Manhattan and length scores are lowest.

Reference: Siquan Huang, Yijiang Li, Chong Chen, Leyu Shi and Ying Gao,
"Multi-metrics adaptively identifies backdoors in Federated learning", ICCV 2023.

Each row :math:`u_i` gets three sums over the other rows :math:`j \\ne i`:

.. math::

   c_i = \\sum_j (1 - \\cos(u_i, u_j))^2, \\qquad
   m_i = \\sum_j \\|u_i - u_j\\|_1, \\qquad
   e_i = \\sum_j \\bigl|\\,\\|u_i\\|_2 - \\|u_j\\|_2\\bigr|

and the score is the quadratic form of its feature vector :math:`t_i = (c_i, m_i, e_i)`
with the inverse of the features' covariance over the round (the dynamic weighting
of the paper, a whitening):

.. math:: s_i = t_i^\\top \\Sigma^{-1} t_i

The ``floor(p n)`` rows (at least one) with the lowest scores are kept and averaged with their
sample weights.

Variant: as in the authors' published code, the "Euclidean" metric is the
difference of the rows' lengths, the covariance is the unbiased one, and the
quadratic form is taken around the origin (not the features' mean). Where the
covariance is singular (identical rows) its pseudo-inverse is used. fedpoison
scores the clients' *updates* (the authors score local models; Manhattan
distances are the same either way). ``defense.mm_keep`` is :math:`p`, 0.3 by
default as in the authors' code; rows whose features are not finite score
``+inf`` and are never kept.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.rows import cosine_similarity_matrix, row_norms
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.mean import weighted_mean
from fedpoison.defenses.registry import RULES


def multi_metric_features(updates: Tensor) -> Tensor:
    """``(n, 3)`` float64 features: summed squared cosine distance, Manhattan distance and length difference."""
    x = updates.to(torch.float64)
    cos_dist = (1.0 - cosine_similarity_matrix(x)).square()
    cos_dist.fill_diagonal_(0.0)
    manhattan = torch.cdist(x, x, p=1.0)
    norms = row_norms(x)
    length = (norms[:, None] - norms[None, :]).abs()
    return torch.stack([cos_dist.sum(dim=1), manhattan.sum(dim=1), length.sum(dim=1)], dim=1)


def whitened_scores(features: Tensor) -> Tensor:
    """``(n,)`` :math:`t_i^T \\Sigma^{+} t_i` with :math:`\\Sigma` the unbiased covariance of the finite rows.

    Rows with a non-finite feature score ``+inf``; with fewer than two finite
    rows every finite row scores 0.
    """
    finite = torch.isfinite(features).all(dim=1)
    scores = torch.full((features.shape[0],), float("inf"), dtype=features.dtype, device=features.device)
    good = features[finite]
    if good.shape[0] < 2:
        scores[finite] = 0.0
        return scores
    inv = torch.linalg.pinv(torch.cov(good.T))
    scores[finite] = ((good @ inv) * good).sum(dim=1)
    return scores


class MultiMetricsParams(BaseModel):
    """Parameters of ``multi_metrics``."""

    model_config = ConfigDict(extra="forbid")
    #: Share of rows kept (floor, at least one), those with the lowest scores; 0.3 in the authors' code.
    mm_keep: float = Field(0.3, gt=0.0, le=1.0)


@RULES.register(
    "multi_metrics",
    description="Multi-metrics: whitened sums of cosine, Manhattan and length distances; the defense.mm_keep "
    "share with the lowest scores is averaged.",
    params=MultiMetricsParams,
    reference="Huang et al. 2023, Multi-metrics adaptively identifies backdoors in Federated learning (ICCV).",
    variant="scores updates; 'Euclidean' = length difference and the form taken at the origin, as in the authors' code",
    requires="none on n and f (keeps floor(mm_keep n) rows, at least one)",
    filters=True,
)
class MultiMetrics:
    """Keep the ``floor(mm_keep * n)`` rows (at least one) with the lowest whitened multi-metric scores."""

    def __init__(self, params: MultiMetricsParams, *, f: int = 0) -> None:
        self.keep = params.mm_keep

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n = updates.shape[0]
        scores = whitened_scores(multi_metric_features(updates))
        k = min(n, max(1, math.floor(self.keep * n + 1e-9)))
        order = torch.sort(scores, stable=True).indices
        selected = torch.zeros(n, dtype=torch.bool, device=updates.device)
        selected[order[:k]] = True
        selected &= torch.isfinite(scores)
        if not bool(selected.any()):  # every row's features overflowed: keep the one with the smallest norm
            selected[torch.argmin(torch.nan_to_num(row_norms(updates), nan=float("inf")))] = True
        kept_w = torch.where(selected, weights.to(updates.dtype), torch.zeros_like(weights, dtype=updates.dtype))
        agg, w = weighted_mean(torch.where(selected[:, None], updates, torch.zeros_like(updates)), kept_w)
        return AggregationResult(agg, w, selected, scores=scores.to(updates.dtype))
