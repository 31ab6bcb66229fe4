"""Hand-checkable cases of the update attacks (three clients, answers checkable on paper)."""

from __future__ import annotations

from statistics import NormalDist

import pytest
import torch

from fedpoison.attacks import AttackContext
from fedpoison.attacks.alie import alie_update, alie_z
from fedpoison.attacks.ipm import ipm_update
from fedpoison.attacks.mimic import mimic_index
from fedpoison.attacks.scaling import replacement_scale, scale_to_norm
from fedpoison.attacks.sign_flip import sign_flip


def ctx_from(own: torch.Tensor, honest: torch.Tensor | None = None, **kw) -> AttackContext:
    m, d = own.shape
    k = 0 if honest is None else honest.shape[0]
    defaults = dict(
        round=0,
        own_updates=own,
        own_weights=torch.ones(m),
        honest_updates=honest,
        honest_weights=None if honest is None else torch.ones(k),
        num_participants=m + k,
        global_params=torch.zeros(d),
        server_lr=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    defaults.update(kw)
    return AttackContext(**defaults)


# ---- sign flip, scaling -------------------------------------------------------------
def test_sign_flip_by_hand(build_attack) -> None:
    own = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    assert sign_flip(own, 2.0).tolist() == [[-2.0, 4.0], [-0.0, -6.0]]
    assert build_attack("sign_flip").craft(ctx_from(own)).tolist() == [[-1.0, 2.0], [-0.0, -3.0]]
    joint = build_attack("sign_flip", collude=True, scale=2.0).craft(ctx_from(own))
    assert joint.tolist() == [[-1.0, -1.0], [-1.0, -1.0]]


def test_scaling_by_hand(build_attack) -> None:
    own = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    assert build_attack("scaling", scale=3.0).craft(ctx_from(own)).tolist() == [[3.0, -6.0], [0.0, 9.0]]
    assert build_attack("scaling", scale=3.0, collude=True).craft(ctx_from(own)).tolist() == [[1.5, 1.5]] * 2


# ---- model replacement, norm bounded ---------------------------------------------------
def test_replacement_scale_is_n_over_server_lr() -> None:
    assert replacement_scale(10, 0.5) == 20.0
    assert replacement_scale(10, 0.5, 4, collude=True) == 5.0


def test_model_replacement_replaces_the_global_model_under_fedavg(build_attack) -> None:
    g = torch.Generator().manual_seed(0)
    glob, own, honest = torch.randn(5, generator=g), torch.randn(1, 5, generator=g), torch.randn(9, 5, generator=g)
    lr = 0.5
    ctx = ctx_from(own, honest, global_params=glob, server_lr=lr)
    rows = build_attack("model_replacement").craft(ctx)
    torch.testing.assert_close(rows, own * 20.0)  # gamma = n / lr = 10 / 0.5
    new = glob + lr * torch.cat([honest, rows]).mean(dim=0)
    x_att = glob + own[0]
    torch.testing.assert_close(new - x_att, lr * honest.sum(dim=0) / 10)  # only the honest drift is left


def test_model_replacement_colluding_and_explicit_scale(build_attack) -> None:
    own = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    ctx = ctx_from(own, None, num_participants=8, server_lr=1.0)
    assert build_attack("model_replacement").craft(ctx).tolist() == [[8.0, 0.0], [24.0, 16.0]]
    assert build_attack("model_replacement", collude=True).craft(ctx).tolist() == [[8.0, 4.0]] * 2
    assert build_attack("model_replacement", scale=2.0).craft(ctx).tolist() == [[2.0, 0.0], [6.0, 4.0]]


def test_scale_to_norm_keeps_direction_and_zero_rows() -> None:
    rows = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, -0.5]])
    assert scale_to_norm(rows, 10.0).tolist() == [[6.0, 8.0], [0.0, 0.0], [0.0, -10.0]]


def test_norm_bounded_sends_rows_just_under_the_bound(build_attack) -> None:
    own = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    out = build_attack("norm_bounded", norm_bound=2.0, margin=0.1).craft(ctx_from(own))
    torch.testing.assert_close(out.norm(dim=1), torch.tensor([1.8, 1.8]))
    torch.testing.assert_close(out[0] / out[0].norm(), torch.tensor([0.6, 0.8]))
    honest = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 3.0]])  # norms 1, 2, 3: median 2
    est = build_attack("norm_bounded", margin=0.0).craft(ctx_from(own, honest))
    torch.testing.assert_close(est.norm(dim=1), torch.tensor([2.0, 2.0]))
    local = build_attack("norm_bounded", margin=0.0).craft(ctx_from(own))  # own norms 5, 1: lower median 1
    torch.testing.assert_close(local.norm(dim=1), torch.tensor([1.0, 1.0]))


