"""RFLBAT (Wang et al. 2022): PCA of the updates, two-stage outlier filtering, k-means, cosine-based choice.

Reference: Yongkang Wang, Di-Hua Zhai, Yufeng Zhan and Yuanqing Xia,
"RFLBAT: A Robust Federated Learning Algorithm against Backdoor Attack",
arXiv:2201.03772, 2022.

1. **PCA.** The updates are projected on their first two principal
   components, :math:`p_i \\in \\mathbb{R}^2` (:func:`pca_scores`; computed
   from the centred Gram matrix, so no copy of the ``n x d`` matrix is made).
2. **First filter.** :math:`E_i = \\sum_j \\|p_i - p_j\\|`; rows with
   :math:`E_i \\le \\varepsilon_1 \\operatorname{med}_j E_j` pass
   (:math:`\\varepsilon_1` = ``defense.rflbat_eps1``, 10 in the paper).
3. **Clustering.** k-means on the passing points, :math:`k` chosen by the gap
   statistic (:func:`fedpoison.core.clustering.gap_statistic`, at most 9
   clusters, 5 reference sets).
4. **Cosine-based choice.** For each cluster of two or more rows, the median
   over its members of their mean cosine similarity to the cluster's members
   (self included); the cluster with the *smallest* value is kept: colluding
   backdoor updates point the same way, honest non-IID updates disagree more.
5. **Second filter.** Within the kept cluster, :math:`E_i` again over its
   points; rows with :math:`E_i \\le \\varepsilon_2 \\operatorname{med} E`
   pass (:math:`\\varepsilon_2` = ``defense.rflbat_eps2``, 4).
6. The passing rows are averaged with their sample weights (FedAvg).

Variant, as in the authors' released code (mirrored by BackFed): the
thresholds compare against the median of the summed distances, and "less than"
is taken as "at most" so that identical rows (median 0) all pass. Rows whose
Gram entries are not finite (NaN, Inf, overflowing values) are left out before
the PCA. ``scores`` are :math:`E_i / \\operatorname{med} E` of the first filter.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.clustering import gap_statistic, kmeans
from fedpoison.core.rows import gram
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.mean import weighted_mean
from fedpoison.defenses.registry import RULES


def pca_scores(g: Tensor, components: int = 2) -> Tensor:
    """``(n, c)`` principal-component scores of the rows whose ``(n, n)`` Gram matrix is ``g``.

    With :math:`J = I - \\frac{1}{n} 1 1^\\top` the centring matrix,
    :math:`J G J = U \\Lambda U^\\top` and the scores are
    :math:`U_{:, :c} \\Lambda_{:c}^{1/2}`, the projections :math:`(x_i - \\bar x)^\\top v_k`
    on the top right-singular vectors (up to each component's sign).
    """
    n = g.shape[0]
    g = g.to(torch.float64)
    centred = g - g.mean(0, keepdim=True) - g.mean(1, keepdim=True) + g.mean()
    vals, vecs = torch.linalg.eigh((centred + centred.T) / 2)
    order = torch.argsort(vals, descending=True)[: min(components, n)]
    out = vecs[:, order] * vals[order].clamp_min(0.0).sqrt()
    if out.shape[1] < components:
        out = torch.nn.functional.pad(out, (0, components - out.shape[1]))
    return out


def summed_distances(points: Tensor) -> Tensor:
    """``(m,)`` :math:`E_i = \\sum_j \\|p_i - p_j\\|` over a small point set."""
    return torch.cdist(points, points).sum(dim=1)


def median_cosine_per_cluster(cos: Tensor, labels: Tensor, k: int) -> Tensor:
    """``(k,)`` for each cluster: the median over members of their mean cosine to the members (``inf`` if < 2)."""
    onehot = torch.nn.functional.one_hot(labels, k).to(cos.dtype)  # (m, k)
    sizes = onehot.sum(0)
    mean_to_own = (cos @ onehot).gather(1, labels[:, None])[:, 0] / sizes[labels]
    out = torch.full((k,), float("inf"), dtype=cos.dtype)
    for c in range(k):  # k <= 9 clusters
        members = labels == c
        if int(members.sum()) >= 2:
            out[c] = mean_to_own[members].median()
    return out


def rflbat_select(g: Tensor, *, eps1: float, eps2: float, generator: torch.Generator) -> tuple[Tensor, Tensor, int]:
    """``(selected, first-stage score E/med E, clusters)`` for rows of finite Gram matrix ``g`` (CPU, float64)."""
    n = g.shape[0]
    pts = pca_scores(g)
    e = summed_distances(pts)
    med = e.median()
    score = e / med if bool(med > 0) else torch.zeros_like(e)
    stage1 = e <= eps1 * med
    idx = torch.nonzero(stage1)[:, 0]
    if idx.numel() < 3:
        return stage1, score, 1
    sub = pts[idx]
    k = gap_statistic(sub, generator=generator, k_max=9, refs=5)
    labels = kmeans(sub, k, generator=generator)[0] if k > 1 else torch.zeros(idx.numel(), dtype=torch.int64)
    sq = torch.diagonal(g).clamp_min(0.0).sqrt()
    denom = sq[:, None] * sq[None, :]
    cos = torch.where(denom > 0, g / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    cluster_cos = median_cosine_per_cluster(cos[idx][:, idx], labels, k)
    best = int(torch.argmin(cluster_cos)) if bool(torch.isfinite(cluster_cos).any()) else int(labels[0])
    chosen = idx[labels == best]
    e2 = summed_distances(pts[chosen])
    final = chosen[e2 <= eps2 * e2.median()]
    selected = torch.zeros(n, dtype=torch.bool)
    selected[final] = True
    return selected, score, k


class RFLBATParams(BaseModel):
    """Parameters of ``rflbat``."""

    model_config = ConfigDict(extra="forbid")
    #: epsilon_1 of the first filter (summed PCA distances at most eps1 x their median).
    rflbat_eps1: float = Field(10.0, gt=0.0)
    #: epsilon_2 of the second filter, within the kept cluster.
    rflbat_eps2: float = Field(4.0, gt=0.0)


@RULES.register(
    "rflbat",
    tags=("stochastic",),
    description="RFLBAT: 2-D PCA of the updates, summed-distance filters (eps1, eps2), gap-statistic k-means, "
    "keep the cluster of lowest median cosine; FedAvg of the rest.",
    params=RFLBATParams,
    reference="Wang, Zhai, Zhan & Xia 2022, RFLBAT: A Robust Federated Learning Algorithm against Backdoor Attack "
    "(arXiv:2201.03772).",
    variant="PCA to 2 components; eps1 = 10, eps2 = 4 against the median summed distance; gap statistic "
    "(k <= 9, 5 references); cluster with the smallest median mean-cosine kept",
    requires="none on n and f (the kept cluster may be any size)",
    filters=True,
)
class RFLBAT:
    """RFLBAT's PCA, two filters and cluster choice, then FedAvg of the kept rows."""

    def __init__(self, params: RFLBATParams | None = None, *, f: int = 0) -> None:
        p = params or RFLBATParams()
        self.eps1, self.eps2 = p.rflbat_eps1, p.rflbat_eps2
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the module docstring)."""
        n, d = updates.shape
        dev = updates.device
        g_all = gram(updates).to("cpu", torch.float64)
        ok = torch.isfinite(torch.diagonal(g_all)) & torch.isfinite(g_all).all(dim=1)
        idx = torch.nonzero(ok)[:, 0]
        selected = torch.zeros(n, dtype=torch.bool)
        scores = torch.full((n,), float("inf"), dtype=torch.float64)
        clusters = 0
        if idx.numel():
            sel, sc, clusters = rflbat_select(g_all[idx][:, idx], eps1=self.eps1, eps2=self.eps2,
                                              generator=ctx.generator)
            selected[idx[sel]] = True
            scores[idx] = sc
        info = {"kept": float(selected.sum()), "clusters": float(clusters)}
        selected = selected.to(dev)
        w = torch.zeros(n, dtype=updates.dtype, device=dev)
        if not bool(selected.any()):
            info["no_rows"] = 1.0
            return AggregationResult(torch.zeros(d, dtype=updates.dtype, device=dev), w, selected,
                                     scores.to(dev, updates.dtype), 0, info)
        agg, w_kept = weighted_mean(updates[selected], weights[selected])
        w[selected] = w_kept
        return AggregationResult(agg, w, selected, scores.to(dev, updates.dtype), 0, info)
