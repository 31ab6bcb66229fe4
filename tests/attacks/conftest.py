"""Fixtures for the attack tests: small attack contexts and attacks built from the registry."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fedpoison.attacks import Attack, AttackContext
from fedpoison.testing import build_attack, make_attack_context, make_images

_build_attack = build_attack
_make_context = make_attack_context
_make_data = make_images


@pytest.fixture
def build_attack() -> Callable[..., Attack]:
    """``build_attack(name, collude=False, **params)``: an attack built as the round loop builds it."""
    return _build_attack


@pytest.fixture
def make_context() -> Callable[..., AttackContext]:
    """``make_context(m=3, k=7, d=12, seed=0, honest=True, ...)``: a seeded attack context."""
    return _make_context


@pytest.fixture
def make_data() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``make_data(n=40, seed=0)``: random 1x8x8 images and labels 0..9."""
    return _make_data