# ---- IPM, ALIE ---------------------------------------------------------------------------
def test_ipm_by_hand(build_attack) -> None:
    honest = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    assert ipm_update(honest, 0.5).tolist() == [-1.0, -0.5]
    out = build_attack("ipm", eps=0.5).craft(ctx_from(torch.zeros(3, 2), honest))
    assert out.tolist() == [[-1.0, -0.5]] * 3


@pytest.mark.parametrize(
    ("n", "f", "p"),
    [
        (50, 12, 36 / 50),  # s = 26 - 12 = 14
        (20, 6, 15 / 20),  # s = 11 - 6 = 5
        (10, 2, 6 / 10),  # s = 6 - 2 = 4
        (10, 1, 5 / 10),  # s = 5: z = 0
        (4, 4, 3 / 4),  # s = 3 - 4 < 1, so s = 1
    ],
)
def test_alie_z_from_n_and_f(n, f, p) -> None:
    assert alie_z(n, f) == pytest.approx(NormalDist().inv_cdf(p))


def test_alie_z_reference_values() -> None:
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-4)
    assert alie_z(20, 6) == pytest.approx(0.6745, abs=1e-4)


def test_alie_by_hand(build_attack) -> None:
    honest = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]])  # mean (1, 2), std (1, 2)
    assert alie_update(honest, 1.0).tolist() == [0.0, 0.0]
    assert alie_update(honest, 0.5).tolist() == [0.5, 1.0]
    out = build_attack("alie", z=1.5).craft(ctx_from(torch.zeros(2, 2), honest))
    assert out.tolist() == [[-0.5, -1.0]] * 2
    auto = build_attack("alie").craft(ctx_from(torch.zeros(2, 2), honest))  # n = 5, f = 2: s = 1
    z = NormalDist().inv_cdf(4 / 5)
    torch.testing.assert_close(auto, torch.tensor([[1 - z, 2 - 2 * z]] * 2))


# ---- Gaussian, free riders, non-finite ------------------------------------------------------
def test_gaussian_noise_has_the_configured_std(build_attack, make_context) -> None:
    ctx = make_context(m=2, d=20000)
    rand = build_attack("gaussian", std=0.5).craft(ctx)
    assert rand.std().item() == pytest.approx(0.5, rel=0.03) and abs(rand.mean().item()) < 0.02
    add = build_attack("gaussian", mode="additive", std=0.5).craft(ctx)
    assert (add - ctx.own_updates).std().item() == pytest.approx(0.5, rel=0.03)
    joint = build_attack("gaussian", std=0.5, collude=True).craft(ctx)
    assert torch.equal(joint[0], joint[1])


def test_fitted_gaussian_draws_from_the_own_updates_mean_and_std(build_attack, make_context) -> None:
    """Fang et al.'s Gaussian attack: per coordinate N(mu_j, sigma_j^2) of the own before-attack updates."""
    from fedpoison.attacks.noise import fitted_gaussian_rows

    own = torch.tensor([[1.0, 5.0, -2.0], [3.0, 5.0, 2.0]])  # mu = (2, 5, 0), sigma = (sqrt 2, 0, 2 sqrt 2)
    g = torch.Generator().manual_seed(0)
    rows = fitted_gaussian_rows(own, collude=False, generator=g)
    assert rows.shape == (2, 3) and rows[:, 1].tolist() == [5.0, 5.0], "a constant coordinate has zero spread"
    big = fitted_gaussian_rows(own, collude=False, generator=g)
    many = torch.cat([fitted_gaussian_rows(own, collude=False, generator=g) for _ in range(4000)] + [big])
    torch.testing.assert_close(many.mean(0), torch.tensor([2.0, 5.0, 0.0]), atol=0.06, rtol=0.0)
    torch.testing.assert_close(many.std(0), torch.tensor([2**0.5, 0.0, 8**0.5]), atol=0.05, rtol=0.0)
    ctx = make_context(m=3, d=500, honest=False)
    out = build_attack("gaussian", mode="fitted").craft(ctx)
    assert out.shape == ctx.own_updates.shape and not torch.equal(out[0], out[1])
    joint = build_attack("gaussian", mode="fitted", collude=True).craft(ctx)
    assert torch.equal(joint[0], joint[2])


