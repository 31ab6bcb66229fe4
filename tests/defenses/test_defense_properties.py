"""Property tests: the bounds each paper proves, with f Byzantine rows of arbitrary values.

Honest rows are drawn in [-10, 10]; Byzantine rows anywhere in [-1e30, 1e30] or
at +/-1e30 and +/-3e38 exactly, and the rows are shuffled so the rules cannot
rely on where the attackers sit. Slack terms only absorb float32 rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedpoison.testing import build_defense_step as _build
from fedpoison.testing import make_round_context as _make_ctx

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HONEST = st.floats(-10.0, 10.0, width=32, allow_nan=False)
BIG = float(np.float32(1e30))
BYZANTINE = st.one_of(
    st.sampled_from([BIG, -BIG, 3e38, -3e38, 0.0]),
    st.floats(-BIG, BIG, width=32, allow_nan=False, allow_infinity=False),
)


@st.composite
def attacked(draw, max_f_of_n, min_n: int = 3, max_n: int = 13):
    """``(x, honest_mask, f)``: shuffled rows, ``f`` of them Byzantine, ``f <= max_f_of_n(n)``."""
    n = draw(st.integers(min_n, max_n))
    f = draw(st.integers(0, max(0, max_f_of_n(n))))
    d = draw(st.integers(1, 5))
    honest = draw(arrays(np.float32, (n - f, d), elements=HONEST))
    byz = draw(arrays(np.float32, (f, d), elements=BYZANTINE))
    perm = np.array(draw(st.permutations(range(n))))
    x = np.concatenate([honest, byz])[perm]
    mask = np.concatenate([np.ones(n - f, bool), np.zeros(f, bool)])[perm]
    return torch.from_numpy(x), torch.from_numpy(mask), f


def aggregate(name: str, x: torch.Tensor, f: int, **params) -> torch.Tensor:
    n, d = x.shape
    res = _build(name, f, **params)(x, torch.ones(n), _make_ctx(n, d))
    assert torch.isfinite(res.aggregate).all()
    return res.aggregate.double()


def slack(h: torch.Tensor) -> float:
    return 1e-4 * (1.0 + float(h.abs().max()))


@SETTINGS
@given(attacked(lambda n: (n - 1) // 2))
def test_median_stays_within_the_honest_range(case) -> None:
    """Yin et al.: with f < n/2, each coordinate lies between the honest min and max."""
    x, honest, f = case
    out, h = aggregate("median", x, f), x[honest].double()
    assert (out >= h.min(dim=0).values - slack(h)).all() and (out <= h.max(dim=0).values + slack(h)).all()


@SETTINGS
@given(attacked(lambda n: (n - 1) // 2))
def test_trimmed_mean_stays_within_the_honest_range(case) -> None:
    """Yin et al.: trimming b >= f from each end leaves each coordinate within the honest range."""
    x, honest, f = case
    out, h = aggregate("trimmed_mean", x, f), x[honest].double()
    assert (out >= h.min(dim=0).values - slack(h)).all() and (out <= h.max(dim=0).values + slack(h)).all()


def _honest_diameter(h: torch.Tensor) -> float:
    return float(torch.cdist(h, h).max()) if h.shape[0] > 1 else 0.0


@SETTINGS
@given(attacked(lambda n: (n - 3) // 2))
def test_krum_picks_a_row_near_the_honest_ones(case) -> None:
    """Blanchard et al.: the winner's score is at most an honest row's, at most (n-f-2) D^2, and at
    least one of its n-f-2 neighbours is honest, so it lies within sqrt(n-f-2) D of an honest row.
    """
    x, honest, f = case
    n = x.shape[0]
    out, h = aggregate("krum", x, f), x[honest].double()
    bound = math.sqrt(n - f - 2) * _honest_diameter(h)
    assert float(torch.cdist(out[None], h).min()) <= bound + slack(h) * 10


@SETTINGS
@given(attacked(lambda n: (n - 3) // 2))
def test_multi_krum_averages_rows_near_the_honest_ones(case) -> None:
    """Each of the n - f picked rows scores at most the worst honest score, so it lies within
    sqrt(n-f-2) D of an honest row; their mean is within that plus D of the honest mean.
    """
    x, honest, f = case
    n = x.shape[0]
    out, h = aggregate("multi_krum", x, f), x[honest].double()
    diam = _honest_diameter(h)
    bound = math.sqrt(n - f - 2) * diam + diam
    assert float((out - h.mean(dim=0)).norm()) <= bound + slack(h) * 10


@SETTINGS
@given(attacked(lambda n: (n - 3) // 4, min_n=3, max_n=15))
def test_bulyan_stays_near_the_honest_range(case) -> None:
    """El Mhamdi et al.: the picked set's median is within the honest range and at least
    beta honest values are within that range's width R of it; so each coordinate of the
    output lies in [min - R, max + R].
    """
    x, honest, f = case
    out, h = aggregate("bulyan", x, f), x[honest].double()
    lo, hi = h.min(dim=0).values, h.max(dim=0).values
    r = hi - lo
    assert (out >= lo - r - slack(h)).all() and (out <= hi + r + slack(h)).all()


@SETTINGS
@given(attacked(lambda n: (n - 1) // 2))
def test_geometric_median_is_within_the_robustness_radius(case) -> None:
    """Minsker (2015), Lemma 2.1: ||GM - mu_H|| <= 2(1-a)/(1-2a) max_H ||x_i - mu_H||, a = f/n < 1/2."""
    x, honest, f = case
    n = x.shape[0]
    out = aggregate("geometric_median", x, f, max_iter=500, tol=0.0, smoothing=1e-9)
    h = x[honest].double()
    mu = h.mean(dim=0)
    a = f / n
    radius = 2 * (1 - a) / (1 - 2 * a) * float((h - mu).norm(dim=1).max())
    assert float((out - mu).norm()) <= radius * 1.01 + slack(h) * 10


@SETTINGS
@given(attacked(lambda n: n // 2, min_n=2))
def test_clipping_and_norm_bound_bound_every_row(case) -> None:
    """Whatever a row holds, after clipping its norm is at most the bound."""
    x, _, f = case
    n, d = x.shape
    out = _build("clip", f, pre=True, clip_norm=2.0)(x, torch.ones(n), _make_ctx(n, d))
    assert (out.updates.double().norm(dim=1) <= 2.0 * (1 + 1e-5)).all()
    agg = aggregate("norm_bound", x, f, clip_norm=2.0)
    assert float(agg.norm()) <= 2.0 * (1 + 1e-5)


@SETTINGS
@given(attacked(lambda n: n - 1, min_n=1), st.floats(0.1, 5.0))
def test_centered_clipping_moves_at_most_tau(case, tau: float) -> None:
    """Karimireddy et al.: each clipping step moves the center by at most tau."""
    x, _, f = case
    out = aggregate("centered_clipping", x, f, tau=tau)
    assert float(out.norm()) <= tau * (1 + 1e-5)


def test_geometric_median_keeps_iterating_when_a_row_is_1e30_away() -> None:
    """Regression (found by the property above): an objective-based stop saw no change, because
    the 1e30 term swallowed the honest ones, and stopped at 1.5 instead of 1.
    """
    x = torch.tensor([[1.0], [1.0], [1e30]])
    out = aggregate("geometric_median", x, 1, max_iter=100, tol=1e-9)
    assert abs(float(out[0]) - 1.0) < 1e-6
