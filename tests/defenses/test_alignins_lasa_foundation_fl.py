"""Hand-built cases for alignins, lasa and foundation_fl, checked against the papers' formulas as plain loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpoison.core.order_statistics import coordinate_trimmed_mean
from fedpoison.defenses import ParamSlice
from fedpoison.testing import build_defense_step as _build
from fedpoison.testing import make_round_context as _make_ctx


def _mz(v: np.ndarray) -> np.ndarray:
    """The authors' MZ-score: |v - median| / population std (0 when the std vanishes)."""
    std = np.std(v)
    return np.abs(v - np.median(v)) / std if std > 1e-9 else np.zeros_like(v)


# ---- alignins ---------------------------------------------------------------------------------
def _alignins_reference(x: np.ndarray, ref: np.ndarray, sparsity: float) -> tuple[np.ndarray, np.ndarray]:
    """TDA and MPSA, one row and one coordinate at a time."""
    n, d = x.shape
    k = int(d * sparsity)
    major = np.sign(np.sign(x).sum(axis=0))
    tda, mpsa = np.zeros(n), np.zeros(n)
    for i in range(n):
        top = np.argsort(-np.abs(x[i]))[:k]
        mpsa[i] = sum(np.sign(x[i, c]) == major[c] for c in top) / k
        tda[i] = x[i] @ ref / (np.linalg.norm(x[i]) * np.linalg.norm(ref))
    return tda, mpsa