def test_fitted_gaussian_fits_every_clients_update_when_the_honest_ones_are_seen(build_attack, make_context) -> None:
    """Fang et al. fit the Gaussian to the before-attack models of all workers (omniscient), else the own ones."""
    ctx = make_context(m=3, d=4, honest=True)
    own = torch.zeros(3, 4)  # no spread in the own updates: a local-knowledge fit is a point mass at 0
    honest = torch.tensor([[4.0, 4.0, 4.0, 4.0], [8.0, 8.0, 8.0, 8.0]] * 3)
    seen = AttackContext(**{**vars(ctx), "own_updates": own, "honest_updates": honest})
    local = AttackContext(**{**vars(ctx), "own_updates": own, "honest_updates": None})
    attack = build_attack("gaussian", mode="fitted")
    assert torch.equal(attack.craft(local), torch.zeros(3, 4))
    draws = torch.cat([attack.craft(AttackContext(**{**vars(seen), "generator": torch.Generator().manual_seed(i)}))
                       for i in range(1500)])
    assert draws.shape == (4500, 4)
    # The 9 rows 4, 8, 4, 8, 4, 8, 0, 0, 0: mean 4, Bessel std sqrt(96 / 8) = 3.46 (the own rows alone: 0, 0).
    torch.testing.assert_close(draws.mean(0), torch.full((4,), 4.0), atol=0.25, rtol=0.0)
    torch.testing.assert_close(draws.std(0), torch.full((4,), 12.0**0.5), atol=0.12, rtol=0.0)


def test_free_rider_modes(build_attack, make_context) -> None:
    ctx = make_context(previous=True)
    assert torch.equal(build_attack("free_rider").craft(ctx), torch.zeros(3, 12))
    assert torch.equal(build_attack("free_rider", mode="stale").craft(ctx), ctx.previous_updates)
    assert torch.equal(build_attack("free_rider", mode="stale").craft(make_context()), torch.zeros(3, 12))
    rand = build_attack("free_rider", mode="random", std=2.0).craft(make_context(d=5000))
    assert rand.std().item() == pytest.approx(2.0, rel=0.05)
    joint = build_attack("free_rider", mode="random", collude=True).craft(ctx)
    assert torch.equal(joint[0], joint[2])
    assert build_attack("free_rider").trains is False


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nonfinite_sets_the_share_of_coordinates(build_attack, make_context, value) -> None:
    ctx = make_context(m=3, d=40)
    out = build_attack("nonfinite", value=value, coordinate_fraction=0.25).craft(ctx)
    bad = ~torch.isfinite(out)
    assert bad.sum(dim=1).tolist() == [10, 10, 10]
    expected = {"nan": "nan", "inf": "inf", "-inf": "-inf"}[value]
    assert {str(v) for v in out[bad].tolist()} == {expected}
    assert (out[~bad] == 0).all()  # free of training
    shared = build_attack("nonfinite", coordinate_fraction=0.25, collude=True).craft(ctx)
    assert torch.equal(torch.isnan(shared[0]), torch.isnan(shared[1]))
    assert torch.isnan(build_attack("nonfinite").craft(ctx)).all()


# ---- mimic ------------------------------------------------------------------------------------
def test_mimic_copies_the_honest_row_farthest_along_the_top_direction(build_attack) -> None:
    honest = torch.tensor([[0.0, 0.0], [0.1, 1.0], [-0.1, -1.2], [0.0, 0.1], [0.05, 3.0]])
    assert mimic_index(honest) == 4
    out = build_attack("mimic").craft(ctx_from(torch.zeros(2, 2), honest))
    assert out.tolist() == [honest[4].tolist()] * 2
    pinned = build_attack("mimic", copy_index=1).craft(ctx_from(torch.zeros(2, 2), honest))
    assert pinned.tolist() == [honest[1].tolist()] * 2


def test_mimic_index_agrees_with_a_naive_principal_direction() -> None:
    g = torch.Generator().manual_seed(4)
    honest = torch.randn(9, 30, generator=g, dtype=torch.float64)
    centred = honest - honest.mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    naive = int((centred @ vh[0]).abs().argmax())
    assert mimic_index(honest) == naive
