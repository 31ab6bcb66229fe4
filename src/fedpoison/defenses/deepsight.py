"""DeepSight (Rieger et al., NDSS 2022): inspect the output layer and outputs, cluster, label clusters, clip.

Reference: Phillip Rieger, Thien Duc Nguyen, Markus Miettinen and Ahmad-Reza
Sadeghi, "DeepSight: Mitigating Backdoor Attacks in Federated Learning Through
Deep Model Inspection", NDSS 2022, Algorithm 1.

For each update :math:`u_i` (local minus global model), with the output layer's
weight update :math:`\\Delta W_i \\in \\mathbb{R}^{P \\times F}` and bias update
:math:`\\Delta b_i \\in \\mathbb{R}^P` (:math:`P` output neurons, the last two
parameter tensors of the model):

- **NEUPs** (normalised energy updates, :func:`neups`):
  :math:`\\varepsilon_{i,k} = |\\Delta b_{i,k}| + \\sum_j |\\Delta W_{i,kj}|` and
  :math:`c_{i,k} = \\varepsilon_{i,k}^2 / \\sum_l \\varepsilon_{i,l}^2`;
- **threshold exceedings** (:func:`threshold_exceedings`):
  :math:`TE_i = \\#\\{k : c_{i,k} > \\max(0.01, 1/P) \\max_l c_{i,l}\\}`. A model
  trained on few labels (a backdoor's target class dominates) has few; the
  model is labelled *suspicious* when :math:`TE_i \\le \\operatorname{med}_j TE_j / 2`;
- **DDifs** (division differences, :func:`ddifs`): for ``defense.ds_seeds``
  sets of ``defense.ds_samples`` random inputs :math:`x \\sim U[0, 1)` (fixed
  seeds 0, 1, ...), :math:`DDif_{i,k} = \\frac{1}{N} \\sum_x p_i(x)_k / p_G(x)_k`,
  the ratio of the local and global models' softmax outputs;
- the cosine distances of the bias updates :math:`\\Delta b_i`.

**Clustering** (ensemble): HDBSCAN (``min_samples = 3``) separately on the
cosine distances, on the NEUPs and on each seed's DDifs; each clustering gives
a 0/1 distance (0 for two models in the same cluster); the DDif distances are
averaged over seeds, and the mean of the three families' distances is
clustered once more by HDBSCAN (a single cluster allowed). A cluster is
accepted when its share of suspicious models is below :math:`\\tau`
(``defense.ds_tau``, 1/3); a model HDBSCAN leaves as noise is its own cluster
(accepted when not suspicious). **Clipping**: accepted updates are scaled to
at most the median L2 norm of all updates, then averaged (plain mean, as in
the authors' algorithm).

Threat model: the DDifs need the model's forward pass (``ctx.model``, the
server's copy of the architecture) on *random noise*, no data of the server
or the clients. Where a round has no model probe (a bare update matrix, a
Flower strategy given none), the ensemble runs on the cosine and NEUP
clusterings only and ``info["ddifs"]`` is 0. Variant: HDBSCAN is
``sklearn.cluster.HDBSCAN`` with ``min_cluster_size = min(5, n)``,
``min_samples = min(3, n)``, as the public re-implementations run the
``hdbscan`` package; rows with non-finite features are rejected. ``scores``
are :math:`-TE_i` (fewer exceedings, more suspicious).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.clustering import hdbscan_labels
from fedpoison.core.rows import clip_factors, cosine_similarity_matrix, norm_quantile, row_norms
from fedpoison.defenses.base import AggregationResult, ModelProbe, ParamSlice, RoundContext
from fedpoison.defenses.registry import RULES
from fedpoison.errors import AggregationError


def output_layer(slices: tuple[ParamSlice, ...]) -> tuple[ParamSlice, ParamSlice]:
    """``(weight, bias)``: the last two parameter tensors, a bias of ``P`` entries and a weight of ``P x F``."""
    if len(slices) < 2:
        raise AggregationError(f"deepsight: needs the model's parameter layout (ctx.slices) to find its output "
                               f"layer, got {len(slices)} slice(s)")
    weight, bias = slices[-2], slices[-1]
    p = bias.end - bias.start
    if p < 1 or (weight.end - weight.start) % p:
        raise AggregationError(f"deepsight: expected the last two parameters to be an output layer's weight "
                               f"(P x F) and bias (P), got {weight.name} {weight.shape} and {bias.name} {bias.shape}")
    return weight, bias


def neups(weight_update: Tensor, bias_update: Tensor) -> Tensor:
    """``(n, P)`` normalised energy updates from ``(n, P, F)`` weight and ``(n, P)`` bias updates.

    A row with no energy at all gets ``1/P`` everywhere.
    """
    energy = bias_update.abs() + weight_update.abs().sum(dim=2)
    sq = energy.to(torch.float64).square()
    total = sq.sum(dim=1, keepdim=True)
    p = sq.shape[1]
    return torch.where(total > 0, sq / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.full_like(sq, 1.0 / p))


def threshold_exceedings(neup: Tensor, factor: float = 0.01) -> Tensor:
    """``(n,)`` how many NEUPs of each row exceed ``max(factor, 1/P)`` times the row's largest."""
    p = neup.shape[1]
    bound = max(factor, 1.0 / p) * neup.max(dim=1, keepdim=True).values
    return (neup > bound).sum(dim=1)


