"""SignGuard (Xu et al. 2022).

Reference: Jian Xu, Shao-Lun Huang, Linqi Song and Tian Lan, "Byzantine-robust
Federated Learning through Collaborative Malicious Gradient Filtering"
(SignGuard), ICDCS 2022, Algorithm 1 (plain SignGuard, not the -Sim/-Dist
variants).

Variant, as in Algorithm 1:

1. Norm filter: with :math:`M` the median update norm, keep rows with
   ``sg_lower <= ||x_i|| / M <= sg_upper`` (paper: 0.1 and 3.0).
2. Sign clustering: on a random ``sg_coord_fraction`` of the coordinates
   (paper: 10%, drawn from ``ctx.generator``), each row's features are the
   fractions of positive, zero and negative entries; Mean-Shift (flat kernel,
   sklearn's algorithm and bandwidth estimate at quantile 0.5, written here as
   tensor operations on all seeds at once: sklearn's runs one seed at a time
   and took seconds for 50 rows) clusters them and the largest cluster is kept
   (ties: the cluster whose center ranks first by (points within the
   bandwidth, coordinates), as sklearn ranks centers; never by row order). If every feature vector is
   the same, all rows form one cluster.
3. The rows kept by both filters are clipped to :math:`M` and averaged
   uniformly.

If no row passes both filters the aggregate is the zero update and
``info["none_kept"] = 1``; it never falls back to the mean. ``scores`` are the
L1 distances of each row's sign features to the kept cluster's mean features.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from fedpoison.core.draws import permutation
from fedpoison.core.rows import clip_factors, norm_quantile, row_norms
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES


class SignGuardParams(BaseModel):
    """Parameters of ``signguard``."""

    model_config = ConfigDict(extra="forbid")
    #: Lower bound L on norm / median norm.
    sg_lower: float = Field(default=0.1, ge=0.0)
    #: Upper bound R on norm / median norm.
    sg_upper: float = Field(default=3.0, gt=0.0)
    #: Fraction of coordinates sampled for the sign statistics.
    sg_coord_fraction: float = Field(default=0.1, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _bounds(self) -> SignGuardParams:
        if self.sg_lower > self.sg_upper:
            raise ValueError(f"sg_lower must be <= sg_upper={self.sg_upper}, got sg_lower={self.sg_lower}")
        return self


def sign_features(x: Tensor) -> Tensor:
    """``(n, 3)`` fractions of positive, zero and negative entries of each row."""
    d = x.shape[1]
    pos = (x > 0).sum(dim=1)
    neg = (x < 0).sum(dim=1)
    zero = d - pos - neg
    return torch.stack([pos, zero, neg], dim=1).to(torch.float64) / max(d, 1)


def estimate_bandwidth(points: Tensor, quantile: float = 0.5) -> float:
    """Mean over points of the distance to their ``quantile * n``-th nearest point (itself included).

    The same estimate as ``sklearn.cluster.estimate_bandwidth`` on all points.
    """
    n = points.shape[0]
    k = max(1, int(n * quantile))
    dist = torch.cdist(points, points)
    return float(torch.topk(dist, k, dim=1, largest=False).values[:, -1].mean())


def mean_shift_labels(points: Tensor, bandwidth: float, *, max_iter: int = 300) -> Tensor:
    """``(n,)`` cluster labels by flat-kernel Mean-Shift seeded at every point.

    The algorithm of ``sklearn.cluster.MeanShift`` (flat kernel, a seed per
    point, convergence at a shift below ``1e-3 * bandwidth``, centers ranked by
    how many points lie within ``bandwidth``, near-duplicate centers removed,
    every point labelled by its nearest center), with all seeds moved at once
    as tensor operations instead of one seed at a time.
    """
    seeds = points.clone()
    for _ in range(max_iter):
        within = (torch.cdist(seeds, points) <= bandwidth).to(points.dtype)
        counts = within.sum(dim=1, keepdim=True)
        moved = torch.where(counts > 0, (within @ points) / counts.clamp_min(1.0), seeds)
        done = bool(((moved - seeds).norm(dim=1) <= 1e-3 * bandwidth).all())
        seeds = moved
        if done:
            break
    intensity = (torch.cdist(seeds, points) <= bandwidth).sum(dim=1)
    # As sklearn: rank by (intensity, coordinates), descending; depends on the data, not the row order.
    keys = [seeds[:, j].detach().cpu().numpy() for j in reversed(range(seeds.shape[1]))]
    order = torch.from_numpy(np.lexsort([*keys, intensity.cpu().numpy()])[::-1].copy())
    centers: list[Tensor] = []
    for i in order.tolist():  # at most n centers: a loop over clients, not pairs
        c = seeds[i]
        if not centers or bool((torch.stack(centers) - c).norm(dim=1).min() > bandwidth):
            centers.append(c)
    return torch.cdist(points, torch.stack(centers)).argmin(dim=1)


def largest_sign_cluster(features: Tensor) -> Tensor:
    """``(n,)`` bool: the largest Mean-Shift cluster of the sign features (ties: the best-ranked center)."""
    n = features.shape[0]
    if n <= 2 or bool((features.amax(dim=0) - features.amin(dim=0)).max() == 0):
        return torch.ones(n, dtype=torch.bool, device=features.device)
    bandwidth = estimate_bandwidth(features, quantile=0.5)
    if not bandwidth > 0:
        return torch.ones(n, dtype=torch.bool, device=features.device)
    labels = mean_shift_labels(features, bandwidth)
    counts = torch.bincount(labels)
    # Labels number the centers in their (intensity, coordinates) rank: ties go to the best ranked.
    return labels == int(torch.nonzero(counts == counts.max())[0, 0])


@RULES.register(
    "signguard",
    tags=("stochastic",),
    description="SignGuard: norm filter around the median norm, Mean-Shift on sign statistics, clip, average.",
    params=SignGuardParams,
    reference="Xu et al. 2022, Byzantine-robust FL through Collaborative Malicious Gradient Filtering (SignGuard).",
    requires="fewer than n/2 malicious rows (the largest sign cluster is honest)",
    filters=True,
)
class SignGuard:
    """SignGuard's norm and sign filters, then clipping at the median norm."""

    def __init__(self, params: SignGuardParams | None = None, *, f: int = 0) -> None:
        self.params = params or SignGuardParams()
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n, d = updates.shape
        p = self.params
        device = updates.device
        norms = row_norms(updates)
        med = norm_quantile(norms, 0.5)
        ratio = norms / med if bool(med > 0) else torch.where(norms > 0, torch.inf, 1.0).to(norms.dtype)
        by_norm = (ratio >= p.sg_lower) & (ratio <= p.sg_upper)
        k = max(1, math.ceil(p.sg_coord_fraction * d))
        coords = permutation(d, ctx.generator, device)[:k].sort().values
        feats = sign_features(updates[:, coords])
        by_sign = largest_sign_cluster(feats)
        kept = by_norm & by_sign
        center = feats[by_sign].mean(dim=0)
        scores = (feats - center).abs().sum(dim=1).to(updates.dtype)
        n_kept = int(kept.sum())
        info = {"median_norm": float(med), "kept": float(n_kept), "norm_kept": float(by_norm.sum())}
        if n_kept == 0:
            info["none_kept"] = 1.0
            zero = torch.zeros(d, dtype=updates.dtype, device=device)
            return AggregationResult(zero, torch.zeros(n, dtype=updates.dtype, device=device), kept, scores, 0, info)
        w = kept.to(updates.dtype) / n_kept
        agg = (w * clip_factors(norms, med)) @ updates
        clipped = int(((norms > med) & kept).sum())
        return AggregationResult(agg, w, kept, scores, clipped, info)
