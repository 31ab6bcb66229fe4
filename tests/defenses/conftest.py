"""Fixtures for the defense tests: round contexts and rules built from the registries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fedpoison.defenses import RoundContext
from fedpoison.testing import build_defense_step, make_round_context

_make_ctx = make_round_context
_build = build_defense_step


@pytest.fixture
def make_ctx() -> Callable[..., RoundContext]:
    """``make_ctx(n, d, seed=..., ids=..., root=..., slices=...)``: a round context."""
    return _make_ctx


@pytest.fixture
def build() -> Callable[..., Any]:
    """``build(name, f, pre=False, **params)``: a rule or pre-aggregator as the defense builds it."""
    return _build
