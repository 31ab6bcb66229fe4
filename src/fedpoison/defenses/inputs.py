"""The input contract of every aggregation rule and pre-aggregator, checked at each call.

Every registered rule and pre-aggregator (the package's and a user's) is
called through :func:`checked_call`, so a wrong shape, dtype or weight vector
is one :class:`~fedpoison.errors.UpdateError` naming the step, what was
expected and what was received, never a raw torch error from deep inside.

The contract:

- ``updates``: a float32 tensor of shape ``(n, d)`` with ``n >= 1`` and
  ``d >= 1``. A non-contiguous tensor (a transposed matrix, a strided view) is
  copied first, so no step can write through it into the caller's memory.
- ``weights``: a real tensor of shape ``(n,)``, finite and non-negative once in
  float32 (a claim of 1e39 samples is refused, not turned into inf). All-zero
  weights mean "no sample counts": the rows are weighted equally.
- ``ctx``: a :class:`~fedpoison.defenses.base.RoundContext` whose
  ``client_ids`` is a 1-d tensor and whose ``global_params`` (when not empty)
  has ``d`` entries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from fedpoison.defenses.base import RoundContext
from fedpoison.errors import UpdateError

T = TypeVar("T")
_MARK = "__fedpoison_checked__"


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"{str(x.dtype).removeprefix('torch.')} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def check_inputs(updates: object, weights: object, ctx: object, who: str) -> tuple[Tensor, Tensor]:
    """Return ``(updates, weights)`` ready for a step, or raise :class:`UpdateError` (see the module docstring)."""
    if not isinstance(updates, Tensor) or updates.ndim != 2 or updates.dtype != torch.float32:
        raise UpdateError(f"{who}: expected updates as a float32 tensor of shape (n, d), got {_describe(updates)}")
    n, d = updates.shape
    if n < 1 or d < 1:
        raise UpdateError(f"{who}: expected at least one row and one column, got shape {(n, d)}")
    if not isinstance(weights, Tensor) or weights.ndim != 1 or len(weights) != n:
        raise UpdateError(f"{who}: expected weights as a tensor of shape ({n},), one per row, got {_describe(weights)}")
    if weights.dtype == torch.bool or weights.is_complex():
        raise UpdateError(f"{who}: expected real-valued weights, got {_describe(weights)}")
    w = weights.to(device=updates.device, dtype=torch.float32)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        bad = int((~torch.isfinite(w) | (w < 0)).nonzero()[0, 0])
        raise UpdateError(f"{who}: expected finite, non-negative weights (in float32), got {weights[bad].item()!r} "
                          f"for row {bad}")
    if not bool((w > 0).any()):
        w = torch.ones_like(w)  # no sample counts at all: weigh the rows equally
    if not isinstance(ctx, RoundContext):
        raise UpdateError(f"{who}: expected a RoundContext, got {type(ctx).__name__}")
    ids = ctx.client_ids  # not always n long: a bucketing step's rows are buckets of these clients
    if not isinstance(ids, Tensor) or ids.ndim != 1:
        raise UpdateError(f"{who}: expected ctx.client_ids as a 1-d tensor, got {_describe(ids)}")
    g = ctx.global_params
    if isinstance(g, Tensor) and g.numel() and tuple(g.shape) != (d,):
        raise UpdateError(f"{who}: expected ctx.global_params of shape ({d},), got {_describe(g)}")
    return (updates if updates.is_contiguous() else updates.contiguous()), w


def checked_call(cls: T, who: str) -> T:
    """Make ``cls.__call__(updates, weights, ctx)`` check its inputs first; errors name ``who``.

    A class is wrapped once; a registered subclass that inherits a wrapped
    ``__call__`` only records its own name for the messages.
    """
    cls.__fedpoison_who__ = who  # type: ignore[attr-defined]
    call: Callable[..., Any] | None = getattr(cls, "__call__", None)  # noqa: B004 - the method itself
    if call is None or getattr(call, _MARK, False) or not isinstance(cls, type):
        return cls

    @functools.wraps(call)
    def __call__(self: Any, updates: Tensor, weights: Tensor, ctx: RoundContext, *args: Any, **kwargs: Any) -> Any:
        updates, weights = check_inputs(updates, weights, ctx, getattr(type(self), "__fedpoison_who__", who))
        return call(self, updates, weights, ctx, *args, **kwargs)

    setattr(__call__, _MARK, True)
    cls.__call__ = __call__  # type: ignore[method-assign]
    return cls
