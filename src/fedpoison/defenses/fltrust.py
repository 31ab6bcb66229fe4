"""FLTrust (Cao et al. 2021).

Reference: Xiaoyu Cao, Minghong Fang, Jia Liu and Neil Zhenqiang Gong,
"FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping",
NDSS 2021, Algorithm 1.

Variant, as in the paper: the server computes its own update :math:`g_0` on a
small root dataset (``defense.root_size`` samples drawn from the training
distribution; the round loop provides it as ``ctx.root_update(global_params)``).
Each client update gets the trust score
:math:`TS_i = \\mathrm{ReLU}(\\cos(g_i, g_0))`, is rescaled to the root update's
norm, and the aggregate is

.. math:: g = \\frac{\\sum_i TS_i \\, \\frac{\\|g_0\\|}{\\|g_i\\|} g_i}{\\sum_j TS_j}.

A zero row has trust 0. The paper leaves :math:`\\sum_j TS_j = 0` undefined
(every client points away from the root update); fedpoison then returns the
zero update (the model does not move) and records ``info["no_trust"] = 1``.
It never falls back to the mean.

Reported ``weights`` are the normalised trust scores :math:`TS_i / \\sum_j TS_j`
(each row is also rescaled by :math:`\\|g_0\\| / \\|g_i\\|`); ``scores`` are the
cosine distances :math:`1 - \\cos(g_i, g_0)` (higher is more suspicious);
``clipped`` counts rows scaled down (norm above the root update's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.rows import cosine_to, row_norms
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES
from fedpoison.errors import AggregationError


class FLTrustParams(BaseModel):
    """Parameters of ``fltrust``."""

    model_config = ConfigDict(extra="forbid")
    #: Samples in the server's root dataset, drawn from the training set by the round loop.
    root_size: int = Field(default=100, ge=1)


def fltrust_aggregate(x: Tensor, root: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """Return ``(aggregate, normalised trust, cosine, rows scaled down)`` for root update ``root``."""
    cos = cosine_to(x, root)
    trust = torch.relu(cos)
    norms = row_norms(x)
    root_norm = row_norms(root[None, :])[0]
    total = trust.sum()
    if not bool(total > 0):
        zero = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
        return zero, torch.zeros_like(trust), cos, 0
    w = trust / total
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    coef = w * (root_norm / safe)  # trust-weighted, rescaled to the root norm
    agg = coef @ x
    if not bool(torch.isfinite(agg).all()):
        # Huge rows: scale them down first (copy only in that case).
        agg = (w * root_norm) @ (x / safe[:, None])
    scaled_down = int(((norms > root_norm) & (trust > 0)).sum())
    return agg, w, cos, scaled_down


@RULES.register(
    "fltrust",
    tags=("needs_root_data", "changes_scale"),
    description="FLTrust: ReLU-cosine trust against the server's root update; rows rescaled to its norm.",
    params=FLTrustParams,
    reference="Cao et al. 2021, FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping.",
    requires="none on n and f (needs the server's root update each round)",
    filters=True,
)
class FLTrust:
    """FLTrust; needs ``ctx.root_update``."""

    def __init__(self, params: FLTrustParams | None = None, *, f: int = 0) -> None:
        self.params = params or FLTrustParams()
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        root_update = ctx.root_update
        if root_update is None:
            raise AggregationError(
                "fltrust: requires the server's root update (ctx.root_update, trained on "
                f"defense.root_size={self.params.root_size} samples), got None: the round loop must "
                "provide it for defense.name 'fltrust'"
            )
        if not callable(root_update):
            raise AggregationError(
                f"fltrust: ctx.root_update must be callable(global_params) -> (d,) tensor, got {type(root_update).__name__}"
            )
        fn: Callable[[Tensor], Tensor] = root_update
        root = fn(ctx.global_params).to(device=updates.device, dtype=updates.dtype)
        d = updates.shape[1]
        if root.shape != (d,):
            raise AggregationError(f"fltrust: root update must have shape ({d},), got {tuple(root.shape)}")
        agg, w, cos, scaled_down = fltrust_aggregate(updates, root)
        info = {"root_norm": float(row_norms(root[None, :])[0]), "trusted": float((w > 0).sum())}
        if not bool(w.sum() > 0):
            info["no_trust"] = 1.0
        return AggregationResult(agg, w, w > 0, 1.0 - cos, scaled_down, info)