@pytest.mark.parametrize("seed", [0, 1])
def test_alignins_scores_selection_and_clipping_match_the_formulas(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, d = 9, 50
    x = torch.randn(n, d, generator=g) * 0.3 + torch.linspace(-1, 1, d)
    x[1] = -x[1]                       # flips every sign: MPSA far from the others
    x[4] = torch.randn(d, generator=g)  # unrelated direction
    w = torch.rand(n, generator=g) + 0.5
    ctx = _make_ctx(n, d)
    ctx.global_params = torch.linspace(-2, 2, d) + 0.1 * torch.randn(d, generator=g)
    res = _build("alignins", 0)(x, w, ctx)

    tda, mpsa = _alignins_reference(x.double().numpy(), ctx.global_params.double().numpy(), 0.3)
    zs, zc = _mz(mpsa), _mz(tda)
    kept = (zs < 1.0) & (zc < 1.0)
    np.testing.assert_allclose(res.scores.double().numpy(), np.maximum(zs, zc), rtol=1e-4, atol=1e-5)
    assert res.selected.numpy().tolist() == kept.tolist()
    assert not res.selected[1]
    # post-filtering clipping to the kept rows' median norm, then the sample-weighted mean
    xs = x.double().numpy()[kept]
    norms = np.linalg.norm(xs, axis=1)
    clipped = xs * np.minimum(1.0, np.median(norms) / norms)[:, None]
    ww = w.double().numpy()[kept]
    np.testing.assert_allclose(res.aggregate.double().numpy(), ww @ clipped / ww.sum(), rtol=1e-4, atol=1e-6)
    assert res.clipped == int((norms > np.median(norms)).sum())


def test_alignins_mpsa_counts_only_the_top_k_coordinates() -> None:
    """Four coordinates, k = 2: row 2 disagrees only on its two small coordinates, so its MPSA is 1."""
    x = torch.tensor([[5.0, 4.0, 1.0, 1.0],
                      [5.0, 4.0, 1.0, 1.0],
                      [5.0, 4.0, -0.1, -0.1],
                      [-5.0, -4.0, 1.0, 1.0]])
    from fedpoison.defenses.alignins import masked_principal_sign_alignment

    assert masked_principal_sign_alignment(x, 0.5).tolist() == [1.0, 1.0, 1.0, 0.0]


def test_alignins_keeps_nothing_gives_a_zero_step() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    res = _build("alignins", 0, alignins_lambda_c=1e-6, alignins_lambda_s=1e-6)(x, torch.ones(4), _make_ctx(4, 2))
    ctx = _make_ctx(4, 2)
    ctx.global_params = torch.tensor([1.0, 0.3])
    res = _build("alignins", 0, alignins_lambda_c=1e-6, alignins_lambda_s=1e-6)(x, torch.ones(4), ctx)
    assert not res.selected.any() and res.info["alignins_none_kept"] == 1.0
    assert torch.equal(res.aggregate, torch.zeros(2))


# ---- lasa -------------------------------------------------------------------------------------
LAYERS = (ParamSlice("conv.weight", 0, 12, (3, 1, 2, 2)), ParamSlice("conv.bias", 12, 15, (3,)),
          ParamSlice("fc.weight", 15, 35, (2, 10)), ParamSlice("fc.bias", 35, 37, (2,)))


def _lasa_reference(x: np.ndarray, sparsity: float, lam_n: float, lam_s: float) -> tuple[np.ndarray, list]:
    """The authors' loop: median-norm clip, one top-k over the weight tensors, layer-wise MZ filters, means."""
    n = len(x)
    norms = np.linalg.norm(x, axis=1)
    x = x * np.minimum(1.0, np.median(norms) / norms)[:, None]
    weight_cols = np.r_[0:12, 15:35]
    k = int(len(weight_cols) * (1 - sparsity))
    for i in range(n):
        keep = weight_cols[np.argsort(-np.abs(x[i, weight_cols]))[:k]]
        drop = np.setdiff1d(weight_cols, keep)
        x[i, drop] = 0.0
    agg, benign_sets = np.zeros(x.shape[1]), []
    for s in LAYERS:
        layer = x[:, s.start:s.end]
        zn = _mz(np.linalg.norm(layer, axis=1))
        sg = np.sign(layer)
        zs = _mz(0.5 * (1 + sg.sum(axis=1) / np.abs(sg).sum(axis=1)))
        benign = [i for i in range(n) if zn[i] < lam_n and zs[i] < lam_s] or list(range(n))
        benign_sets.append(benign)
        agg[s.start:s.end] = layer[benign].mean(axis=0)
    return agg, benign_sets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lasa_matches_the_authors_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, d = 8, 37
    x = torch.randn(n, d, generator=g) + 0.5
    x[0, 15:35] = -x[0, 15:35].abs()  # an fc layer of one sign, against the others' drift
    x[5, 0:12] = -x[5, 0:12].abs()  # a conv layer of one sign
    ctx = _make_ctx(n, d, slices=LAYERS)
    res = _build("lasa", 0)(x, torch.ones(n), ctx)
    agg, benign_sets = _lasa_reference(x.double().numpy(), 0.3, 2.0, 1.0)
    np.testing.assert_allclose(res.aggregate.double().numpy(), agg, rtol=1e-4, atol=1e-6)
    share = np.zeros(n)
    for s, benign in zip(LAYERS, benign_sets, strict=True):
        share[benign] += (s.end - s.start) / d / len(benign)
    np.testing.assert_allclose(res.weights.double().numpy(), share, rtol=1e-5)
    in_layers = np.array([sum(i in b for b in benign_sets) for i in range(n)])
    assert res.selected.numpy().tolist() == (in_layers > len(LAYERS) / 2).tolist()
    assert 0 not in benign_sets[2]  # its fc layer's sign purity is an outlier


def test_lasa_keeps_exactly_the_top_fraction_of_weight_entries() -> None:
    """Distinct magnitudes: each row keeps floor(0.7 * 32) = 22 weight entries, the largest, and every bias entry."""
    from fedpoison.defenses.lasa import sparsify_rows, weight_layers

    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 37, generator=g)
    y = sparsify_rows(x, 0.7, weight_layers(LAYERS, 37))
    cols = torch.cat([torch.arange(0, 12), torch.arange(15, 35)])
    assert (y[:, cols] != 0).sum(dim=1).tolist() == [22] * 5
    for i in range(5):
        top = torch.topk(x[i, cols].abs(), 22).indices
        assert torch.equal(y[i, cols][top], x[i, cols][top])
    assert torch.equal(y[:, 12:15], x[:, 12:15]) and torch.equal(y[:, 35:], x[:, 35:])
    # per-layer scope: floor(0.7 * 12) = 8 conv entries and floor(0.7 * 20) = 14 fc entries per row
    z = sparsify_rows(x, 0.7, weight_layers(LAYERS, 37), scope="layer")
    assert (z[:, :12] != 0).sum(dim=1).tolist() == [8] * 5 and (z[:, 15:35] != 0).sum(dim=1).tolist() == [14] * 5


