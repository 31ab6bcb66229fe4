"""AlignIns: direction alignment inspection, then clipping to the median norm.

Reference: Jiahao Xu, Zikai Zhang and Rui Hu, "Detecting Backdoor Attacks in
Federated Learning via Direction Alignment Inspection", CVPR 2025
(arXiv:2503.07978), Algorithm 1.

Each row :math:`u_i` gets two alignment statistics:

- TDA, the temporal direction alignment: its cosine with the reference
  direction :math:`r` (the current global model :math:`\\theta_t`, as in the
  paper and its code; ``defense.alignins_reference: median`` uses this round's
  coordinate-wise median update instead),

  .. math:: \\mathrm{TDA}_i = \\cos(u_i, r);

- MPSA, the masked principal sign alignment: over the
  :math:`k = \\lfloor \\rho d \\rfloor` coordinates of largest magnitude of
  :math:`u_i` (``defense.alignins_sparsity`` :math:`\\rho`), the share whose sign
  equals the principal sign :math:`p = \\operatorname{sgn}\\sum_j \\operatorname{sgn}(u_j)`,

  .. math:: \\mathrm{MPSA}_i = \\frac{1}{k} \\sum_{c \\in \\mathrm{top}_k(|u_i|)} [\\operatorname{sgn}(u_{ic}) = p_c].

Both become median-centred z-scores (the paper's MZ-score,
:math:`|x_i - \\mathrm{med}(x)| / \\sigma(x)` with the population standard
deviation; :func:`~fedpoison.core.rows.median_std_scores`). A row is kept when
its MPSA score is below :math:`\\lambda_s` and its TDA score below
:math:`\\lambda_c` (both 1.0 by default, as in the authors' code). The kept rows
are clipped to their median norm and averaged with their sample weights. When no
row is kept the aggregate is zero (the model does not move), as in the authors'
code, and ``info["alignins_none_kept"] = 1``.

Variant notes: the top-k mask keeps every coordinate tied with the k-th
largest magnitude (exactly ``k`` for distinct magnitudes); the median norm of
an even number of rows is the mean of the middle two. ``scores`` are
:math:`\\max(\\mathrm{MZ}_{MPSA}/\\lambda_s, \\mathrm{MZ}_{TDA}/\\lambda_c)`: a row is
dropped exactly when its score is at least 1. Rows holding NaN or Inf are never
kept.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.order_statistics import coordinate_median
from fedpoison.core.rows import (
    clip_factors,
    cosine_to,
    finite_rows,
    median_std_scores,
    norm_quantile,
    row_norms,
    top_magnitude_mask,
)
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES


def principal_signs(x: Tensor) -> Tensor:
    """``(d,)`` the sign of the column sums of the rows' signs: each coordinate's majority sign (0 on a tie)."""
    return torch.sign((x > 0).sum(dim=0) - (x < 0).sum(dim=0)).to(x.dtype)  # boolean temporaries only


def masked_principal_sign_alignment(x: Tensor, sparsity: float) -> Tensor:
    """``(n,)`` MPSA: share of each row's top-``floor(sparsity d)`` coordinates whose sign is the principal sign."""
    d = x.shape[1]
    k = max(1, math.floor(sparsity * d + 1e-9))
    mask = top_magnitude_mask(x, k)
    p = principal_signs(x)
    agree = (((x > 0) & (p > 0)) | ((x < 0) & (p < 0)) | ((x == 0) & (p == 0))) & mask
    return agree.sum(dim=1).to(x.dtype) / mask.sum(dim=1).clamp_min(1).to(x.dtype)


def alignins_statistics(x: Tensor, reference: Tensor, sparsity: float) -> tuple[Tensor, Tensor]:
    """``(tda, mpsa)``, each ``(n,)``: cosine to ``reference`` and masked principal sign alignment."""
    return cosine_to(x, reference), masked_principal_sign_alignment(x, sparsity)


class AlignInsParams(BaseModel):
    """Parameters of ``alignins``."""

    model_config = ConfigDict(extra="forbid")
    #: rho: share of each update's coordinates (largest magnitudes) whose signs MPSA inspects.
    alignins_sparsity: float = Field(0.3, gt=0.0, le=1.0)
    #: lambda_s: rows whose MPSA MZ-score reaches it are dropped.
    alignins_lambda_s: float = Field(1.0, gt=0.0)
    #: lambda_c: rows whose TDA MZ-score reaches it are dropped.
    alignins_lambda_c: float = Field(1.0, gt=0.0)
    #: TDA's reference direction: the global model (the paper), or this round's coordinate-wise median update.
    alignins_reference: Literal["global_model", "median"] = "global_model"


@RULES.register(
    "alignins",
    description="AlignIns: drop rows whose cosine to the global model (TDA) or top-k sign agreement with the "
    "majority (MPSA) is a median/std outlier; clip the rest to their median norm and average.",
    params=AlignInsParams,
    reference="Xu, Zhang & Hu 2025, Detecting Backdoor Attacks in Federated Learning via Direction Alignment "
    "Inspection (CVPR).",
    variant="TDA against the global model (or the median update), MPSA on the top 30% magnitudes, MZ-scores "
    "with lambda_s = lambda_c = 1, post-filtering clipping to the median norm; no row kept gives a zero step",
    requires="none on n and f",
    filters=True,
)
class AlignIns:
    """Filter by TDA and MPSA MZ-scores, clip the kept rows to their median norm, average them."""

    def __init__(self, params: AlignInsParams | None = None, *, f: int = 0) -> None:
        self.params = params or AlignInsParams()
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the module docstring)."""
        p = self.params
        n, d = updates.shape
        finite = finite_rows(updates)
        x = updates if bool(finite.all()) else torch.where(finite[:, None], updates, torch.zeros_like(updates))
        if p.alignins_reference == "global_model":
            ref = ctx.global_params.to(x.device, x.dtype)
        else:
            ref = coordinate_median(x[finite]) if bool(finite.any()) else torch.zeros_like(x[0])
        tda, mpsa = alignins_statistics(x, ref, p.alignins_sparsity)
        tda = torch.where(finite, tda, torch.full_like(tda, float("nan")))
        mpsa = torch.where(finite, mpsa, torch.full_like(mpsa, float("nan")))
        z_s, z_c = median_std_scores(mpsa), median_std_scores(tda)
        scores = torch.maximum(z_s / p.alignins_lambda_s, z_c / p.alignins_lambda_c)
        kept = (z_s < p.alignins_lambda_s) & (z_c < p.alignins_lambda_c) & finite
        info = {"alignins_kept": float(kept.sum())}
        if not bool(kept.any()):
            info["alignins_none_kept"] = 1.0
            zero = torch.zeros(d, dtype=updates.dtype, device=updates.device)
            return AggregationResult(zero, torch.zeros(n, dtype=updates.dtype, device=updates.device), kept,
                                     scores.to(updates.dtype), 0, info)
        norms = row_norms(x)
        bound = norm_quantile(norms[kept], 0.5)
        factors = torch.where(kept, clip_factors(norms, bound), torch.zeros_like(norms))
        w = torch.where(kept, weights.to(x.dtype), torch.zeros_like(norms))
        w = w / w.sum() if bool(w.sum() > 0) else kept.to(x.dtype) / kept.sum()
        agg = (w * factors) @ x
        clipped = int((kept & (factors < 1.0)).sum())
        info["alignins_clip_bound"] = float(bound)
        return AggregationResult(agg, w, kept, scores.to(updates.dtype), clipped, info)
