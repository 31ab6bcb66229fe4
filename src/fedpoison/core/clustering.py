"""Small clustering shared by the detection defenses: batched k-means, the gap statistic, HDBSCAN.

- :func:`kmeans`: Lloyd's algorithm with k-means++ seeding, for a batch of
  small point sets at once (the gap statistic clusters its reference sets
  together), every draw from an explicit generator;
- :func:`gap_statistic`: the number of clusters of Tibshirani, Walther and
  Hastie (2001), as FLDetector (Zhang et al. 2022) and RFLBAT (Wang et al.
  2022) use it;
- :func:`hdbscan_labels` and :func:`majority_cluster`: HDBSCAN
  (``sklearn.cluster.HDBSCAN``) on a precomputed distance matrix, as FLAME,
  FreqFed and DeepSight use it.

The point sets here are small (one point per client, a few dimensions), so
the loops run over clusters and iterations, never over points or pairs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _kmeanspp(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``(b, k, p)`` k-means++ seeds for ``b`` point sets ``x`` of shape ``(b, m, p)``."""
    b, m, _ = x.shape
    first = torch.randint(m, (b,), generator=generator)
    centres = [x[torch.arange(b), first]]
    d2 = (x - centres[0][:, None, :]).square().sum(-1)
    for _ in range(1, k):
        w = d2.clamp_min(0.0)
        w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))  # all points on the seeds: uniform
        pick = torch.multinomial(w, 1, generator=generator)[:, 0]
        c = x[torch.arange(b), pick]
        centres.append(c)
        d2 = torch.minimum(d2, (x - c[:, None, :]).square().sum(-1))
    return torch.stack(centres, dim=1)


def kmeans(x: Tensor, k: int, *, generator: torch.Generator, n_init: int = 10,
           max_iter: int = 100) -> tuple[Tensor, Tensor, Tensor]:
    """Best of ``n_init`` k-means runs on each of a batch of point sets.

    Parameters
    ----------
    x:
        ``(b, m, p)`` float64 points (or ``(m, p)`` for one set).
    k:
        Clusters, ``1 <= k <= m``.
    generator:
        CPU generator for the k-means++ seeds.

    Returns
    -------
    labels, centres, inertia:
        ``(b, m)`` int64 cluster of each point, ``(b, k, p)`` centres and
        ``(b,)`` within-cluster sums of squared distances (the leading batch
        dimension dropped for a single set).

    Example
    -------
    >>> pts = torch.tensor([[0.0], [0.1], [5.0], [5.1]], dtype=torch.float64)
    >>> labels, _, inertia = kmeans(pts, 2, generator=torch.Generator().manual_seed(0))
    >>> bool(labels[0] == labels[1]) and bool(labels[2] == labels[3]) and bool(labels[0] != labels[2])
    True
    """
    single = x.dim() == 2
    xs = (x[None] if single else x).to(torch.float64)
    b, m, _ = xs.shape
    if not 1 <= k <= m:
        raise ValueError(f"kmeans: expected 1 <= k <= {m} points, got k={k}")
    rep = xs.repeat_interleave(n_init, dim=0)  # (b * n_init, m, p)
    centres = _kmeanspp(rep, k, generator)
    labels = torch.zeros(rep.shape[:2], dtype=torch.int64)
    for it in range(max_iter):
        d2 = (rep[:, :, None, :] - centres[:, None, :, :]).square().sum(-1)  # (B, m, k)
        new = d2.argmin(-1)
        if it > 0 and torch.equal(new, labels):
            break
        labels = new
        onehot = torch.nn.functional.one_hot(labels, k).to(rep.dtype)  # (B, m, k)
        counts = onehot.sum(1)  # (B, k)
        sums = onehot.transpose(1, 2) @ rep  # (B, k, p)
        centres = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1.0)[..., None], centres)
    d2 = (rep[:, :, None, :] - centres[:, None, :, :]).square().sum(-1)
    labels = d2.argmin(-1)
    inertia = d2.min(-1).values.sum(-1).view(b, n_init)
    best = inertia.argmin(1) + torch.arange(b) * n_init
    out = labels[best], centres[best], inertia.min(1).values
    return (out[0][0], out[1][0], out[2][0]) if single else out


def minmax_scale(x: Tensor) -> Tensor:
    """``(m, p)`` each column rescaled to ``[0, 1]`` (a constant column becomes 0)."""
    lo, hi = x.min(0).values, x.max(0).values
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))


#: Relative spread below which :func:`gap_statistic` takes points as equal (float64 rounding is ~1e-16).
EQUAL_RTOL = 1e-9


