"""Centered clipping (Karimireddy et al. 2021).

Reference: Sai Praneeth Karimireddy, Lie He and Martin Jaggi, "Learning from
History for Byzantine Robust Optimization", ICML 2021, Algorithm 2 (CC).

Variant: the center :math:`v` is the previous round's aggregate (zero in the
first round), kept on the instance (one instance per run); ``max_iter``
clipping iterations :math:`l` (the paper uses 1) of

.. math:: v \\leftarrow v + \\frac{1}{n} \\sum_i (x_i - v)
    \\min\\Big(1, \\frac{\\tau}{\\|x_i - v\\|}\\Big).

The paper applies CC to worker momentum; fedpoison applies it to the updates
the clients send (with local training, an update plays the role of the
momentum). Sample weights are ignored (the paper averages uniformly).

Reported ``weights``: the aggregate equals ``c v_0 + weights @ updates``, where
``v_0`` is the round's starting center; the remainder ``c`` is
``info["center_weight"]``, so the row weights sum to ``1 - c``. ``scores`` are
the rows' distances to the starting center; ``clipped`` counts rows clipped
in the last iteration.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedpoison.core.rows import clip_factors, distances_to, row_norms
from fedpoison.defenses.base import AggregationResult, RoundContext
from fedpoison.defenses.registry import RULES
from fedpoison.defenses.requirements import requirement_error


class CenteredClippingParams(BaseModel):
    """Parameters of ``centered_clipping``."""

    model_config = ConfigDict(extra="forbid")
    #: Clipping radius tau around the center.
    tau: float = Field(default=1.0, gt=0.0)
    #: Clipping iterations l per round (the paper uses 1).
    max_iter: int = Field(default=1, ge=1, le=100)


def centered_clip(x: Tensor, center: Tensor, *, tau: float, iterations: int) -> tuple[Tensor, Tensor, float, Tensor, int]:
    """Return ``(v, row_weights, center_weight, first_distances, clipped)``.

    ``v = center_weight * center + row_weights @ x`` exactly (up to rounding).
    """
    n = x.shape[0]
    coef = torch.zeros(n, dtype=x.dtype, device=x.device)  # weights of the rows in v
    c0 = 1.0  # weight of the starting center in v
    v = center
    first = None
    clipped = 0
    sq = row_norms(x).square()
    for _ in range(iterations):
        dist = distances_to(x, v, sq_norms=sq)
        if first is None:
            first = dist
        scale = clip_factors(dist, tau) / n
        clipped = int((dist > tau).sum())
        # v' = v + sum_i s_i (x_i - v) = (1 - sum s) v + sum_i s_i x_i
        keep = 1.0 - float(scale.sum())
        coef = keep * coef + scale
        c0 = keep * c0
        v = c0 * center + coef @ x
    assert first is not None
    return v, coef, c0, first, clipped


@RULES.register(
    "centered_clipping",
    tags=("stateful", "changes_scale"),
    description="Centered clipping: clip each update to radius tau around the previous aggregate, average.",
    params=CenteredClippingParams,
    reference="Karimireddy et al. 2021, Learning from History for Byzantine Robust Optimization (CC, l iterations).",
    requires="none on n; tau bounds how far each row moves the aggregate per round",
    filters=False,
)
class CenteredClipping:
    """Centered clipping with the previous aggregate as center (stateful: one instance per run)."""

    def __init__(self, params: CenteredClippingParams | None = None, *, f: int = 0) -> None:
        self.params = params or CenteredClippingParams()
        self.f = f
        self.center: Tensor | None = None

    def state_dict(self) -> dict[str, Tensor]:
        """The previous aggregate (the centre), for checkpoints; empty before the first round."""
        return {} if self.center is None else {"center": self.center.detach().cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict`."""
        self.center = state.get("center")

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's rows (see the class docstring)."""
        n, d = updates.shape
        if self.center is None:
            center = torch.zeros(d, dtype=updates.dtype, device=updates.device)
        elif self.center.shape[0] != d:
            raise requirement_error(
                "centered_clipping", "the same update length every round", d=d, previous_d=self.center.shape[0]
            )
        else:
            center = self.center.to(device=updates.device, dtype=updates.dtype)
        p = self.params
        v, coef, c0, dist, clipped = centered_clip(updates, center, tau=p.tau, iterations=p.max_iter)
        self.center = v.detach().clone()
        return AggregationResult(
            v,
            coef,
            torch.ones(n, dtype=torch.bool, device=updates.device),
            dist,
            clipped,
            {"center_weight": c0, "tau": p.tau},
        )
