"""FreqFed (Fereidooni et al., NDSS 2024): cluster the updates' low-frequency DCT coefficients.

Reference: Hossein Fereidooni, Alessandro Pegoraro, Phillip Rieger, Alexandra
Dmitrienko and Ahmad-Reza Sadeghi, "FreqFed: A Frequency Analysis-Based
Approach for Mitigating Poisoning Attacks in Federated Learning", NDSS 2024,
Algorithm 1.

1. **Frequency analysis.** Each update :math:`u_i \\in \\mathbb{R}^d` is laid
   out, zero-padded, as a :math:`P \\times P` matrix with
   :math:`P = \\lceil \\sqrt d \\rceil` (row-major) and transformed by the
   orthonormal 2-D DCT-II (:func:`fedpoison.core.dct.dct2_ii`).
2. **Low-frequency filter.** The features of :math:`u_i` are the coefficients
   :math:`V_i[a, b]` with :math:`a + b \\le \\lfloor P/2 \\rfloor`: the top-left
   triangle of the coefficient matrix, where a smooth (low-frequency) signal
   puts its energy.
3. **Clustering.** HDBSCAN on the pairwise cosine distances of the feature
   vectors, ``min_cluster_size = n // 2 + 1``, ``min_samples = 1``, a single
   cluster allowed (:func:`fedpoison.core.clustering.majority_cluster`).
4. **Aggregation.** The updates of the largest cluster are averaged with their
   sample weights (FedAvg); no clipping, no noise.

Variant: the paper transforms "the weights of each local model" as a matrix
and leaves open how a many-layer model becomes one; fedpoison, like the
public re-implementations, lays the whole flat *update* (local minus global
model, the quantity the other filters compare) into one square matrix. If
HDBSCAN finds no cluster holding a majority, the aggregate is the zero update
and ``info["no_cluster"] = 1`` (as for FLAME); it never falls back to the
mean. ``scores`` are each row's median cosine distance to the other rows in
feature space. The DCT runs over ``defense.freqfed_chunk`` rows at a time, so
it holds a few ``chunk x d`` buffers, not ``n x d``.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.clustering import majority_cluster
from fedpoison.core.dct import dct2_ii
from fedpoison.core.rows import cosine_similarity_matrix
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.mean import weighted_mean
from fedpoison.defenses.registry import RULES


def low_frequency_mask(p: int) -> Tensor:
    """``(k, k)`` bool, ``k = p // 2 + 1``: the coefficients with ``a + b <= p // 2`` of a ``p x p`` DCT."""
    k = p // 2 + 1
    idx = torch.arange(k)
    return (idx[:, None] + idx[None, :]) <= p // 2


def low_frequency_features(updates: Tensor, *, chunk: int = 16) -> Tensor:
    """``(n, m)`` the low-frequency 2-D DCT coefficients of each row laid out as a square matrix.

    Row :math:`i` is zero-padded to :math:`P^2` entries, :math:`P = \\lceil\\sqrt d\\rceil`,
    reshaped row-major to :math:`P \\times P`, transformed by the orthonormal
    DCT-II along both axes, and the coefficients :math:`V[a, b]` with
    :math:`a + b \\le \\lfloor P/2 \\rfloor` are kept in row-major order.
    """
    n, d = updates.shape
    p = max(1, math.isqrt(d - 1) + 1) if d > 0 else 1
    mask = low_frequency_mask(p).to(updates.device)
    out = []
    for start in range(0, n, chunk):  # bounded memory: chunk rows at a time, never a loop over coordinates
        rows = updates[start:start + chunk]
        padded = torch.nn.functional.pad(rows, (0, p * p - d)).view(-1, p, p)
        coeffs = dct2_ii(padded, keep=p // 2 + 1)
        out.append(coeffs[:, mask])
    return torch.cat(out) if out else updates.new_zeros((0, int(mask.sum())))


class FreqFedParams(BaseModel):
    """Parameters of ``freqfed``."""

    model_config = ConfigDict(extra="forbid")
    #: Rows transformed at once (memory only; the result does not depend on it).
    freqfed_chunk: int = Field(16, ge=1)


@RULES.register(
    "freqfed",
    description="FreqFed: HDBSCAN on cosine distances of the updates' low-frequency 2-D DCT coefficients; "
    "the largest (majority) cluster is averaged.",
    params=FreqFedParams,
    reference="Fereidooni et al. 2024, FreqFed: A Frequency Analysis-Based Approach for Mitigating Poisoning "
    "Attacks in Federated Learning (NDSS).",
    variant="whole flat update as one zero-padded square matrix; a + b <= P/2 coefficients; "
    "HDBSCAN(min_cluster_size=n//2+1, min_samples=1) on cosine distances; FedAvg of the cluster",
    requires="fewer than n/2 poisoned rows (the kept cluster is a majority)",
    filters=True,
)
class FreqFed:
    """FreqFed's frequency filter, majority clustering and FedAvg of the cluster."""

    def __init__(self, params: FreqFedParams | None = None, *, f: int = 0) -> None:
        self.chunk = (params or FreqFedParams()).freqfed_chunk
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the module docstring)."""
        n, d = updates.shape
        feats = low_frequency_features(updates, chunk=self.chunk)
        finite = torch.isfinite(feats).all(dim=1)
        cos_dist = 1.0 - cosine_similarity_matrix(torch.where(finite[:, None], feats, torch.zeros_like(feats)))
        cos_dist = torch.where(finite[:, None] & finite[None, :], cos_dist, torch.full_like(cos_dist, 2.0))
        kept = majority_cluster(cos_dist) & finite
        eye = torch.eye(n, dtype=torch.bool, device=updates.device)
        scores = cos_dist.masked_fill(eye, float("nan")).nanmedian(dim=1).values if n > 1 \
            else torch.zeros(n, dtype=updates.dtype, device=updates.device)
        n_kept = int(kept.sum())
        info = {"kept": float(n_kept), "features": float(feats.shape[1])}
        if n_kept < n // 2 + 1 and n > 2:
            info["no_cluster"] = 1.0
            kept = torch.zeros_like(kept)
            zero = torch.zeros(d, dtype=updates.dtype, device=updates.device)
            return AggregationResult(zero, torch.zeros(n, dtype=updates.dtype, device=updates.device), kept,
                                     scores.to(updates.dtype), 0, info)
        agg, w_kept = weighted_mean(updates[kept], weights[kept])
        w = torch.zeros(n, dtype=updates.dtype, device=updates.device)
        w[kept] = w_kept
        return AggregationResult(agg, w, kept, scores.to(updates.dtype), 0, info)
