"""Rules' fast paths against slow, obvious references (Python loops over pairs).

Shapes are drawn by Hypothesis. The shared maths the rules call (distances,
Krum scores, order statistics) is checked the same way in ``tests/core``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpoison.core.rows import pairwise_sq_distances
from fedpoison.defenses.bulyan import bulyan_select
from fedpoison.defenses.foolsgold import foolsgold_weights
from fedpoison.defenses.nnm import nnm_mixing
from fedpoison.testing import build_defense_step as _build
from fedpoison.testing import make_round_context as _make_ctx

SETTINGS = settings(max_examples=25, deadline=None)


def matrix(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


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
