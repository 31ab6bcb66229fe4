"""The shared row operations against slow, obvious references, over shapes drawn by Hypothesis."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpoison.attacks.fang import krum_scores
from fedpoison.attacks.update_rows import coordinate_mean_std, joint_rows, pairwise_sq_distances

shapes = st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 9), st.integers(0, 2**31 - 1))


@settings(max_examples=30, deadline=None)
@given(shapes)
def test_pairwise_sq_distances_match_a_loop(shape) -> None:
    ka, kb, d, seed = shape
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(ka, d, generator=g) * 3, torch.randn(kb, d, generator=g)
    naive = torch.tensor([[float(((a[i].double() - b[j].double()) ** 2).sum()) for j in range(kb)] for i in range(ka)],
                         dtype=torch.float64)
    torch.testing.assert_close(pairwise_sq_distances(a, b), naive, rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(shapes)
def test_coordinate_stats_match_torch_and_are_never_nan(shape) -> None:
    k, _, d, seed = shape
    rows = torch.randn(k, d, generator=torch.Generator().manual_seed(seed))
    mean, std = coordinate_mean_std(rows)
    torch.testing.assert_close(mean, rows.mean(dim=0))
    if k >= 2:
        torch.testing.assert_close(std, rows.std(dim=0))
    else:
        assert torch.equal(std, torch.zeros(d))
    assert torch.equal(joint_rows(rows), rows.mean(dim=0).expand(k, d))


@settings(max_examples=30, deadline=None)
@given(st.integers(4, 10), st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_krum_scores_match_a_loop(n, f, seed) -> None:
    rows = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))
    k = min(max(n - f - 2, 1), n - 1)
    naive = []
    for i in range(n):
        d = sorted(float(((rows[i] - rows[j]) ** 2).sum()) for j in range(n) if j != i)
        naive.append(sum(d[:k]))
    torch.testing.assert_close(krum_scores(rows, f), torch.tensor(naive, dtype=torch.float64), rtol=1e-5, atol=1e-5)