def suspicious_labels(te: Tensor) -> Tensor:
    """``(n,)`` bool: rows with at most half the median number of threshold exceedings."""
    return te.to(torch.float64) <= te.to(torch.float64).median() / 2.0


@torch.no_grad()
def ddifs(probe: ModelProbe, global_params: Tensor, updates: Tensor, *, seeds: int, samples: int) -> Tensor:
    """``(seeds, n, P)`` division differences on ``samples`` uniform random inputs per seed (seeds 0, 1, ...)."""
    n = updates.shape[0]
    out = torch.zeros(seeds, n, probe.num_classes, dtype=torch.float64)
    for s in range(seeds):
        x = torch.rand(samples, *probe.input_shape, generator=torch.Generator().manual_seed(s))
        p_global = torch.softmax(probe.logits(global_params, x).to(torch.float64), dim=1).cpu()
        for i in range(n):  # one forward pass per client model
            p_local = torch.softmax(probe.logits(global_params + updates[i], x).to(torch.float64), dim=1).cpu()
            out[s, i] = (p_local / (p_global + 1e-30)).mean(dim=0)
    return out


def same_cluster_distances(labels: np.ndarray) -> Tensor:
    """``(n, n)`` 0 for two rows in the same cluster, 1 otherwise (noise, ``-1``, is alone)."""
    lab = torch.from_numpy(labels)
    same = (lab[:, None] == lab[None, :]) & (lab[:, None] >= 0)
    dist = (~same).to(torch.float64)
    dist.fill_diagonal_(0.0)
    return dist


def _cluster(dist: Tensor, *, single: bool = False) -> np.ndarray:
    n = dist.shape[0]
    if n < 3:
        return np.zeros(n, dtype=np.int64)
    return hdbscan_labels(dist, min_cluster_size=min(5, n), min_samples=min(3, n), allow_single_cluster=single)


def accepted_by_clusters(labels: np.ndarray, suspicious: Tensor, tau: float) -> Tensor:
    """``(n,)`` bool: members of clusters whose share of suspicious rows is below ``tau``; noise alone."""
    lab = torch.from_numpy(labels).long()
    n = lab.shape[0]
    lab = torch.where(lab >= 0, lab, lab.max().clamp_min(-1) + 1 + torch.arange(n))  # noise: own cluster each
    k = int(lab.max()) + 1 if n else 0
    onehot = torch.nn.functional.one_hot(lab, k).to(torch.float64)
    share = (suspicious.to(torch.float64) @ onehot) / onehot.sum(0).clamp_min(1.0)
    return share[lab] < tau


class DeepSightParams(BaseModel):
    """Parameters of ``deepsight``."""

    model_config = ConfigDict(extra="forbid")
    #: tau: a cluster is accepted when its share of suspicious models is below it.
    ds_tau: float = Field(1.0 / 3.0, gt=0.0, le=1.0)
    #: Seeds of random-input sets for the DDifs.
    ds_seeds: int = Field(3, ge=1)
    #: Random inputs per seed.
    ds_samples: int = Field(20000, ge=1)
    #: NEUP threshold factor (the threshold is max(factor, 1/P) times the largest NEUP).
    ds_threshold_factor: float = Field(0.01, gt=0.0, le=1.0)