# ---- foundation_fl ----------------------------------------------------------------------------
def test_foundation_fl_synthetic_rows_are_the_update_farthest_from_both_extremes() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0], [9.0, 9.0], [3.0, 3.0]])
    out = _build("foundation_fl", 0, pre=True, ffl_synthetic=3)(x, torch.arange(1.0, 6.0), _make_ctx(5, 2))
    hi, lo = x.max(dim=0).values, x.min(dim=0).values
    assert hi.tolist() == [9.0, 9.0] and lo.tolist() == [0.0, 0.0]
    s = [min(float(torch.dist(r, hi)), float(torch.dist(r, lo))) for r in x]
    star = int(np.argmax(s))
    assert star == 4  # (3, 3): 4.24 from the min, 8.49 from the max; rows 1 and 2 score 2.24, rows 0 and 3 zero
    assert torch.equal(out.updates[:5], x) and torch.equal(out.updates[5:], x[4].repeat(3, 1))
    assert out.weights[5:].tolist() == [5.0, 5.0, 5.0]
    assert out.groups[5:].argmax(dim=1).tolist() == [4, 4, 4] and out.info["ffl_client"] == 4.0


def test_foundation_fl_then_trimmed_mean_is_the_trimmed_mean_of_the_augmented_rows() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 30, generator=g)
    x[:2] = 50.0  # two attackers at an extreme
    from fedpoison.config import DefenseSection
    from fedpoison.defenses.compose import build_defense

    defense = build_defense(DefenseSection(name="trimmed_mean", pre=["foundation_fl"]), f=2)
    res = defense(x, torch.ones(10), _make_ctx(10, 30))
    from fedpoison.defenses.foundation_fl import extreme_scores

    star = int(torch.argmax(extreme_scores(x)))
    assert star >= 2
    augmented = torch.cat([x, x[star].repeat(5, 1)])  # m = n / 2 synthetic rows by default
    torch.testing.assert_close(res.aggregate, coordinate_trimmed_mean(augmented, 2))
    # the synthetic rows' weight traces back to the copied client
    assert res.weights[star] == pytest.approx(6 / 15)


def test_foundation_fl_scores_an_alternating_extreme_row_high_and_the_coordinate_score_zero() -> None:
    """Six honest rows near 1; an attacker at the max of three coordinates and the min of the other three.

    Eq. 4 takes the nearer of the two extreme *vectors*: the attacker is far from both and is copied.
    The per-coordinate variant takes the nearer extreme per coordinate: the attacker scores 0.
    """
    from fedpoison.defenses.foundation_fl import coordinate_extreme_scores, extreme_scores

    g = torch.Generator().manual_seed(0)
    x = torch.cat([1.0 + 0.05 * torch.randn(6, 6, generator=g), torch.tensor([[6.0, 6.0, 6.0, -4.0, -4.0, -4.0]])])
    hi, lo = x.max(dim=0).values, x.min(dim=0).values
    paper = extreme_scores(x)
    expected = torch.stack([torch.minimum(torch.dist(r, hi), torch.dist(r, lo)) for r in x])
    torch.testing.assert_close(paper, expected)
    assert int(torch.argmax(paper)) == 6
    coord = coordinate_extreme_scores(x)
    expected = torch.stack([torch.minimum((r - hi).abs(), (r - lo).abs()).norm() for r in x])
    torch.testing.assert_close(coord, expected)
    star = int(torch.argmax(coord))
    assert coord[6] == 0.0 and star < 6
    out = _build("foundation_fl", 0, pre=True, ffl_score="coordinate")(x, torch.ones(7), _make_ctx(7, 6))
    assert torch.equal(out.updates[7:], x[star].repeat(3, 1))


