"""Coordinate-wise order statistics: hand-worked cases, and the block kernels against numpy and loops.

Shapes are drawn by Hypothesis; column counts cross the block size of the
kernels so the threaded block path is exercised.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from fedpoison.core.order_statistics import (
    closest_to_median_mean_by_sort,
    coordinate_closest_to_median_mean,
    coordinate_median,
    coordinate_trimmed_mean,
    median_by_sort,
    trimmed_mean_by_sort,
)

SETTINGS = settings(max_examples=25, deadline=None)


def matrix(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_three_rows_by_hand() -> None:
    x = torch.tensor([[1.0, 10.0], [2.0, -4.0], [9.0, 0.0]])
    before = x.clone()
    assert coordinate_median(x).tolist() == [2.0, 0.0]
    # b = 1 of 3 rows: only the middle value stays.
    assert coordinate_trimmed_mean(x, 1).tolist() == [2.0, 0.0]
    assert coordinate_trimmed_mean(x, 0).tolist() == [4.0, 2.0]
    # beta = 2 values closest to the median: {1, 2} -> 1.5; {0, -4} ties with {0, 10}: leftmost window -> -2
    assert coordinate_closest_to_median_mean(x, 2).tolist() == [1.5, -2.0]
    assert torch.equal(x, before), "order statistics must not write into their input"
    # four rows: the mean of the two middle values; a 1-D tensor is one coordinate
    assert coordinate_median(torch.tensor([[0.0], [1.0], [4.0], [100.0]])).tolist() == [2.5]
    assert float(median_by_sort(torch.tensor([3.0, 1.0, 4.0, 1.0]))) == 2.0


def test_a_single_column_is_not_sorted_in_place() -> None:
    # (n, 1): the transposed column block is contiguous already; the kernel must still get a copy.
    x = torch.tensor([[1.5], [-0.25], [0.75]])
    before = x.clone()
    assert coordinate_median(x).tolist() == [0.75]
    assert coordinate_trimmed_mean(x, 1).tolist() == [0.75]
    assert_close(coordinate_closest_to_median_mean(x, 2), torch.tensor([(0.75 + 1.5) / 2]))
    assert torch.equal(x, before)


def test_bad_trim_and_beta_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="b=2, n=4"):
        coordinate_trimmed_mean(torch.zeros(4, 2), 2)
    with pytest.raises(ValueError, match="beta=5, n=4"):
        coordinate_closest_to_median_mean(torch.zeros(4, 2), 5)


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 3000), st.integers(0, 10**6))
def test_coordinate_median_matches_numpy(n: int, d: int, seed: int) -> None:
    x = matrix(n, d, seed)
    ref = torch.from_numpy(np.median(x.numpy(), axis=0))
    torch.testing.assert_close(coordinate_median(x), ref)
    torch.testing.assert_close(median_by_sort(x), ref)  # the GPU path, run on CPU


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 3000), st.integers(0, 10**6), st.data())
def test_coordinate_trimmed_mean_matches_a_sort(n: int, d: int, seed: int, data) -> None:
    b = data.draw(st.integers(0, (n - 1) // 2))
    x = matrix(n, d, seed)
    ref = torch.sort(x, dim=0).values[b : n - b].double().mean(dim=0).float()
    torch.testing.assert_close(coordinate_trimmed_mean(x, b), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trimmed_mean_by_sort(x, b), ref, rtol=1e-5, atol=1e-6)


def test_order_statistics_on_a_large_matrix_use_several_blocks() -> None:
    x = matrix(64, 20_000, 1)  # blocks of 4096 columns: 5 blocks over 2 threads
    torch.testing.assert_close(coordinate_median(x), torch.from_numpy(np.median(x.numpy(), axis=0)))
    torch.testing.assert_close(
        coordinate_trimmed_mean(x, 10), torch.sort(x, dim=0).values[10:54].mean(dim=0), rtol=1e-5, atol=1e-6
    )


@SETTINGS
@given(st.integers(1, 25), st.integers(1, 600), st.integers(0, 10**6), st.data())
def test_closest_to_median_mean_matches_a_loop(n: int, d: int, seed: int, data) -> None:
    # With n even and beta odd the two middle values always tie: keep beta = n (mod 2).
    beta = data.draw(st.integers(1, n).filter(lambda b: (n - b) % 2 == 0))
    x = matrix(n, d, seed)
    ref = torch.empty(d)
    for j in range(d):
        col = x[:, j].double()
        med = col.median() if n % 2 else col.sort().values[n // 2 - 1 : n // 2 + 1].mean()
        ref[j] = col[torch.argsort((col - med).abs(), stable=True)[:beta]].mean()
    torch.testing.assert_close(coordinate_closest_to_median_mean(x, beta), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(closest_to_median_mean_by_sort(x, beta), ref, rtol=1e-5, atol=1e-6)