@RULES.register(
    "deepsight",
    tags=("changes_scale",),
    description="DeepSight: label models by NEUP threshold exceedings, ensemble-cluster (DDifs on random inputs, "
    "NEUPs, bias cosine), accept clusters with < tau suspicious, clip to the median norm.",
    params=DeepSightParams,
    reference="Rieger, Nguyen, Miettinen & Sadeghi 2022, DeepSight: Mitigating Backdoor Attacks in Federated "
    "Learning Through Deep Model Inspection (NDSS).",
    variant="tau = 1/3, 3 seeds x 20,000 uniform-noise inputs, factor 0.01; sklearn HDBSCAN (min_samples 3); "
    "noise points are their own cluster; plain mean of the clipped accepted updates",
    requires="none on n and f (needs the output layer: the last two parameters)",
    filters=True,
)
class DeepSight:
    """DeepSight's classification, ensemble clustering, cluster labelling and clipping."""

    def __init__(self, params: DeepSightParams | None = None, *, f: int = 0) -> None:
        self.params = params or DeepSightParams()
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the module docstring)."""
        n, d = updates.shape
        dev = updates.device
        p = self.params
        w_sl, b_sl = output_layer(ctx.slices)
        classes = b_sl.end - b_sl.start
        w_up = updates[:, w_sl.start:w_sl.end].reshape(n, classes, -1)
        b_up = updates[:, b_sl.start:b_sl.end]
        neup = neups(w_up, b_up).cpu()
        te = threshold_exceedings(neup, p.ds_threshold_factor)
        finite = torch.isfinite(updates).all(dim=1).cpu() & torch.isfinite(neup).all(dim=1)
        finite &= torch.isfinite(row_norms(updates)).cpu()
        suspicious = suspicious_labels(te[finite]) if bool(finite.any()) else torch.zeros(0, dtype=torch.bool)
        sus = torch.ones(n, dtype=torch.bool)
        sus[finite] = suspicious
        idx = torch.nonzero(finite)[:, 0]
        m = idx.numel()
        dists = []
        cos = 1.0 - cosine_similarity_matrix(b_up[idx.to(dev)].to(torch.float64)).cpu()
        dists.append(same_cluster_distances(_cluster(cos)))
        dists.append(same_cluster_distances(_cluster(torch.cdist(neup[idx], neup[idx]))))
        use_ddifs = ctx.model is not None and m > 0
        if use_ddifs and ctx.model is not None:
            dd = ddifs(ctx.model, ctx.global_params.to(dev), updates[idx.to(dev)], seeds=p.ds_seeds,
                       samples=p.ds_samples)
            ok = torch.isfinite(dd).all(dim=(0, 2))
            dd = torch.nan_to_num(dd, nan=0.0, posinf=0.0, neginf=0.0)
            per_seed = [same_cluster_distances(_cluster(torch.cdist(dd[s], dd[s]))) for s in range(p.ds_seeds)]
            ddist = torch.stack(per_seed).mean(0)
            ddist = torch.where(ok[:, None] & ok[None, :], ddist, torch.ones_like(ddist))
            ddist.fill_diagonal_(0.0)
            dists.append(ddist)
        merged = torch.stack(dists).mean(0)
        labels = _cluster(merged, single=True)
        accepted = torch.zeros(n, dtype=torch.bool)
        if m:
            accepted[idx] = accepted_by_clusters(labels, suspicious, p.ds_tau)
        norms = row_norms(updates)
        bound = norm_quantile(norms[finite.to(dev)], 0.5) if m else norms.new_tensor(0.0)
        kept = accepted.to(dev)
        n_kept = int(kept.sum())
        info = {"kept": float(n_kept), "suspicious": float(sus.sum()), "clusters": float(len(set(labels.tolist()) - {-1})),
                "clip_bound": float(bound), "ddifs": float(use_ddifs)}
        scores = (-te).to(dev, updates.dtype)
        if n_kept == 0:
            info["none_accepted"] = 1.0
            zero = torch.zeros(d, dtype=updates.dtype, device=dev)
            return AggregationResult(zero, torch.zeros(n, dtype=updates.dtype, device=dev), kept, scores, 0, info)
        factors = clip_factors(norms, bound)
        w = kept.to(updates.dtype) / n_kept
        agg = (w * factors)[kept] @ updates[kept]
        clipped = int(((norms > bound) & kept).sum())
        return AggregationResult(agg, w, kept, scores, clipped, info)
