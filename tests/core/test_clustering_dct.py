"""The shared DCT and clustering maths (core/dct.py, core/clustering.py) against references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from fedpoison.core.clustering import gap_statistic, kmeans, majority_cluster, minmax_scale
from fedpoison.core.dct import dct2_ii, dct_ii


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_dct_ii_matches_scipy(n: int) -> None:
    x = torch.randn(4, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    ref = scipy.fft.dct(x.numpy(), type=2, norm="ortho", axis=-1)
    np.testing.assert_allclose(dct_ii(x).numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(dct_ii(x, keep=1).numpy(), ref[:, :1], atol=1e-12)


@pytest.mark.parametrize("p", [1, 3, 6, 9])
def test_dct2_ii_matches_scipy_dctn_and_keeps_the_low_block(p: int) -> None:
    x = torch.randn(3, p, p, dtype=torch.float64, generator=torch.Generator().manual_seed(p))
    ref = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(dct2_ii(x).numpy(), ref, atol=1e-12)
    k = p // 2 + 1
    np.testing.assert_allclose(dct2_ii(x, keep=k).numpy(), ref[:, :k, :k], atol=1e-12)


def test_dct_float32_is_close_to_scipy() -> None:
    x = torch.randn(2, 31, 31, generator=torch.Generator().manual_seed(0))
    ref = scipy.fft.dctn(x.numpy().astype(np.float64), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(dct2_ii(x).numpy(), ref, atol=1e-4)


def test_kmeans_finds_separated_groups_and_their_inertia() -> None:
    pts = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]], dtype=torch.float64)
    labels, centres, inertia = kmeans(pts, 2, generator=torch.Generator().manual_seed(1))
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    assert float(inertia) == pytest.approx(4 * 0.25)  # each point 0.5 from its centre
    assert sorted(centres[:, 0].tolist()) == [0.0, 10.0]


def test_kmeans_batches_are_independent() -> None:
    a = torch.tensor([[0.0], [0.1], [5.0], [5.1]], dtype=torch.float64)
    b = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    _, _, inertia = kmeans(torch.stack([a, b]), 2, generator=torch.Generator().manual_seed(0))
    assert float(inertia[0]) == pytest.approx(2 * 2 * 0.05**2)
    assert float(inertia[1]) == pytest.approx(4 * 0.25)


def test_gap_statistic_counts_well_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(30, 1, generator=g, dtype=torch.float64)
    two = torch.cat([noise[:22], 1.0 + noise[22:]])
    assert gap_statistic(two, generator=torch.Generator().manual_seed(1)) == 2
    uniform = torch.linspace(0, 1, 30, dtype=torch.float64)[:, None]  # no structure: one cluster
    assert gap_statistic(uniform, generator=torch.Generator().manual_seed(1)) == 1
    assert gap_statistic(torch.ones(10, 1, dtype=torch.float64), generator=torch.Generator()) == 1


def test_gap_statistic_takes_rounding_noise_for_one_cluster() -> None:
    """Scores equal up to float64 rounding (FLDetector's honest-only rounds) are one cluster, while a real
    spread just above the tolerance is still scaled and clustered.
    """
    noise = torch.tensor([-1.44e-15, 1.55e-15, 1.78e-15, -1.67e-15, -5.6e-16], dtype=torch.float64)
    for seed in range(10):
        assert gap_statistic((1.0 + noise)[:, None], generator=torch.Generator().manual_seed(seed)) == 1
    two = torch.tensor([1.0, 1.0, 1.0, 1.0 + 1e-6, 1.0 + 1e-6, 1.0 + 1e-6], dtype=torch.float64)[:, None]
    assert gap_statistic(two, generator=torch.Generator().manual_seed(1)) == 2


def test_minmax_scale_maps_columns_to_the_unit_interval() -> None:
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]], dtype=torch.float64)
    assert minmax_scale(x).tolist() == [[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]]


def test_majority_cluster_keeps_the_tight_majority() -> None:
    pts = torch.cat([torch.zeros(6, 2), torch.tensor([[5.0, 5.0], [-5.0, 4.0], [5.0, -6.0]])])
    pts[:6, 0] = torch.linspace(0, 0.05, 6)
    kept = majority_cluster(torch.cdist(pts, pts))
    assert kept.tolist() == [True] * 6 + [False] * 3