def test_foundation_fl_score_is_the_distance_from_the_mid_range_vector() -> None:
    """Eq. 4 in closed form: with r = g_max - g_min and mid = (g_max + g_min) / 2,
    s_i^2 = ||r||^2 / 4 + ||g_i - mid||^2 - |<g_i - mid, r>|.

    The first term is the same for every row, so the score ranks the rows by how far they lie from the
    mid-range vector, less their tilt towards one of the two extremes.
    """
    from fedpoison.defenses.foundation_fl import extreme_scores

    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 40, generator=g) * torch.linspace(0.1, 3.0, 12)[:, None] + torch.randn(40, generator=g)
    hi, lo = x.max(dim=0).values, x.min(dim=0).values
    r, mid = hi - lo, (hi + lo) / 2
    closed = (r.norm() ** 2 / 4 + ((x - mid) ** 2).sum(dim=1) - ((x - mid) @ r).abs()).sqrt()
    torch.testing.assert_close(extreme_scores(x), closed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_foundation_fl_copies_the_most_spread_honest_row_when_no_one_attacks(seed: int) -> None:
    """Ten honest rows around one mean, row i with noise scale 0.2 + 0.2 i: no attacker at all.

    Eq. 4 scores the most central row lowest and copies one of the most spread rows; the trimmed mean
    over the n + m rows then follows that row's noise and lands much farther from the mean than the
    plain trimmed mean (the one-class collapse of docs/defenses.md on a hand-built case).
    """
    from fedpoison.defenses.foundation_fl import extreme_scores

    g = torch.Generator().manual_seed(seed)
    mu = torch.linspace(-0.5, 0.5, 400)
    x = mu + torch.linspace(0.2, 2.0, 10)[:, None] * torch.randn(10, 400, generator=g)
    s = extreme_scores(x)
    star = int(torch.argmax(s))
    assert int(torch.argmin(s)) == 0 and star >= 7
    out = _build("foundation_fl", 0, pre=True)(x, torch.ones(10), _make_ctx(10, 400))
    assert torch.equal(out.updates[10:], x[star].repeat(5, 1))
    ffl = coordinate_trimmed_mean(out.updates, 2)
    plain = coordinate_trimmed_mean(x, 2)
    assert (ffl - mu).norm() > 2 * (plain - mu).norm()
    assert torch.nn.functional.cosine_similarity(ffl - mu, x[star] - mu, dim=0) > 0.9


# ---- end to end on digits -------------------------------------------------------------------------
@pytest.mark.parametrize(("rule", "extra"), [("alignins", {}), ("lasa", {}),
                                             ("trimmed_mean", {"defense.pre": ["foundation_fl"],
                                                               "defense.ffl_score": "coordinate"})])
def test_end_to_end_on_digits_against_sign_flip(rule: str, extra: dict) -> None:
    import pandas as pd

    import fedpoison

    res = fedpoison.run(overrides={"clients.num": 10, "rounds": 4, "attack.name": "sign_flip",
                                   "attack.fraction": 0.2, "defense.name": rule, **extra})
    assert res.summary["final_accuracy"] > 0.6
    log = pd.DataFrame(res.clients)
    if rule != "trimmed_mean":  # the filtering rules drop the sign-flipped rows
        attacked = log[log["attacked"]]
        assert (~attacked["selected"]).mean() >= 0.75
