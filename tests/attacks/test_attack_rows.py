"""Rows that attackers send: repeated and joint rows.

The maths attacks share with the server (distances, Krum scores, coordinate
statistics) is tested in ``tests/core/test_rows.py``.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpoison.attacks.update_rows import joint_rows, repeat_row


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 7), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_joint_and_repeated_rows(k: int, d: int, seed: int) -> None:
    rows = torch.randn(k, d, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(joint_rows(rows), rows.mean(dim=0).expand(k, d))
    rep = repeat_row(rows[0], 3)
    assert torch.equal(rep, rows[:1].expand(3, d))
    rep[0, 0] += 1.0  # a new tensor, not a view of the input
    assert not torch.equal(rep[0], rows[0])
