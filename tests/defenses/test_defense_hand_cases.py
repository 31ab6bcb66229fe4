"""Hand-computed cases: three to seven clients, answers checkable on paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedpoison.defenses import ParamSlice
from fedpoison.testing import build_defense_step as _build
from fedpoison.testing import make_round_context as _make_ctx


def col(*values: float) -> torch.Tensor:
    """One-coordinate rows."""
    return torch.tensor(values, dtype=torch.float32)[:, None]


def run(name: str, x: torch.Tensor, f: int = 0, w: torch.Tensor | None = None, **params):
    n, d = x.shape
    ctx = _make_ctx(n, d, root=params.pop("root", "random"))
    return _build(name, f, **params)(x, torch.ones(n) if w is None else w, ctx)


def test_mean_weights_by_samples_or_uniformly() -> None:
    x = col(0.0, 3.0, 6.0)
    assert run("mean", x, w=torch.tensor([1.0, 1.0, 4.0])).aggregate.item() == pytest.approx(4.5)
    assert run("mean", x, w=torch.tensor([1.0, 1.0, 4.0]), weighting="uniform").aggregate.item() == pytest.approx(3.0)


def test_median_odd_and_even() -> None:
    assert run("median", col(1.0, 2.0, 10.0), f=1).aggregate.item() == 2.0
    # even n: mean of the two middle values (not torch.median's lower one)
    assert run("median", col(1.0, 2.0, 3.0, 100.0), f=1).aggregate.item() == 2.5
    x = torch.tensor([[1.0, -5.0], [2.0, 0.0], [30.0, 5.0]])
    assert run("median", x, f=1).aggregate.tolist() == [2.0, 0.0]


def test_trimmed_mean_trims_f_or_beta() -> None:
    x = col(1.0, 2.0, 3.0, 4.0, 100.0)
    assert run("trimmed_mean", x, f=1).aggregate.item() == pytest.approx(3.0)  # mean(2, 3, 4)
    assert run("trimmed_mean", x, f=0).aggregate.item() == pytest.approx(22.0)  # plain mean
    assert run("trimmed_mean", x, f=0, beta=0.4).aggregate.item() == pytest.approx(3.0)  # b = floor(2.0) = 2


def test_krum_uses_n_minus_f_minus_2_neighbours() -> None:
    # n = 5, f = 1: 2 neighbours. Scores: 0 -> 1+4, 1 -> 1+1, 2 -> 1+1, 3 -> 1+4, 100 -> 97^2+98^2.
    x = col(0.0, 1.0, 2.0, 3.0, 100.0)
    res = run("krum", x, f=1)
    assert res.aggregate.item() == 1.0  # tie between rows 1 and 2: the lower index
    assert res.scores.tolist()[:4] == [5.0, 2.0, 2.0, 5.0]
    assert res.selected.tolist() == [False, True, False, False, False]


def test_multi_krum_averages_the_m_best() -> None:
    x = col(0.0, 1.0, 2.0, 3.0, 100.0)
    assert run("multi_krum", x, f=1).aggregate.item() == pytest.approx(1.5)  # m = n - f = 4: rows 0..3
    assert run("multi_krum", x, f=1, m=2).aggregate.item() == pytest.approx(1.5)  # rows 1, 2
    assert run("multi_krum", x, f=1, m=3).selected.tolist() == [True, True, True, False, False]


def test_bulyan_iterated_krum_then_closest_to_median() -> None:
    # n = 7, f = 1: theta = 5 picks by iterated Krum (rows 2, 3, 1, 4, 0; worked out in the
    # module's terms: r - f - 2 neighbours each time), then beta = 3 values closest to the
    # median 2 of {0, 1, 2, 3, 4}: {1, 2, 3}, mean 2.
    x = col(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 100.0)
    res = run("bulyan", x, f=1)
    assert res.aggregate.item() == pytest.approx(2.0)
    assert res.selected.tolist() == [True, True, True, True, True, False, False]


def test_geometric_median_of_a_triangle_is_its_fermat_point() -> None:
    # Equilateral triangle: the geometric median is the centroid (1, 1/sqrt 3).
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, math.sqrt(3.0)]])
    res = run("geometric_median", x, max_iter=200, tol=0.0)
    torch.testing.assert_close(res.aggregate, torch.tensor([1.0, 1.0 / math.sqrt(3.0)]), atol=1e-4, rtol=0)
    # Collinear points: the geometric median is the middle one.
    res = run("geometric_median", col(0.0, 1.0, 10.0), max_iter=500, tol=0.0)
    assert res.aggregate.item() == pytest.approx(1.0, abs=1e-3)


def test_centered_clipping_clips_around_the_previous_aggregate() -> None:
    rule = _build("centered_clipping", 0, tau=1.0)
    x = torch.tensor([[3.0, 0.0], [0.0, 0.5], [-2.0, 0.0]])
    ctx = _make_ctx(3, 2)
    first = rule(x, torch.ones(3), ctx)
    # center 0: rows clipped to [1, 0], [0, 0.5], [-1, 0]; mean [0, 1/6]
    torch.testing.assert_close(first.aggregate, torch.tensor([0.0, 1.0 / 6.0]))
    assert first.clipped == 2
    # round 2 is centered on [0, 1/6]: the same rows move it less far from there
    second = rule(torch.tensor([[0.0, 1.0 / 6.0 + 0.3]]), torch.ones(1), ctx)
    torch.testing.assert_close(second.aggregate, torch.tensor([0.0, 1.0 / 6.0 + 0.3]))
    torch.testing.assert_close(second.weights.sum() + second.info["center_weight"], torch.tensor(1.0))


def test_fltrust_trust_and_rescaling() -> None:
    root = lambda p: torch.tensor([1.0, 0.0])  # noqa: E731
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    res = run("fltrust", x, root=root)
    torch.testing.assert_close(res.aggregate, torch.tensor([1.0, 0.0]))  # only row 0 trusted, rescaled to norm 1
    assert res.selected.tolist() == [True, False, False]
    x = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    res = run("fltrust", x, root=root)
    c = 1 / math.sqrt(2)  # row 1: trust cos 45 deg, rescaled to [c, c]
    torch.testing.assert_close(res.aggregate, torch.tensor([(1 + c * c) / (1 + c), c * c / (1 + c)]))
    torch.testing.assert_close(res.weights, torch.tensor([1 / (1 + c), c / (1 + c)]))


def test_fltrust_with_no_trusted_row_returns_zero_and_records_it() -> None:
    res = run("fltrust", torch.tensor([[-1.0, 0.0], [0.0, 2.0]]), root=lambda p: torch.tensor([1.0, 0.0]))
    assert res.aggregate.tolist() == [0.0, 0.0]
    assert res.info["no_trust"] == 1.0 and not res.selected.any()


def test_foolsgold_zeroes_identical_sybils() -> None:
    # Two sybils with identical histories get alpha 0; the honest client gets alpha 1.
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    res = run("foolsgold", x)
    torch.testing.assert_close(res.aggregate, torch.tensor([0.0, 1.0]))
    assert res.selected.tolist() == [False, False, True]
    assert res.scores.tolist() == pytest.approx([1.0, 1.0, 0.0])


def test_foolsgold_remembers_histories_by_client_id() -> None:
    rule = _build("foolsgold", 0)
    # round 0: clients 0 and 1 look alike only through their history
    rule(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.ones(3), _make_ctx(3, 2, ids=torch.tensor([0, 1, 2])))
    # round 1: client 1 now sends [1, -1]: H_1 = [1, 0] = H_0 -> both sybil-like
    res = rule(torch.tensor([[0.0, 0.0], [1.0, -1.0], [1.0, 1.0]]), torch.ones(3), _make_ctx(3, 2, ids=torch.tensor([0, 1, 2])))
    assert res.selected.tolist() == [False, False, True]


def test_flame_drops_the_odd_direction_and_clips_at_the_median_norm() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [2.0, 0.0], [-5.0, 0.0]])
    res = run("flame", x, noise_lambda=0.0)
    assert res.selected.tolist() == [True, True, True, True, False]
    med = math.hypot(1.0, 0.1)  # median of norms 1, 1.005, 1.005, 2, 5
    expected = torch.tensor([(3.0 + med) / 4.0, 0.0])
    torch.testing.assert_close(res.aggregate, expected)
    assert res.clipped == 1 and res.info["clip_bound"] == pytest.approx(med)


def test_dnc_drops_the_row_along_the_top_singular_direction() -> None:
    x = torch.tensor([[1.0, 0.0, 0.1], [1.1, 0.1, 0.0], [0.9, -0.1, 0.0], [1.0, 0.0, -0.1], [9.0, 9.0, 9.0]])
    res = run("dnc", x, f=1)
    assert res.selected.tolist() == [True, True, True, True, False]
    torch.testing.assert_close(res.aggregate, x[:4].mean(dim=0))


def test_signguard_norm_and_sign_filters() -> None:
    honest = torch.tensor([[1.0, 2.0, 1.0, 1.0], [2.0, 1.0, 1.0, 1.0], [1.0, 1.0, 2.0, 1.0], [1.0, 1.0, 1.0, 2.0]])
    x = torch.cat([honest, -honest[:1]])  # same norm, flipped signs
    res = run("signguard", x, sg_coord_fraction=1.0)
    assert res.selected.tolist() == [True, True, True, True, False]
    torch.testing.assert_close(res.aggregate, honest.mean(dim=0))  # every honest norm is the median
    big = torch.cat([honest, 10 * honest[:1]])  # norm 10x the median: norm filter (R = 3)
    res = run("signguard", big, sg_coord_fraction=1.0)
    assert res.selected.tolist() == [True, True, True, True, False]


def test_norm_bound_clips_then_weighted_mean() -> None:
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    res = run("norm_bound", x, clip_norm=1.0)
    torch.testing.assert_close(res.aggregate, torch.tensor([0.45, 0.6]))  # [0.6, 0.8] and [0.3, 0.4]
    assert res.clipped == 1
    res = run("norm_bound", x, w=torch.tensor([1.0, 3.0]), clip_norm=1.0)
    torch.testing.assert_close(res.aggregate, torch.tensor([0.375, 0.5]))


def test_clip_global_fixed_and_median() -> None:
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 2.0]])
    out = _build("clip", 0, pre=True, clip_norm=1.0)(x, torch.ones(3), _make_ctx(3, 2))
    torch.testing.assert_close(out.updates, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 1.0]]))
    assert out.clipped == 2 and out.info["clip_bound"] == 1.0
    out = _build("clip", 0, pre=True)(x, torch.ones(3), _make_ctx(3, 2))  # median norm 2
    torch.testing.assert_close(out.updates, torch.tensor([[1.2, 1.6], [0.3, 0.4], [0.0, 2.0]]))
    out = _build("clip", 0, pre=True, clip_quantile=0.0 + 1e-9)(x, torch.ones(3), _make_ctx(3, 2))
    torch.testing.assert_close(out.updates.norm(dim=1), torch.full((3,), 0.5), atol=1e-5, rtol=0)


def test_clip_per_layer() -> None:
    x = torch.tensor([[3.0, 4.0, 0.5], [0.0, 0.5, 2.0]])
    slices = (ParamSlice("w", 0, 2, (2,)), ParamSlice("b", 2, 3, (1,)))
    ctx = _make_ctx(2, 3, slices=slices)
    out = _build("clip", 0, pre=True, clip_norm=1.0, clip_scope="layer")(x, torch.ones(2), ctx)
    torch.testing.assert_close(out.updates, torch.tensor([[0.6, 0.8, 0.5], [0.0, 0.5, 1.0]]))
    assert out.clipped == 2


def test_bucketing_averages_pairs() -> None:
    x = col(0.0, 2.0, 10.0, 20.0, 7.0)
    out = _build("bucketing", 0, pre=True, bucket_size=2)(x, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), _make_ctx(5, 1))
    assert out.updates.shape == (3, 1)
    torch.testing.assert_close(out.groups @ x, out.updates)
    assert sorted(out.groups.count_nonzero(dim=1).tolist()) == [1, 2, 2]
    assert out.weights.sum().item() == 15.0
    torch.testing.assert_close(out.groups.count_nonzero(dim=0), torch.ones(5, dtype=torch.long))


def test_nnm_mixes_the_n_minus_f_nearest() -> None:
    out = _build("nnm", 1, pre=True)(col(0.0, 1.0, 10.0), torch.ones(3), _make_ctx(3, 1))
    assert out.updates[:, 0].tolist() == [0.5, 0.5, 5.5]


def test_rlr_flips_exactly_the_coordinates_below_the_agreement_threshold() -> None:
    """Five rows; coordinate 0: five agree (|sum sgn| = 5), 1: four vs one (3), 2: three vs two (1), 3: zeros."""
    x = torch.tensor([
        [1.0, 1.0, 1.0, 0.0],
        [2.0, 1.0, 1.0, 0.0],
        [1.0, 1.0, 1.0, 0.0],
        [3.0, 1.0, -1.0, 0.0],
        [1.0, -4.0, -1.0, 0.0],
    ])
    w = torch.ones(5)
    mean = x.mean(dim=0)
    for theta, flipped in [(1, [False, False, False, True]), (3, [False, False, True, True]),
                           (4, [False, True, True, True]), (5, [False, True, True, True])]:
        res = _build("rlr", 0, rlr_threshold=theta)(x, w, _make_ctx(5, 4))
        expected = torch.where(torch.tensor(flipped), -mean, mean)
        torch.testing.assert_close(res.aggregate, expected)
        assert res.info["rlr_flipped"] == float(sum(flipped))
    # the default theta is f + 1: with f = 2, coordinate 2 (|sum| = 1) and 3 (0) flip, 1 (|sum| = 3) does not
    res = _build("rlr", 2)(x, w, _make_ctx(5, 4))
    torch.testing.assert_close(res.aggregate, mean * torch.tensor([1.0, 1.0, -1.0, -1.0]))


def test_rlr_refuses_a_threshold_no_vote_can_reach() -> None:
    from fedpoison.errors import AggregationError

    with pytest.raises(AggregationError, match=r"rlr: requires n >= theta .* n=3, f=0, theta=4"):
        _build("rlr", 0, rlr_threshold=4)(torch.ones(3, 2), torch.ones(3), _make_ctx(3, 2))


def _multi_metrics_reference(x: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """The paper's scores written as plain loops over pairs (float64), and the rows kept."""
    n = len(x)
    t = np.zeros((n, 3))
    for i in range(n):
        for j in range(n):
            if i != j:
                cos = x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
                t[i, 0] += (1.0 - cos) ** 2
                t[i, 1] += np.abs(x[i] - x[j]).sum()
                t[i, 2] += abs(np.linalg.norm(x[i]) - np.linalg.norm(x[j]))
    inv = np.linalg.inv(np.cov(t.T))
    scores = np.array([t[i] @ inv @ t[i] for i in range(n)])
    return scores, np.sort(np.argsort(scores, kind="stable")[: max(1, int(keep * n))])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_metrics_scores_and_selection_equal_the_papers_loops(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(10, 30, generator=g) + torch.linspace(0, 1, 30)
    x[2] = -3.0 * x[2]  # one row pointing away, longer
    w = torch.rand(10, generator=g) + 0.5
    res = _build("multi_metrics", 0)(x, w, _make_ctx(10, 30))
    scores, kept = _multi_metrics_reference(x.double().numpy(), 0.3)
    np.testing.assert_allclose(res.scores.double().numpy(), scores, rtol=1e-4)
    assert np.flatnonzero(res.selected.numpy()).tolist() == kept.tolist()
    assert not res.selected[2]
    expected = (w[res.selected] / w[res.selected].sum()) @ x[res.selected]
    torch.testing.assert_close(res.aggregate, expected)


def test_multi_metrics_keeps_at_least_one_row_and_never_a_row_that_overflows() -> None:
    x = torch.tensor([[1.0, 0.0], [1.1, 0.1], [3e38, 3e38]])
    res = _build("multi_metrics", 0, mm_keep=0.9)(x, torch.ones(3), _make_ctx(3, 2))
    assert not res.selected[2] and res.selected.sum() >= 1
    assert torch.isfinite(res.aggregate).all()
