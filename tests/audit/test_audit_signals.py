"""Signals and robust z-scores: hand-computed cases, and the vectorised code against naive loops."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from fedpoison.audit.signals import (
    SIGNAL_TAILS,
    blend_history,
    combine_scores,
    compute_signals,
    cosine_signal,
    distance_signal,
    ewma_update,
    finite_median,
    krum_signal,
    norm_signal,
    oriented_z,
    robust_z,
    sign_agreement,
)


# ---- naive references --------------------------------------------------------------
def naive_median(values: list[float]) -> float:
    s = sorted(values)
    k = len(s)
    return (s[(k - 1) // 2] + s[k // 2]) / 2


def naive_krum(x: torch.Tensor, f: int) -> torch.Tensor:
    n = x.shape[0]
    k = min(max(n - f - 2, 1), n - 1)
    out = []
    for i in range(n):
        dists = sorted(float(((x[i].double() - x[j].double()) ** 2).sum()) for j in range(n) if j != i)
        out.append(sum(dists[:k]))
    return torch.tensor(out, dtype=x.dtype)


def naive_robust_z(values: list[float]) -> list[float]:
    med = naive_median(values)
    dev = [abs(v - med) for v in values]
    scale = 1.4826 * naive_median(dev)
    if scale <= 1e-12:
        scale = 1.2533 * sum(dev) / len(dev)
    if scale <= 1e-12:
        return [0.0] * len(values)
    return [(v - med) / scale for v in values]


matrices = st.tuples(st.integers(2, 9), st.integers(1, 12), st.integers(0, 2**16)).map(
    lambda t: torch.randn(t[0], t[1], generator=torch.Generator().manual_seed(t[2]))
)


# ---- hand-computed cases -----------------------------------------------------------
def test_three_client_signals_by_hand() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0], [-6.0, -8.0]])
    centre = torch.tensor([0.0, 1.0])
    assert_close(norm_signal(x), torch.tensor([5.0, 1.0, 10.0]))
    assert_close(cosine_signal(x, centre), torch.tensor([0.8, 1.0, -0.8]))
    assert_close(distance_signal(x, centre), torch.tensor([math.sqrt(9 + 9), 0.0, math.sqrt(36 + 81)]))
    assert_close(sign_agreement(x, centre), torch.tensor([1.0, 1.0, 0.0]))  # x-coordinate ignored: centre 0
    # f = 0 with n = 3: one neighbour each. d(0,1)=18, d(0,2)=225, d(1,2)=117
    assert_close(krum_signal(x, f=0), torch.tensor([18.0, 18.0, 117.0]))
    assert_close(finite_median(x), torch.tensor([0.0, 1.0]))


def test_robust_z_hand_case_and_fallbacks() -> None:
    z = robust_z(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert_close(z, torch.tensor([-2.0, -1.0, 0.0, 1.0, 97.0]) / 1.4826)
    # MAD = 0 (three equal values): mean absolute deviation fallback, 1.2533 * (0+0+0+1+9)/5
    z = robust_z(torch.tensor([5.0, 5.0, 5.0, 6.0, 14.0]))
    assert_close(z, torch.tensor([0.0, 0.0, 0.0, 1.0, 9.0]) / (1.2533 * 2.0))
    assert torch.equal(robust_z(torch.full((4,), 2.5)), torch.zeros(4))


def test_oriented_z_tails_and_nonfinite() -> None:
    v = torch.tensor([1.0, 2.0, 3.0, float("nan"), 100.0])
    up, low, both = oriented_z(v, "upper"), oriented_z(v, "lower"), oriented_z(v, "both")
    assert up[3] == math.inf and low[3] == math.inf and both[3] == math.inf
    assert up[4] > 10 and low[4] < -10 and both[4] == up[4]
    assert low[0] > 0 and both[0] == -up[0]
    with pytest.raises(ValueError, match="tail"):
        oriented_z(v, "left")  # type: ignore[arg-type]


def test_nonfinite_rows_do_not_disturb_the_others() -> None:
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    bad = x.clone()
    bad[2, 3] = float("inf")
    clean = torch.cat([x[:2], x[3:]])
    assert_close(finite_median(bad), finite_median(clean))
    k = krum_signal(bad, f=1)
    assert math.isnan(float(k[2]))
    for name in SIGNAL_TAILS:
        sig = compute_signals(bad, [name])[name]
        assert math.isnan(float(sig[2])), name
        assert torch.isfinite(torch.cat([sig[:2], sig[3:]])).all(), name


def test_combine_scores() -> None:
    z = {"a": torch.tensor([4.0, -2.0, 0.0]), "b": torch.tensor([0.0, 2.0, math.inf])}
    assert_close(combine_scores(z, "mean"), torch.tensor([2.0, 1.0, math.inf]))
    assert_close(combine_scores(z, "max"), torch.tensor([4.0, 2.0, math.inf]))
    with pytest.raises(ValueError, match="at least one"):
        combine_scores({})
    with pytest.raises(ValueError, match="'sum'"):
        combine_scores(z, "sum")  # type: ignore[arg-type]


def test_history_blend_and_ewma() -> None:
    score = torch.tensor([10.0, 1.0, 100.0])
    past = torch.tensor([0.0, 3.0, 0.0])
    seen = torch.tensor([True, True, False])
    assert_close(blend_history(score, past, seen, 0.3), torch.tensor([7.0, 0.7 + 0.9, 100.0]))
    assert_close(ewma_update(past, seen, score, decay=0.5, cap=6.0), torch.tensor([3.0, 2.0, 6.0]))
    assert_close(blend_history(score, past, seen, 0.0), score)


def test_unknown_signal_and_bad_f_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown signal 'entropy'"):
        compute_signals(torch.zeros(3, 2), ["entropy"])
    with pytest.raises(ValueError, match="f=-1"):
        krum_signal(torch.zeros(3, 2), f=-1)


def test_small_n_edge_cases() -> None:
    one = torch.tensor([[1.0, 2.0]])
    assert torch.equal(krum_signal(one), torch.zeros(1))
    assert torch.equal(robust_z(torch.tensor([3.0])), torch.zeros(1))
    assert robust_z(torch.tensor([float("nan")])).isnan().all()
    assert torch.equal(finite_median(torch.full((2, 3), float("nan"))), torch.zeros(3))
    assert torch.equal(sign_agreement(torch.ones(2, 3), torch.zeros(3)), torch.ones(2))


# ---- vectorised code against naive loops ---------------------------------------------
@settings(max_examples=40, deadline=None)
@given(matrices)
def test_signals_match_naive_loops(x: torch.Tensor) -> None:
    n, d = x.shape
    before = x.clone()
    med = torch.tensor([naive_median(x[:, j].tolist()) for j in range(d)])
    assert_close(finite_median(x), med)
    sig = compute_signals(x, list(SIGNAL_TAILS), krum_f=1)
    assert torch.equal(x, before), "signals must not mutate their input"
    for i in range(n):
        row = x[i]
        assert math.isclose(float(sig["norm"][i]), math.sqrt(float((row.double() ** 2).sum())), rel_tol=1e-5)
        cos = float(row.double() @ med.double()) / max(float(row.double().norm() * med.double().norm()), 1e-12)
        assert math.isclose(float(sig["cosine"][i]), cos, rel_tol=1e-4, abs_tol=1e-5)
        assert math.isclose(float(sig["distance"][i]), float((row - med).double().norm()), rel_tol=1e-5,
                            abs_tol=1e-6)
        nz = [j for j in range(d) if med[j] != 0]
        agree = sum(1 for j in nz if math.copysign(1, row[j]) == math.copysign(1, med[j]) and row[j] != 0)
        assert math.isclose(float(sig["sign_agreement"][i]), agree / len(nz) if nz else 1.0, abs_tol=1e-6)
    assert_close(sig["krum"], naive_krum(x, 1), rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=15))
def test_robust_z_matches_naive(values: list[float]) -> None:
    got = robust_z(torch.tensor(values, dtype=torch.float64))
    assert_close(got, torch.tensor(naive_robust_z(values), dtype=torch.float64), rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(matrices, st.integers(0, 4))
def test_krum_matches_naive_for_every_f(x: torch.Tensor, f: int) -> None:
    assert_close(krum_signal(x, f=f), naive_krum(x, f), rtol=1e-5, atol=1e-5)


def test_signals_are_scale_and_permutation_consistent() -> None:
    x = torch.randn(7, 9, generator=torch.Generator().manual_seed(3))
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(4))
    a = compute_signals(x, list(SIGNAL_TAILS))
    b = compute_signals(x[perm], list(SIGNAL_TAILS))
    for name in SIGNAL_TAILS:
        assert_close(b[name], a[name][perm], msg=name)
