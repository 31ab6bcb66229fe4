"""LASA: layer-adaptive sparsified model aggregation.

Reference: Jiahao Xu, Zikai Zhang and Rui Hu, "Achieving Byzantine-Resilient
Federated Learning via Layer-Adaptive Sparsified Model Aggregation", WACV 2025
(arXiv:2409.01435), Algorithm 1; the authors' code (``lasa.py``) settles the
details below.

1. **Clip** every row to the median row norm.
2. **Sparsify** every row before aggregation: keep the
   :math:`k = \\lfloor (1 - s) D \\rfloor` entries of largest magnitude among its
   :math:`D` weight entries (parameter tensors with two or more dimensions:
   convolution kernels and matrices; biases and normalisation parameters stay
   dense, as in the authors' mask) and zero the others. ``defense.lasa_sparsity``
   is :math:`s` (0.3). ``defense.lasa_scope: model`` takes one top-k over all
   weight tensors of the row (the authors' code); ``layer`` takes it per tensor.
3. **Filter layer by layer.** For each parameter tensor :math:`l` (from
   ``ctx.slices``) and each sparsified row :math:`\\tilde u_i`, the layer's norm
   :math:`\\|\\tilde u_i^l\\|` and its positive direction purity

   .. math:: \\mathrm{PDP}_i^l = \\frac12 \\Bigl(1 + \\frac{\\sum_c \\operatorname{sgn}(\\tilde u^l_{ic})}
                                              {\\sum_c |\\operatorname{sgn}(\\tilde u^l_{ic})|}\\Bigr)

   become median-centred z-scores (:func:`~fedpoison.core.rows.median_std_scores`).
   A row is benign in layer :math:`l` when its norm score is below
   :math:`\\lambda_n` and its PDP score below :math:`\\lambda_s`
   (``defense.lasa_lambda_n`` = 2, the authors' value off CIFAR;
   ``defense.lasa_lambda_s`` = 1). When no row is benign in a layer, every
   finite row is.
4. **Aggregate layer by layer**: layer :math:`l` of the aggregate is the plain
   mean of the benign rows' clipped, sparsified layer :math:`l` (the authors'
   mean ignores sample counts; so does this rule).

Reported per row: ``weights`` is its share of the aggregate, each layer counted
by its number of parameters (:math:`\\sum_l \\frac{d_l}{d} [i \\in B_l] / |B_l|`);
``selected`` is True when the row was benign in more than half of the layers
(the rule's verdict for detection metrics); ``scores`` is the share of layers
that filtered it out. Rows holding NaN or Inf are never used (the authors drop
NaN rows first). Without ``ctx.slices`` the whole row is one weight layer.

Deviations: the authors' mask keeps entries strictly above the k-th largest
magnitude (so ``k - 1`` of them); here exactly ``k`` (every entry tied with the
k-th is kept). The authors' PDP is multiplied by :math:`(1 - s)`, a constant
that the z-score cancels, so it is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.rows import (
    clip_factors,
    finite_rows,
    median_std_scores,
    norm_quantile,
    row_norms,
    top_k_mask,
)
from fedpoison.core.slices import ParamSlice
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES


def weight_layers(slices: Sequence[ParamSlice], d: int) -> tuple[ParamSlice, ...]:
    """The slices LASA sparsifies: tensors with two or more dimensions (the whole row without slices)."""
    if not slices:
        return (ParamSlice("all", 0, d, (d,)),)
    return tuple(s for s in slices if len(s.shape) >= 2)


def sparsify_rows(x: Tensor, keep: float, layers: Sequence[ParamSlice], *, scope: str = "model") -> Tensor:
    """A copy of ``x`` keeping, per row, the ``floor(keep * D)`` largest magnitudes of the ``layers`` entries.

    ``scope="model"``: ``D`` counts the entries of all ``layers`` together (one
    top-k per row); ``"layer"``: one top-k per layer. Entries outside
    ``layers`` stay as they are; entries tied with the k-th largest magnitude
    are kept. Holds the copy and one boolean mask (:func:`~fedpoison.core.rows.top_k_mask`).
    """
    d = x.shape[1]
    if scope == "layer":
        out = x.clone()
        for s in layers:
            part = out[:, s.start:s.end]
            part.masked_fill_(~top_k_mask(part, math.floor(keep * (s.end - s.start) + 1e-9), absolute=True), 0.0)
        return out
    dense = torch.ones(d, dtype=torch.bool, device=x.device)
    for s in layers:
        dense[s.start:s.end] = False
    total = d - int(dense.sum())
    # masked_fill, not x * mask: multiplying by a bool mask first makes a float copy of it
    return x.masked_fill(~top_k_mask(x, math.floor(keep * total + 1e-9), absolute=True, always=dense), 0.0)


def positive_direction_purity(layer: Tensor) -> Tensor:
    """``(n,)`` PDP: share of positive signs among the non-zero entries of each row (0.5 for an all-zero row)."""
    pos = (layer > 0).sum(dim=1).to(torch.float64)  # boolean temporaries only: no float copy of the layer
    neg = (layer < 0).sum(dim=1).to(torch.float64)
    nonzero = pos + neg
    ratio = torch.where(nonzero > 0, (pos - neg) / nonzero.clamp_min(1), torch.zeros_like(nonzero))
    return (0.5 * (1.0 + ratio)).to(layer.dtype)


def layer_benign(layer: Tensor, finite: Tensor, lambda_n: float, lambda_s: float) -> Tensor:
    """``(n,)`` bool: finite rows whose layer norm and PDP MZ-scores are below ``lambda_n`` and ``lambda_s``."""
    nan = torch.full((layer.shape[0],), float("nan"), dtype=torch.float64, device=layer.device)
    norms = torch.where(finite, row_norms(layer).to(torch.float64), nan)
    pdp = torch.where(finite, positive_direction_purity(layer).to(torch.float64), nan)
    ok = (median_std_scores(norms) < lambda_n) & (median_std_scores(pdp) < lambda_s) & finite
    return ok if bool(ok.any()) else finite


class LASAParams(BaseModel):
    """Parameters of ``lasa``."""

    model_config = ConfigDict(extra="forbid")
    #: s: share of each row's weight entries zeroed before aggregation (smallest magnitudes).
    lasa_sparsity: float = Field(0.3, ge=0.0, lt=1.0)
    #: lambda_n: rows whose layer-norm MZ-score reaches it are left out of that layer.
    lasa_lambda_n: float = Field(2.0, gt=0.0)
    #: lambda_s: rows whose layer PDP MZ-score reaches it are left out of that layer.
    lasa_lambda_s: float = Field(1.0, gt=0.0)
    #: model: one top-k over all weight tensors of a row (the authors' code); layer: one per tensor.
    lasa_scope: Literal["model", "layer"] = "model"


@RULES.register(
    "lasa",
    description="LASA: clip rows to the median norm, keep each row's top (1 - lasa_sparsity) weight magnitudes, "
    "then per layer average the rows whose layer norm and sign purity are not median/std outliers.",
    params=LASAParams,
    reference="Xu, Zhang & Hu 2025, Achieving Byzantine-Resilient Federated Learning via Layer-Adaptive "
    "Sparsified Model Aggregation (WACV).",
    variant="median-norm clipping, top-70% magnitude mask over weight tensors (model scope), layer-wise "
    "MZ-score filters lambda_n = 2, lambda_s = 1, unweighted layer means",
    requires="none on n and f",
    filters=True,
    quiet_params={"lasa_sparsity": 0.0},
)
class LASA:
    """Clip, sparsify, and filter layer by layer; average the benign rows of each layer."""

    def __init__(self, params: LASAParams | None = None, *, f: int = 0) -> None:
        self.params = params or LASAParams()
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the module docstring)."""
        p = self.params
        n, d = updates.shape
        finite = finite_rows(updates)
        dev, dtype = updates.device, updates.dtype
        if not bool(finite.any()):
            zero = torch.zeros(d, dtype=dtype, device=dev)
            return AggregationResult(zero, torch.zeros(n, dtype=dtype, device=dev), finite,
                                     info={"lasa_no_finite_rows": 1.0})
        x = updates if bool(finite.all()) else torch.where(finite[:, None], updates, torch.zeros_like(updates))
        norms = row_norms(x)
        factors = torch.where(finite, clip_factors(norms, norm_quantile(norms[finite], 0.5)), torch.zeros_like(norms))
        wl = weight_layers(ctx.slices, d)
        y = sparsify_rows(x, 1.0 - p.lasa_sparsity, wl, scope=p.lasa_scope)
        y.mul_(factors[:, None])  # clipping scales a row: its top-k entries stay the same
        layers = ctx.slices or (ParamSlice("all", 0, d, (d,)),)
        agg = torch.zeros(d, dtype=dtype, device=dev)
        share = torch.zeros(n, dtype=torch.float64, device=dev)
        kept_layers = torch.zeros(n, dtype=torch.float64, device=dev)
        for s in layers:
            layer = y[:, s.start:s.end]
            benign = layer_benign(layer, finite, p.lasa_lambda_n, p.lasa_lambda_s)
            count = int(benign.sum())
            agg[s.start:s.end] = (benign.to(dtype) / count) @ layer  # no gathered copy of the benign rows
            share += benign.to(torch.float64) * ((s.end - s.start) / d / count)
            kept_layers += benign.to(torch.float64)
        frac_kept = kept_layers / len(layers)
        selected = (frac_kept > 0.5) & finite
        clipped = int((finite & (factors < 1.0)).sum())
        info = {"lasa_rows_kept_mean": float(kept_layers.sum()) / len(layers)}
        return AggregationResult(agg, share.to(dtype), selected, (1.0 - frac_kept).to(dtype), clipped, info)
