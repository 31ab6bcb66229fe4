"""FLAME (Nguyen et al. 2022).

Reference: Thien Duc Nguyen et al., "FLAME: Taming Backdoors in Federated
Learning", USENIX Security 2022, Algorithm 1.

Variant, as in the paper, with one stated change:

1. Filtering: HDBSCAN (``sklearn.cluster.HDBSCAN``, ``min_cluster_size = n//2 + 1``,
   ``min_samples = 1``, single cluster allowed) on the pairwise cosine distances
   ``1 - cos``, computed in torch from one Gram product. The cluster holding a
   majority is kept; noise points and other clusters are dropped. The change:
   the distances are between the *updates* (local minus global model), not the
   local models. Cosines of whole models are all close to 1 because every local
   model shares the global one; the angles between updates are what separate a
   poisoned direction, and they are what reimplementations compare.
2. Adaptive clipping: :math:`S_t` is the median of all ``n`` update norms; each
   kept update is scaled by :math:`\\min(1, S_t / \\|x_i\\|)`.
3. Aggregation and noise: the mean of the clipped kept updates plus Gaussian
   noise :math:`N(0, (\\lambda S_t)^2 I)` drawn from ``ctx.generator``, with
   :math:`\\lambda` = ``defense.noise_lambda`` (the paper's 0.001 for image
   classification).

If HDBSCAN finds no majority cluster (possible only with ties), the aggregate is
the zero update and ``info["no_cluster"] = 1``; it never falls back to the mean.
With a single row there is nothing to cluster and the row is kept.
``scores`` are each row's median cosine distance to the other rows.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.clustering import majority_cluster
from fedpoison.core.draws import gaussian_like
from fedpoison.core.rows import clip_factors, cosine_similarity_matrix, norm_quantile, row_norms
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES


class FlameParams(BaseModel):
    """Parameters of ``flame``."""

    model_config = ConfigDict(extra="forbid")
    #: Noise level lambda: the noise std is lambda times the median update norm.
    noise_lambda: float = Field(default=0.001, ge=0.0)


@RULES.register(
    "flame",
    tags=("stochastic", "changes_scale"),
    quiet_params={"noise_lambda": 0.0},
    description="FLAME: HDBSCAN on cosine distances keeps the majority cluster, clip at median norm, add noise.",
    params=FlameParams,
    reference="Nguyen et al. 2022, FLAME: Taming Backdoors in Federated Learning (cosine on updates).",
    requires="fewer than n/2 poisoned rows (the kept cluster is a majority)",
    filters=True,
)
class Flame:
    """FLAME's filter, clip and noise."""

    def __init__(self, params: FlameParams | None = None, *, f: int = 0) -> None:
        self.noise_lambda = (params or FlameParams()).noise_lambda
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n, d = updates.shape
        cos_dist = 1.0 - cosine_similarity_matrix(updates)
        kept = majority_cluster(cos_dist)
        norms = row_norms(updates)
        bound = norm_quantile(norms, 0.5)
        factors = clip_factors(norms, bound)
        n_kept = int(kept.sum())
        scores = cos_dist.masked_fill(torch.eye(n, dtype=torch.bool, device=updates.device), float("nan"))
        scores = scores.nanmedian(dim=1).values if n > 1 else torch.zeros(n, dtype=updates.dtype, device=updates.device)
        info = {"clip_bound": float(bound), "kept": float(n_kept)}
        if n_kept == 0:
            info["no_cluster"] = 1.0
            zero = torch.zeros(d, dtype=updates.dtype, device=updates.device)
            return AggregationResult(zero, torch.zeros(n, dtype=updates.dtype, device=updates.device), kept, scores, 0, info)
        w = kept.to(updates.dtype) / n_kept
        agg = (w * factors) @ updates
        sigma = self.noise_lambda * float(bound)
        info["noise_std"] = sigma
        if sigma > 0:
            agg = agg + sigma * gaussian_like(agg.shape, generator=ctx.generator, like=agg)
        clipped = int(((norms > bound) & kept).sum())
        return AggregationResult(agg, w, kept, scores, clipped, info)
