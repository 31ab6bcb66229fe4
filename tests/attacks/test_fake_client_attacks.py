"""Mechanism tests of ``mpaf``, ``poisoned_fl`` and ``audit_evasion`` on hand-built cases."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedpoison.attacks.audit_evasion import candidate, evasion_tails, worst_z
from fedpoison.attacks.min_max import perturbation
from fedpoison.attacks.poisoned_fl import binomial_99, got_through, sign_vector
from fedpoison.audit import build_auditor
from fedpoison.audit.signals import compute_signals, oriented_z
from fedpoison.config import AuditSection
from fedpoison.core.rows import cosine_to, row_norms
from fedpoison.testing import build_attack, make_attack_context, make_round_context


# ---- mpaf -------------------------------------------------------------------------------
def test_mpaf_row_is_lambda_times_base_minus_global() -> None:
    ctx = make_attack_context(m=2, k=3, d=5)
    rows = build_attack("mpaf", scale=7.0, base_std=0.0).craft(ctx)  # base model = 0
    torch.testing.assert_close(rows, (-7.0 * ctx.global_params).expand(2, 5))


def test_mpaf_base_model_is_fixed_for_the_campaign_whatever_the_round() -> None:
    attack = build_attack("mpaf", scale=3.0)
    campaign = torch.Generator().manual_seed(99)
    ctxs = [dataclasses.replace(make_attack_context(m=1, k=2, d=6, seed=s, round=r, generator_seed=r),
                                campaign_generator=campaign) for s, r in ((0, 0), (1, 5))]
    bases = [ctx.global_params + attack.craft(ctx)[0] / 3.0 for ctx in ctxs]
    torch.testing.assert_close(bases[0], bases[1])  # same base model in both rounds
    assert float(bases[0].std()) > 0.5  # a random N(0, 1) model, not the global one


# ---- poisoned_fl ------------------------------------------------------------------------
def _ctx(global_params: torch.Tensor, rnd: int, m: int = 2) -> object:
    d = global_params.numel()
    return dataclasses.replace(make_attack_context(m=m, k=0, d=d, honest=False, round=rnd),
                               global_params=global_params, campaign_generator=torch.Generator().manual_seed(5))


def test_poisoned_fl_keeps_one_sign_direction_and_sizes_by_the_global_step() -> None:
    d = 400
    attack = build_attack("poisoned_fl", scale=8.0, check_every=1000)
    s = sign_vector(d, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    w = torch.zeros(d)
    first = attack.craft(_ctx(w, 0))
    assert torch.count_nonzero(first) == 0  # nothing to size the row by yet
    signs = None
    for rnd in range(1, 5):
        step = torch.randn(d, generator=g) * (rnd * 0.1)
        w = w + step
        rows = attack.craft(_ctx(w, rnd))
        assert torch.equal(rows[0], rows[1])
        nz = rows[0] != 0
        row_signs = torch.sign(rows[0])
        signs = row_signs if signs is None else signs
        assert torch.equal(row_signs[nz], signs[nz])  # one direction in every round
        assert int(nz.sum()) > 0.9 * d
        torch.testing.assert_close(torch.linalg.vector_norm(rows[0]), 8.0 * torch.linalg.vector_norm(step))
    assert s.shape == (d,)


def test_poisoned_fl_magnitudes_follow_the_unexplained_global_change() -> None:
    attack = build_attack("poisoned_fl", scale=1.0, check_every=1000)
    attack.craft(_ctx(torch.zeros(3), 0))
    r1 = attack.craft(_ctx(torch.tensor([3.0, 0.0, 4.0]), 1))[0]
    torch.testing.assert_close(r1.abs(), torch.tensor([3.0, 0.0, 4.0]))  # v = |g| first: c * |g| * |g| / |g|
    # next global change g2; last row r1 rescaled to |g2| is subtracted: v = |g2 - r1 * |g2| / |r1||
    g2 = torch.tensor([0.0, 5.0, 0.0])
    r2 = attack.craft(_ctx(torch.tensor([3.0, 5.0, 4.0]), 2))[0]
    v = (g2 - r1 * 5.0 / 5.0).abs()
    torch.testing.assert_close(r2.abs(), 5.0 * v / torch.linalg.vector_norm(v))


def test_poisoned_fl_shrinks_its_scale_only_when_the_direction_did_not_get_through() -> None:
    d = 2000
    probe = build_attack("poisoned_fl", scale=8.0, check_every=2)
    s = probe.signs(_ctx(torch.zeros(d), 0))
    for aligned, expect in ((True, [8.0, 8.0, 8.0]), (False, [8.0, 5.6, 3.92])):
        attack = build_attack("poisoned_fl", scale=8.0, check_every=2)
        w, seen = torch.zeros(d), []
        for rnd in range(5):
            attack.craft(_ctx(w, rnd))
            seen.append(attack.c)
            w = w + 0.01 * (s if aligned else -s)
        assert seen[::2] == pytest.approx(expect)
    floor = build_attack("poisoned_fl", scale=0.6, check_every=1)
    for rnd in range(4):
        floor.craft(_ctx(-0.01 * rnd * s, rnd))
    assert floor.c == pytest.approx(0.6)  # 0.7 * 0.6 < 0.5: never below the authors' floor


def test_poisoned_fl_sign_test_uses_the_binomial_99_quantile() -> None:
    s = torch.ones(100)
    agree = torch.cat([torch.ones(62), -torch.ones(38)])
    assert binomial_99(100) == pytest.approx(61.63, abs=0.01)
    assert got_through(agree, s) and not got_through(torch.cat([torch.ones(61), -torch.ones(39)]), s)


def test_poisoned_fl_state_round_trips() -> None:
    a = build_attack("poisoned_fl", check_every=1)
    for rnd, w in enumerate((torch.zeros(4), torch.ones(4), torch.tensor([2.0, 0.0, 1.0, 3.0]))):
        a.craft(_ctx(w, rnd))
    b = build_attack("poisoned_fl", check_every=1)
    b.load_state_dict(a.state_dict())
    nxt = _ctx(torch.tensor([1.0, 1.0, 1.0, 1.0]), 3)
    assert torch.equal(a.craft(nxt), b.craft(nxt))


# ---- audit_evasion ----------------------------------------------------------------------
def _honest(k: int = 12, d: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g) + 0.5 * torch.randn(k, d, generator=g)


@pytest.mark.parametrize("direction", ["std", "sign", "unit_vec"])
def test_audit_evasion_rows_stay_inside_every_audited_range(direction: str) -> None:
    honest = _honest()
    ctx = dataclasses.replace(make_attack_context(m=3, k=12, d=40), honest_updates=honest)
    attack = build_attack("audit_evasion", direction=direction)
    rows = attack.craft(ctx)
    assert attack.last_gamma is not None and attack.last_gamma > 0.1  # it does deviate
    allrows = torch.cat([honest, rows])
    sig = compute_signals(allrows, ["norm", "cosine", "distance", "krum", "sign_agreement"])
    for name, tail in evasion_tails(list(sig)).items():
        assert float(oriented_z(sig[name], tail)[12:].max()) <= 0.8 * 3.0 + 1e-6, name
    # the row is mu + gamma p at the honest median norm; twice gamma breaks some audited range
    h = honest.double()
    norm = float(row_norms(h).median())
    pert = perturbation(h, direction)
    torch.testing.assert_close(rows[0].double(), candidate(h.mean(dim=0), pert, attack.last_gamma, norm))
    assert float(rows[0].norm()) == pytest.approx(norm, rel=1e-5)
    doubled = candidate(h.mean(dim=0), pert, 2 * attack.last_gamma, norm)
    assert worst_z(h, doubled.expand(3, 40), evasion_tails(list(sig))) > 0.8 * 3.0


def test_audit_evasion_against_a_norm_only_auditor_turns_the_row_around_at_an_honest_norm() -> None:
    honest = _honest()
    ctx = dataclasses.replace(make_attack_context(m=3, k=12, d=40), honest_updates=honest)
    attack = build_attack("audit_evasion", signals=["norm"], direction="unit_vec")
    row = attack.craft(ctx)[0]
    mean = honest.mean(dim=0)
    assert attack.last_gamma == pytest.approx(20.0, abs=0.01)  # unconstrained: the search's ceiling
    assert float(cosine_to(row[None], mean)[0]) < -0.99  # the mean's direction, reversed
    assert float(row.norm()) == pytest.approx(float(row_norms(honest).median()), rel=1e-5)


@pytest.mark.parametrize("auditor", ["norm_mad", "multi_signal"])
def test_audit_evasion_rows_pass_the_real_auditors_while_scaled_rows_do_not(auditor: str) -> None:
    honest = _honest(k=15, d=60, seed=3)
    ctx = dataclasses.replace(make_attack_context(m=3, k=15, d=60), honest_updates=honest)
    rows = build_attack("audit_evasion").craft(ctx)
    for crafted, caught in ((rows, False), (10.0 * honest[:3], True)):
        aud = build_auditor(AuditSection(name=auditor, policy="flag"), num_clients=18)
        assert aud is not None
        x = torch.cat([honest, crafted])
        decision = aud.screen(x, torch.ones(18), make_round_context(18, 60))
        assert bool(decision.flagged[15:].any()) is caught
