"""Shared fixtures of the auditing tests: one torch thread, small update matrices, built auditors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from fedpoison.audit import AUDITORS
from fedpoison.defenses import RoundContext


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models train far faster on one thread than on two cores shared with other test runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build_auditor(name: str, *, num_clients: int = 6, **params: Any) -> Any:
    """Build a registered auditor the way the round loop does."""
    entry = AUDITORS.get(name)
    return entry.obj(entry.params(**params), num_clients=num_clients)


def _ctx(ids: list[int] | torch.Tensor, rnd: int = 0, d: int = 8) -> RoundContext:
    ids_t = torch.as_tensor(ids, dtype=torch.int64)
    return RoundContext(rnd, ids_t, torch.Generator().manual_seed(rnd), torch.zeros(d))


def _rows(norms: list[float], d: int = 8, seed: int = 0, spread: float = 0.1) -> torch.Tensor:
    """Rows pointing roughly the same way (a shared direction plus a little noise) with the given norms."""
    g = torch.Generator().manual_seed(seed)
    base = torch.ones(d)
    noise = spread * torch.randn(len(norms), d, generator=g)
    rows = base + noise
    return rows / rows.norm(dim=1, keepdim=True) * torch.tensor(norms)[:, None]


@pytest.fixture
def build_auditor() -> Callable[..., Any]:
    """``build_auditor(name, num_clients=6, **params)``."""
    return _build_auditor


@pytest.fixture
def ctx() -> Callable[..., RoundContext]:
    """``ctx(ids, rnd=0, d=8)``: a round context for the given client ids."""
    return _ctx


@pytest.fixture
def rows() -> Callable[..., torch.Tensor]:
    """``rows(norms, d=8, seed=0, spread=0.1)``: similar rows with the given L2 norms."""
    return _rows
