"""Fixtures for the attack tests: small attack contexts and attacks built from the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from fedpoison.attacks import ATTACKS, Attack, AttackContext

INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


def _build_attack(name: str, *, collude: bool = False, input_shape: tuple[int, ...] = INPUT_SHAPE,
                 num_classes: int = NUM_CLASSES, **params: Any) -> Attack:
    """Build a registered attack the way the round loop does."""
    entry = ATTACKS.get(name)
    attack: Attack = entry.obj(entry.params(**params), num_classes=num_classes,
                               input_shape=input_shape, collude=collude)
    return attack


def _make_context(
    *,
    m: int = 3,
    k: int = 7,
    d: int = 12,
    seed: int = 0,
    honest: bool = True,
    server_lr: float = 1.0,
    round: int = 0,
    generator_seed: int = 123,
    previous: bool = False,
    defense: Any = None,
) -> AttackContext:
    """A context with seeded random own and honest rows (honest ones around a common mean)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(d, generator=g)
    own = centre + 0.3 * torch.randn(m, d, generator=g)
    hon = centre + 0.3 * torch.randn(k, d, generator=g)
    return AttackContext(
        round=round,
        own_updates=own,
        own_weights=torch.full((m,), 50.0),
        honest_updates=hon if honest else None,
        honest_weights=torch.full((k,), 50.0) if honest else None,
        num_participants=m + k,
        global_params=torch.randn(d, generator=g),
        server_lr=server_lr,
        generator=torch.Generator().manual_seed(generator_seed),
        defense=defense,
        defense_ctx=None,
        previous_updates=torch.randn(m, d, generator=g) if previous else None,
    )


def _make_data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random 1x8x8 images in [0, 1) with labels 0..9."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *INPUT_SHAPE, generator=g), torch.arange(n) % NUM_CLASSES


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
