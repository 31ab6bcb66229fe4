"""Shared test fixtures."""

from __future__ import annotations

import pytest

import fedpoison


@pytest.fixture(scope="session")
def digits_fedavg() -> fedpoison.RunResult:
    """The default FedAvg run on digits (20 clients, IID, 20 rounds), shared by tests."""
    return fedpoison.run(overrides=["rounds=20"])
