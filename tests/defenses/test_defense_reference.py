"""Fast paths against slow, obvious references (Python loops over coordinates and pairs).

Shapes are drawn by Hypothesis; column counts cross the block size of the
order-statistics kernels so the threaded block path is exercised.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpoison.defenses.bulyan import bulyan_select
from fedpoison.defenses.distances import (
    cosine_similarity_matrix,
    cosine_to,
    distances_to,
    pairwise_sq_distances,
    row_norms,
)
from fedpoison.defenses.foolsgold import foolsgold_weights
from fedpoison.defenses.krum import krum_scores
from fedpoison.defenses.nnm import nnm_mixing
from fedpoison.defenses.order_statistics import (
    closest_to_median_mean_by_sort,
    coordinate_closest_to_median_mean,
    coordinate_median,
    coordinate_trimmed_mean,
    median_by_sort,
    trimmed_mean_by_sort,
)
from fedpoison.testing import build_defense_step as _build
from fedpoison.testing import make_round_context as _make_ctx

SETTINGS = settings(max_examples=25, deadline=None)


def matrix(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


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


@SETTINGS
@given(st.integers(1, 30), st.integers(1, 200), st.integers(0, 10**6))
def test_distances_and_cosines_match_loops(n: int, d: int, seed: int) -> None:
    x = matrix(n, d, seed) * 3 + 1
    ref = torch.tensor([[float((x[i] - x[j]).double().square().sum()) for j in range(n)] for i in range(n)])
    torch.testing.assert_close(pairwise_sq_distances(x), ref.float(), rtol=1e-4, atol=1e-3)
    cos = torch.tensor(
        [[float(torch.nn.functional.cosine_similarity(x[i], x[j], dim=0)) for j in range(n)] for i in range(n)]
    )
    torch.testing.assert_close(cosine_similarity_matrix(x), cos, rtol=1e-4, atol=1e-5)
    z = x[0] * 0.5
    torch.testing.assert_close(distances_to(x, z), (x - z).norm(dim=1), rtol=1e-5, atol=1e-5)
    near = x[0] + 1e-3  # closer than the norms resolve through the dot product: exact path
    torch.testing.assert_close(distances_to(x, near)[0], (x[0] - near).norm(), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(cosine_to(x, z), cos[:, 0], rtol=1e-4, atol=1e-5)


def test_norms_and_cosines_of_huge_rows_do_not_overflow() -> None:
    x = torch.tensor([[3e30, 4e30], [1.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(row_norms(x), torch.tensor([5e30, 1.0, 0.0]))
    cos = cosine_similarity_matrix(x)
    assert torch.isfinite(cos).all()
    assert abs(cos[0, 1].item() - 0.6) < 1e-6 and cos[2].abs().sum() == 0
    assert torch.isinf(pairwise_sq_distances(x)[0, 1])


@SETTINGS
@given(st.integers(3, 20), st.integers(1, 50), st.integers(0, 10**6), st.data())
def test_krum_scores_match_a_loop(n: int, d: int, seed: int, data) -> None:
    f = data.draw(st.integers(0, n - 3))
    x = matrix(n, d, seed)
    k = n - f - 2
    ref = []
    for i in range(n):
        dists = sorted(float((x[i] - x[j]).double().square().sum()) for j in range(n) if j != i)
        ref.append(sum(dists[:k]))
    torch.testing.assert_close(krum_scores(pairwise_sq_distances(x), f), torch.tensor(ref).float(), rtol=1e-4, atol=1e-3)


def _bulyan_reference(x: torch.Tensor, f: int) -> torch.Tensor:
    n = x.shape[0]
    remaining = list(range(n))
    picks = []
    for _ in range(n - 2 * f):
        r = len(remaining)
        k = max(r - f - 2, 1) if r > 1 else 0
        scores = []
        for i in remaining:
            dists = sorted(float((x[i] - x[j]).double().square().sum()) for j in remaining if j != i)
            scores.append(sum(dists[:k]))
        best = remaining[int(np.argmin(scores))]
        picks.append(best)
        remaining.remove(best)
    return torch.tensor(picks)


@SETTINGS
@given(st.integers(3, 15), st.integers(1, 20), st.integers(0, 10**6), st.data())
def test_bulyan_selection_matches_a_loop(n: int, d: int, seed: int, data) -> None:
    f = data.draw(st.integers(0, (n - 3) // 4))
    x = matrix(n, d, seed)
    assert bulyan_select(pairwise_sq_distances(x), f, n - 2 * f).tolist() == _bulyan_reference(x, f).tolist()


@SETTINGS
@given(st.integers(2, 15), st.integers(1, 20), st.integers(0, 10**6), st.data())
def test_nnm_matches_a_loop(n: int, d: int, seed: int, data) -> None:
    f = data.draw(st.integers(0, n - 1))
    x = matrix(n, d, seed)
    mixed = nnm_mixing(pairwise_sq_distances(x), f) @ x
    for i in range(n):
        order = sorted(range(n), key=lambda j: (j != i, float((x[i] - x[j]).norm())))
        torch.testing.assert_close(mixed[i], x[order[: n - f]].mean(dim=0), rtol=1e-5, atol=1e-5)


def _foolsgold_reference(h: np.ndarray, kappa: float) -> np.ndarray:
    n = h.shape[0]
    norms = np.linalg.norm(h, axis=1)
    cs = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j and norms[i] > 0 and norms[j] > 0:
                cs[i, j] = h[i] @ h[j] / (norms[i] * norms[j])
    v = cs.max(axis=1)
    for i in range(n):
        for j in range(n):
            if v[j] > v[i]:
                cs[i, j] *= v[i] / v[j]
    alpha = np.clip(1 - cs.max(axis=1), 0, 1)
    if alpha.max() == 0:
        return np.zeros(n)
    alpha = alpha / alpha.max()
    alpha[alpha == 1] = 0.99
    with np.errstate(divide="ignore"):
        alpha = kappa * (np.log(alpha / (1 - alpha)) + 0.5)
    alpha[np.isinf(alpha) & (alpha > 0)] = 1
    return np.clip(np.nan_to_num(alpha, neginf=0.0), 0, 1)


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 30), st.integers(0, 10**6), st.sampled_from([0.5, 1.0, 2.0]))
def test_foolsgold_weights_match_algorithm_1_in_loops(n: int, d: int, seed: int, kappa: float) -> None:
    h = matrix(n, d, seed)
    if n > 2:
        h[1] = h[0] * 2  # a sybil pair
    alpha, _ = foolsgold_weights(h, kappa)
    np.testing.assert_allclose(alpha.numpy(), _foolsgold_reference(h.double().numpy(), kappa), atol=1e-4)


def test_geometric_median_matches_explicit_weiszfeld() -> None:
    x = matrix(9, 50, 3) + 2.0
    z = torch.zeros(50, dtype=torch.float64)
    xd = x.double()
    for _ in range(30):
        beta = 1.0 / (xd - z).norm(dim=1).clamp_min(1e-6)
        z = (beta[:, None] * xd).sum(dim=0) / beta.sum()
    res = _build("geometric_median", 0, max_iter=30, tol=0.0)(x, torch.ones(9), _make_ctx(9, 50))
    torch.testing.assert_close(res.aggregate.double(), z, rtol=1e-4, atol=1e-4)
    assert math.isclose(float(res.weights.sum()), 1.0, rel_tol=1e-5)
    torch.testing.assert_close(res.weights @ x, res.aggregate, rtol=1e-5, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 40), st.integers(0, 10**6))
def test_mean_shift_matches_sklearn(n: int, seed: int) -> None:
    """SignGuard's all-seeds-at-once Mean-Shift partitions points as sklearn's MeanShift does."""
    from sklearn.cluster import MeanShift
    from sklearn.cluster import estimate_bandwidth as sk_bandwidth

    from fedpoison.defenses.signguard import estimate_bandwidth, mean_shift_labels

    g = torch.Generator().manual_seed(seed)
    pts = torch.cat([0.1 * torch.rand(n, 3, generator=g, dtype=torch.float64),
                     0.5 + 0.1 * torch.rand(n // 3 + 1, 3, generator=g, dtype=torch.float64)])
    bw = estimate_bandwidth(pts)
    assert bw == pytest.approx(sk_bandwidth(pts.numpy(), quantile=0.5))
    ours = mean_shift_labels(pts, bw).numpy()
    theirs = MeanShift(bandwidth=bw).fit(pts.numpy()).labels_
    assert ((ours[:, None] == ours[None, :]) == (theirs[:, None] == theirs[None, :])).all()
