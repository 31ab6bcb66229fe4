"""Fixtures for the defense tests: round contexts and rules built from the registries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from fedpoison.defenses import PRE_AGGREGATORS, RULES, ParamSlice, RoundContext

#: Parameters that make a plug-in deterministic enough for exact checks (no noise).
QUIET: dict[str, dict[str, Any]] = {"flame": {"noise_lambda": 0.0}}


def _root_update(d: int, seed: int = 99) -> Callable[[torch.Tensor], torch.Tensor]:
    root = torch.randn(d, generator=torch.Generator().manual_seed(seed))

    def fn(global_params: torch.Tensor) -> torch.Tensor:
        return root.clone()

    return fn


def _make_ctx(
    n: int,
    d: int,
    *,
    seed: int = 7,
    ids: torch.Tensor | None = None,
    root: Callable[[torch.Tensor], torch.Tensor] | str | None = "random",
    slices: tuple[ParamSlice, ...] | None = None,
    rnd: int = 0,
) -> RoundContext:
    if slices is None:
        half = d // 2
        slices = (ParamSlice("w", 0, half, (half,)), ParamSlice("b", half, d, (d - half,)))
    root_fn = _root_update(d) if root == "random" else root
    return RoundContext(
        rnd,
        torch.arange(n) if ids is None else ids,
        torch.Generator().manual_seed(seed),
        torch.zeros(d),
        slices,
        root_fn,
    )


def _build(name: str, f: int = 0, *, pre: bool = False, **params: Any) -> Any:
    entry = (PRE_AGGREGATORS if pre else RULES).get(name)
    return entry.obj(entry.params(**params), f=f)


@pytest.fixture
def make_ctx() -> Callable[..., RoundContext]:
    """``make_ctx(n, d, seed=..., ids=..., root=..., slices=...)``: a round context."""
    return _make_ctx


@pytest.fixture
def build() -> Callable[..., Any]:
    """``build(name, f, pre=False, **params)``: a rule or pre-aggregator as the defense builds it."""
    return _build
