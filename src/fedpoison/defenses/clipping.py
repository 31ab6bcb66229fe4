"""Server-side norm clipping of the update rows (pre-aggregator ``clip``).

Each row (a client's update, new minus old parameters) is scaled by
:math:`\\min(1, C / \\|x_i\\|)`, globally (the L2 norm of the whole update) or
per layer (each parameter tensor's slice of the update, from ``ctx.slices``,
with its own bound). The bound :math:`C` is a fixed ``defense.clip_norm`` or,
when that is unset, adaptive: the ``defense.clip_quantile`` quantile of this
round's norms (0.5, the median, by default; per layer, of that layer's norms).

References: norm bounding as a defense, Sun et al. 2019, "Can You Really
Backdoor Federated Learning?" (fixed bound); the median-norm bound is FLAME's
(Nguyen et al. 2022) adaptive clipping; per-layer clipping follows McMahan et
al. 2018, "Learning Differentially Private Recurrent Language Models"
(per-layer clipping). Clipping deltas rather than whole parameter tensors is
explained in ``docs/defenses.md``: a delta's norm measures how far one client
moves the model this round, which is what an attacker inflates, while a
parameter tensor's norm mostly measures the model itself.

``clip_norm`` and ``clip_quantile`` mean the same thing for ``norm_bound``,
which computes its bound with :func:`clip_bound` too.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from fedpoison.core.rows import clip_factors, norm_quantile, row_norms
from fedpoison.core.slices import ParamSlice
from fedpoison.defenses.base import PreResult, RoundContext
from fedpoison.defenses.registry import PRE_AGGREGATORS
from fedpoison.defenses.requirements import requirement_error

#: The adaptive bound's default quantile: the median of the round's norms.
DEFAULT_CLIP_QUANTILE = 0.5


class ClipBoundParams(BaseModel):
    """The clipping bound shared by ``clip`` and ``norm_bound``."""

    model_config = ConfigDict(extra="forbid")
    #: Fixed L2 bound on each update (per layer with clip_scope: layer); unset means adaptive.
    clip_norm: float | None = Field(default=None, gt=0.0)
    #: Adaptive bound: this quantile of the round's update norms (0.5 = median); used when clip_norm is unset.
    clip_quantile: float = Field(default=DEFAULT_CLIP_QUANTILE, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_bound(self) -> ClipBoundParams:
        # A resolved config carries every default, so clip_quantile at its default beside a clip_norm is what
        # a saved config (or a grid's task) holds when the user set clip_norm alone: only another value clashes.
        if self.clip_norm is not None and self.clip_quantile != DEFAULT_CLIP_QUANTILE:
            raise ValueError(
                f"set either clip_norm (fixed bound) or clip_quantile (adaptive bound), not both: "
                f"got clip_norm={self.clip_norm} and clip_quantile={self.clip_quantile}"
            )
        return self


class ClipParams(ClipBoundParams):
    """Parameters of the ``clip`` pre-aggregator."""

    #: ``global``: one L2 norm per update; ``layer``: one per parameter tensor (ctx.slices).
    clip_scope: Literal["global", "layer"] = "global"


def clip_bound(norms: Tensor, clip_norm: float | None, quantile: float) -> Tensor:
    """The bound: ``clip_norm`` if set, else the ``quantile`` of ``norms`` (linear interpolation)."""
    if clip_norm is not None:
        return torch.tensor(clip_norm, dtype=norms.dtype, device=norms.device)
    return norm_quantile(norms, quantile)


def clip_rows(x: Tensor, clip_norm: float | None, quantile: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(clipped copy of x, bound, (n,) bool rows clipped)`` with one L2 bound for whole rows."""
    norms = row_norms(x)
    bound = clip_bound(norms, clip_norm, quantile)
    factors = clip_factors(norms, bound)
    return x * factors[:, None], bound, norms > bound


def clip_layers(
    x: Tensor, slices: tuple[ParamSlice, ...], clip_norm: float | None, quantile: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(clipped copy of x, (L,) bounds, (n,) bool rows with any layer clipped)``, per parameter slice.

    The slices must tile ``[0, d)``; the loop is over layers, never coordinates.
    """
    n, d = x.shape
    ordered = sorted(slices, key=lambda s: s.start)
    pos = 0
    for s in ordered:
        if s.start != pos or s.end <= s.start:
            raise requirement_error("clip", "ctx.slices tiling the update without gaps", slice=s.name, start=s.start, expected_start=pos)
        pos = s.end
    if pos != d:
        raise requirement_error("clip", "ctx.slices covering the whole update", covered=pos, d=d)
    out = torch.empty_like(x)
    bounds = torch.empty(len(ordered), dtype=x.dtype, device=x.device)
    any_clipped = torch.zeros(n, dtype=torch.bool, device=x.device)
    for i, s in enumerate(ordered):
        block = x[:, s.start : s.end]
        norms = row_norms(block)
        bound = clip_bound(norms, clip_norm, quantile)
        out[:, s.start : s.end] = block * clip_factors(norms, bound)[:, None]
        bounds[i] = bound
        any_clipped |= norms > bound
    return out, bounds, any_clipped


@PRE_AGGREGATORS.register(
    "clip",
    tags=("changes_scale",),
    description="Server-side L2 clipping of each update, globally or per layer; fixed clip_norm or a "
    "quantile of the round's norms (median by default).",
    params=ClipParams,
    reference="Sun et al. 2019 (norm bounding); FLAME's median bound (Nguyen et al. 2022); per layer: "
    "McMahan et al. 2018.",
    requires="none",
)
class Clip:
    """Clip every row's update norm (or every layer's) to the bound."""

    def __init__(self, params: ClipParams | None = None, *, f: int = 0) -> None:
        self.params = params or ClipParams()
        self.f = f

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> PreResult:
        """Pre-aggregate one round's rows (see the class docstring)."""
        p = self.params
        if p.clip_scope == "global":
            out, bound, clipped = clip_rows(updates, p.clip_norm, p.clip_quantile)
            info = {"clip_bound": float(bound)}
        else:
            if not ctx.slices:
                raise requirement_error("clip", "ctx.slices (the parameter layout) for clip_scope 'layer'", slices=0)
            out, bounds, clipped = clip_layers(updates, tuple(ctx.slices), p.clip_norm, p.clip_quantile)
            info = {"clip_bound_mean": float(bounds.mean()), "clip_layers": float(bounds.numel())}
        return PreResult(out, weights, int(clipped.sum()), None, info)