def gap_statistic(x: Tensor, *, generator: torch.Generator, k_max: int = 10, refs: int = 20,
                  n_init: int = 10) -> int:
    """The number of clusters in ``(m, p)`` points by the gap statistic.

    The points are min-max scaled to the unit cube; for each :math:`k` the
    gap is

    .. math:: \\mathrm{Gap}(k) = \\frac{1}{B} \\sum_{b=1}^{B} \\log W^{*}_{kb} - \\log W_k

    with :math:`W_k` the k-means inertia of the points and :math:`W^{*}_{kb}`
    that of :math:`B` = ``refs`` uniform reference sets of the same size;
    :math:`s_k = \\mathrm{sd}_b(\\log W^{*}_{kb}) \\sqrt{1 + 1/B}`. The answer is
    the smallest :math:`k` with :math:`\\mathrm{Gap}(k) \\ge \\mathrm{Gap}(k+1) - s_{k+1}`
    (``k_max`` if none), Tibshirani, Walther & Hastie 2001, 'Estimating the
    number of clusters in a data set via the gap statistic'. Fewer than three
    points, or points that are all equal, are one cluster; so are points
    whose spread in every coordinate is within ``EQUAL_RTOL`` of their
    magnitude: the min-max scaling would otherwise blow rounding noise up to
    the unit cube and find clusters in it.
    """
    m = x.shape[0]
    x64 = x.to(torch.float64)
    k_max = min(k_max, m)
    if m < 3:
        return 1
    span = x64.max(0).values - x64.min(0).values
    if not bool((span > EQUAL_RTOL * x64.abs().max(0).values).any()):
        return 1
    xs = minmax_scale(x64)
    ref = torch.rand(refs, m, xs.shape[1], generator=generator, dtype=torch.float64)
    tiny = 1e-12
    gaps, sds = [], []
    for k in range(1, k_max + 1):
        w = kmeans(xs, k, generator=generator, n_init=n_init)[2]
        wr = kmeans(ref, k, generator=generator, n_init=n_init)[2]
        logs = torch.log(wr + tiny)
        gaps.append(float(logs.mean() - torch.log(w + tiny)))
        sds.append(float(logs.std(unbiased=False)) * math.sqrt(1.0 + 1.0 / refs))
    for k in range(1, k_max):
        if gaps[k - 1] >= gaps[k] - sds[k]:
            return k
    return k_max


def hdbscan_labels(dist: Tensor, *, min_cluster_size: int, min_samples: int | None = None,
                   allow_single_cluster: bool = False) -> np.ndarray:
    """HDBSCAN labels (``-1`` for noise) of ``n`` points from their ``(n, n)`` distance matrix.

    The matrix is symmetrised, clipped at zero and given a zero diagonal;
    non-finite entries become the largest finite distance times two.
    """
    from sklearn.cluster import HDBSCAN  # imported on use: sklearn.cluster is slow to import

    d = dist.detach().to("cpu", torch.float64).numpy()
    d = np.clip((d + d.T) / 2.0, 0.0, None)
    finite = np.isfinite(d)
    if not finite.all():
        top = float(d[finite].max()) if finite.any() else 1.0
        d = np.where(finite, d, 2.0 * top + 1.0)
    np.fill_diagonal(d, 0.0)
    model = HDBSCAN(metric="precomputed", min_cluster_size=max(2, min_cluster_size), min_samples=min_samples,
                    allow_single_cluster=allow_single_cluster, copy=False)
    labels: np.ndarray = model.fit(d).labels_
    return labels


def majority_cluster(dist: Tensor) -> Tensor:
    """``(n,)`` bool: members of HDBSCAN's majority cluster on a distance matrix (none if there is none).

    HDBSCAN with ``min_cluster_size = n // 2 + 1``, ``min_samples = 1`` and a
    single cluster allowed, as FLAME (Nguyen et al. 2022) and FreqFed
    (Fereidooni et al. 2024) run it; with two rows or fewer every row is kept.
    """
    n = dist.shape[0]
    if n <= 2:
        return torch.ones(n, dtype=torch.bool, device=dist.device)
    labels = hdbscan_labels(dist, min_cluster_size=n // 2 + 1, min_samples=1, allow_single_cluster=True)
    kept = labels >= 0
    if kept.any():
        values, counts = np.unique(labels[kept], return_counts=True)
        best = values[np.argmax(counts)]
        kept = labels == best
        if kept.sum() < n // 2 + 1:
            kept = np.zeros(n, dtype=bool)
    return torch.from_numpy(kept).to(dist.device)
