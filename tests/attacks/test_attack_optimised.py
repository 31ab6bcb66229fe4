"""The optimised attacks meet their own objectives: Fang's Krum and Trim attacks, Min-Max and Min-Sum.

Krum, the median and the trimmed mean come from :mod:`fedpoison.defenses`; a
naive Krum written here with loops checks the attack's own Krum too.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from fedpoison.attacks import AttackContext
from fedpoison.attacks.fang import (
    KrumSearch,
    change_direction,
    fang_krum_lambda_max,
    fang_krum_partial_rows,
    fang_krum_rows,
    fang_trim_full,
    krum_picks_crafted,
)
from fedpoison.attacks.min_max import min_max_condition, perturbation, search_gamma
from fedpoison.core.rows import cross_sq_distances, krum_scores, pairwise_sq_distances
from fedpoison.defenses import RULES, Defense, RoundContext
from fedpoison.errors import ConfigError


def naive_krum(rows: torch.Tensor, f: int) -> int:
    """Blanchard et al.'s Krum with Python loops: lowest sum of sq. distances to n - f - 2 nearest."""
    n = rows.shape[0]
    best, best_score = -1, math.inf
    for i in range(n):
        d = sorted(float(((rows[i] - rows[j]) ** 2).sum()) for j in range(n) if j != i)
        score = sum(d[: n - f - 2])
        if score < best_score:
            best, best_score = i, score
    return best


def round_ctx(n: int, d: int) -> RoundContext:
    return RoundContext(0, torch.arange(n), torch.Generator().manual_seed(0), torch.zeros(d))


def rule(name: str, f: int):
    entry = RULES.get(name)
    return entry.obj(entry.params(), f=f)


def spread_context(
    *, m: int, k: int, d: int, seed: int = 0, honest: bool = True, signal: float = 0.5, **kw
) -> AttackContext:
    """Rows around a common direction (of size ``signal`` per coordinate) with unit client spread."""
    g = torch.Generator().manual_seed(seed)
    direction = signal * torch.randn(d, generator=g)
    own = direction + torch.randn(m, d, generator=g)
    hon = direction + torch.randn(k, d, generator=g)
    return AttackContext(
        round=0,
        own_updates=own,
        own_weights=torch.ones(m),
        honest_updates=hon if honest else None,
        honest_weights=torch.ones(k) if honest else None,
        num_participants=m + k,
        global_params=torch.randn(d, generator=g),
        server_lr=1.0,
        generator=torch.Generator().manual_seed(seed + 1),
        **kw,
    )


# ---- Fang: Krum attack -----------------------------------------------------------------
def test_krum_scores_match_the_naive_loop() -> None:
    rows = torch.randn(9, 6, generator=torch.Generator().manual_seed(2))
    assert int(krum_scores(pairwise_sq_distances(rows), 2).argmin()) == naive_krum(rows, 2)


def test_lambda_max_by_hand() -> None:
    # Three benign updates on a line in d = 4, n = 7 participants, c = 2 attackers:
    # n - c - 2 = 3 neighbours clipped to the 2 others; n - 2c - 1 = 2.
    benign = torch.tensor([[0.0, 0, 0, 0], [1.0, 0, 0, 0], [3.0, 0, 0, 0]])
    # min_i sum of distances to the others: row 1 -> 1 + 2 = 3; max norm = 3; sqrt(d) = 2.
    expected = 3 / (2 * 2) + 3 / 2
    assert fang_krum_lambda_max(benign, num_participants=7, num_malicious=2) == pytest.approx(expected)


def _slow_fang_krum_search(benign: torch.Tensor, c: int, n: int, threshold: float = 1e-5) -> tuple[torch.Tensor, float]:
    """The search as first written: every halving rebuilds all rows and recomputes every distance (float64)."""
    s = change_direction(benign)
    lam = fang_krum_lambda_max(benign, num_participants=n, num_malicious=c)
    while lam >= threshold:
        rows = (-lam * s).repeat(c, 1)
        if krum_picks_crafted(benign.double(), rows.double(), c, neighbours=n - c - 2):
            return rows, lam
        lam /= 2.0
    return (-lam * s).repeat(c, 1), lam


@pytest.mark.parametrize("seed", range(12))
def test_fast_krum_search_finds_the_slow_searchs_lambda_and_rows(seed: int) -> None:
    """KrumSearch computes the benign distances once; lambda and output equal the full recomputation's."""
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(3, 30, (1,), generator=g))
    c = int(torch.randint(1, max(2, k // 2), (1,), generator=g))
    d = int(torch.randint(5, 400, (1,), generator=g))
    centre = torch.randn(d, generator=g) * float(torch.rand(1, generator=g)) * 3
    benign = centre + torch.randn(k, d, generator=g) * (0.1 + float(torch.rand(1, generator=g)))
    fast_rows, fast_lam = fang_krum_rows(benign, num_malicious=c, num_participants=k + c)
    slow_rows, slow_lam = _slow_fang_krum_search(benign, c, k + c)
    assert fast_lam == slow_lam
    assert torch.equal(fast_rows, slow_rows)


def test_krum_search_distances_equal_the_materialised_rows() -> None:
    g = torch.Generator().manual_seed(5)
    benign, t = torch.randn(6, 9, generator=g), torch.randn(9, generator=g)
    search = KrumSearch(benign, t)
    rows = torch.cat([benign, (0.7 * t).repeat(3, 1)])
    torch.testing.assert_close(search.sq_distances(0.7, 3), pairwise_sq_distances(rows.double()), atol=1e-5, rtol=0)
    for lam in (4.0, 1.0, 0.25, 0.01):
        crafted = (lam * t.double()).repeat(3, 1)
        assert search.picks_crafted(lam, 3, f=3) == krum_picks_crafted(benign.double(), crafted, 3)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fang_krum_full_knowledge_is_selected_by_krum(build_attack, seed) -> None:
    m, k, d = 4, 15, 30
    ctx = spread_context(m=m, k=k, d=d, seed=seed)
    attack = build_attack("fang_krum")
    rows = attack.craft(ctx)
    assert rows.shape == (m, d)
    assert torch.equal(rows, rows[:1].expand(m, d))  # identical copies
    lam = attack.last_lambda
    s = change_direction(ctx.honest_updates)
    torch.testing.assert_close(rows[0], -lam * s)
    pool = torch.cat([ctx.honest_updates, rows])
    assert naive_krum(pool, m) >= k
    result = rule("krum", m)(pool, torch.ones(k + m), round_ctx(k + m, d))
    assert bool(result.selected[k:].any()) and not bool(result.selected[:k].any())
    lam_max = fang_krum_lambda_max(ctx.honest_updates, num_participants=k + m, num_malicious=m)
    halvings = round(math.log2(lam_max / lam))
    assert lam == pytest.approx(lam_max / 2**halvings)
    if halvings > 0:  # the previous, larger lambda was not selected
        bigger = torch.cat([ctx.honest_updates, (-2 * lam * s).expand(m, d)])
        assert naive_krum(bigger, m) < k


def test_fang_krum_gives_up_below_the_threshold_when_krum_never_picks_it(build_attack) -> None:
    # Benign updates tightly clustered far from zero: no -lambda*s near the global model wins Krum.
    ctx = spread_context(m=2, k=15, d=30, signal=5.0)
    attack = build_attack("fang_krum", threshold=1e-3)
    rows = attack.craft(ctx)
    assert attack.last_lambda < 1e-3
    assert naive_krum(torch.cat([ctx.honest_updates, rows]), 2) < 15
    assert float(rows.abs().max()) < 1e-3


def test_partial_knowledge_krum_simulates_one_crafted_model_among_the_own() -> None:
    """Fang et al. Eq. 4: Krum (f = 1) over the c own rows plus ONE crafted row, lambda halved from the bound.

    With c identical copies in the check, every copy would score ~0 and any lambda would pass.
    """
    g = torch.Generator().manual_seed(0)
    c, d = 6, 40
    own = 0.05 + 0.3 * torch.randn(c, d, generator=g)  # spread around the global model
    rows, lam, supporters = fang_krum_partial_rows(own, num_malicious=c)
    s = change_direction(own)
    assert supporters == 1
    assert rows.shape == (c, d)
    torch.testing.assert_close(rows, (-lam * s).expand(c, d))
    one = (-lam * s)[None, :].double()
    assert krum_picks_crafted(own.double(), one, 1), "Krum over the own rows + 1 copy selects the copy"
    lam_max = fang_krum_lambda_max(own, num_participants=c + 1, num_malicious=1)
    halvings = round(math.log2(lam_max / lam))
    assert lam == pytest.approx(lam_max / 2**halvings)
    assert halvings > 0, "this bound is too large for one crafted row: the search halves"
    assert not krum_picks_crafted(own.double(), 2 * one, 1), "the previous, larger lambda was not selected"
    assert krum_picks_crafted(own.double(), (2 * one).expand(c, d), c), "c copies would have accepted it"


def test_partial_knowledge_krum_adds_supporters_only_when_one_crafted_row_never_wins() -> None:
    # Own rows in a tight cluster far from the global model: a crafted row near zero wins Krum (f = k,
    # c - 2 neighbours) only once its k - 1 identical supporters fill all c - 2 neighbour slots.
    g = torch.Generator().manual_seed(1)
    c, d = 5, 30
    own = 3.0 + 0.01 * torch.randn(c, d, generator=g)
    s = change_direction(own)
    assert not krum_picks_crafted(own.double(), (-1e-5 * s)[None, :].double(), 1)
    rows, lam, supporters = fang_krum_partial_rows(own, num_malicious=c, threshold=1e-5)
    assert supporters == c - 1
    assert lam >= 1e-5
    assert krum_picks_crafted(own.double(), (-lam * s).expand(c - 1, d).double(), c - 1)
    assert not krum_picks_crafted(own.double(), (-lam * s).expand(c - 2, d).double(), c - 2)
    torch.testing.assert_close(rows, (-lam * s).expand(c, d))


def test_fang_krum_partial_knowledge_uses_only_the_own_updates(build_attack) -> None:
    local = spread_context(m=4, k=15, d=30, honest=False)
    attack = build_attack("fang_krum")
    rows = attack.craft(local)  # auto: partial under local knowledge
    s = change_direction(local.own_updates)
    torch.testing.assert_close(rows[0], -attack.last_lambda * s)
    with pytest.raises(ConfigError, match=re.escape("attack.variant: 'full' needs the honest updates")):
        build_attack("fang_krum", variant="full").craft(local)
    seen = spread_context(m=4, k=15, d=30)
    shifted = AttackContext(**{**vars(seen), "honest_updates": 3 * seen.honest_updates + 1})
    partial = build_attack("fang_krum", variant="partial")
    torch.testing.assert_close(partial.craft(seen), rows)
    torch.testing.assert_close(partial.craft(shifted), rows)


def test_fang_krum_defense_aware_asks_the_server_rule(build_attack) -> None:
    m, k, d = 3, 12, 20
    base = spread_context(m=m, k=k, d=d)
    krum = Defense(rule("krum", m), name="krum", f=m)
    ctx = spread_context(m=m, k=k, d=d, defense=krum, defense_ctx=round_ctx(k + m, d))
    via_defense = build_attack("fang_krum").craft(ctx)
    torch.testing.assert_close(via_defense, build_attack("fang_krum").craft(base))

    calls = []

    def small_norms_only(updates, weights, rctx):  # a stub rule: selects rows of norm <= 1
        calls.append(updates.shape)
        sel = updates.norm(dim=1) <= 1.0
        return type("R", (), {"selected": sel})()

    ctx2 = spread_context(m=m, k=k, d=d, defense=small_norms_only, defense_ctx=round_ctx(k + m, d))
    attack = build_attack("fang_krum")
    rows = attack.craft(ctx2)
    assert calls and all(shape == (k + m, d) for shape in calls)
    assert rows[0].norm() <= 1.0 < 2 * rows[0].norm()  # the largest halving that passes


# ---- Fang: Trim attack -------------------------------------------------------------------
@pytest.mark.parametrize("space", ["model", "update"])
def test_fang_trim_full_goes_beyond_the_benign_extremes(build_attack, space) -> None:
    m, k, d = 4, 16, 200
    ctx = spread_context(m=m, k=k, d=d)
    rows = build_attack("fang_trim", space=space).craft(ctx)
    hon = ctx.honest_updates
    s = change_direction(hon)
    up, down = s < 0, s > 0
    assert (rows[:, up] >= hon.max(dim=0).values[up] - 1e-6).all()
    assert (rows[:, down] <= hon.min(dim=0).values[down] + 1e-6).all()
    base = ctx.global_params if space == "model" else torch.zeros(d)
    w_max = (hon + base).max(dim=0).values
    w_min = (hon + base).min(dim=0).values
    models = rows + base
    hi_up = torch.where(w_max > 0, 2 * w_max, w_max / 2)
    lo_down = torch.where(w_min > 0, w_min / 2, 2 * w_min)
    assert (models[:, up] <= hi_up[up] + 1e-5).all()
    assert (models[:, down] >= lo_down[down] - 1e-5).all()
    assert not torch.equal(rows[0], rows[1])  # each attacker draws its own values


@pytest.mark.parametrize("name", ["median", "trimmed_mean"])
def test_fang_trim_moves_median_and_trimmed_mean_against_the_benign_direction(build_attack, name) -> None:
    m, k, d = 4, 16, 300
    ctx = spread_context(m=m, k=k, d=d)
    rows = build_attack("fang_trim", space="update").craft(ctx)
    agg = rule(name, m)
    clean = agg(torch.cat([ctx.honest_updates, ctx.own_updates]), torch.ones(k + m), round_ctx(k + m, d)).aggregate
    attacked = agg(torch.cat([ctx.honest_updates, rows]), torch.ones(k + m), round_ctx(k + m, d)).aggregate
    s = change_direction(ctx.honest_updates)
    shift = s * (attacked - clean)
    assert (shift <= 1e-6).float().mean() > 0.95
    assert float(shift.mean()) < 0


def test_fang_trim_partial_draws_three_to_four_std_from_the_own_mean(build_attack) -> None:
    ctx = spread_context(m=5, k=10, d=100, honest=False)
    rows = build_attack("fang_trim").craft(ctx)
    own = ctx.own_updates
    mu, sigma = own.mean(dim=0), own.std(dim=0)
    s = change_direction(own)
    z = (rows - mu) / sigma
    up = (s < 0).expand_as(z)
    assert ((z >= 3 - 1e-4) & (z <= 4 + 1e-4))[up].all()
    assert ((z >= -4 - 1e-4) & (z <= -3 + 1e-4))[~up].all()


def test_fang_trim_full_helper_with_known_extremes() -> None:
    benign = torch.tensor([[1.0, -1.0], [2.0, -3.0]])  # mean (1.5, -2): s = (+1, -1)
    out = fang_trim_full(benign, torch.zeros(2), 50, b=2.0, generator=torch.Generator().manual_seed(0))
    # coordinate 0: s = +1, w_min = 1 > 0 -> [0.5, 1]; coordinate 1: s = -1, w_max = -1 < 0 -> [-1, -0.5]
    assert ((out[:, 0] >= 0.5) & (out[:, 0] <= 1.0)).all()
    assert ((out[:, 1] >= -1.0) & (out[:, 1] <= -0.5)).all()


# ---- Min-Max / Min-Sum ------------------------------------------------------------------------
def test_perturbation_directions_by_hand() -> None:
    benign = torch.tensor([[3.0, 0.0], [3.0, 8.0]])  # mean (3, 4), std (0, 5.657)
    torch.testing.assert_close(perturbation(benign, "unit_vec"), torch.tensor([-0.6, -0.8]))
    torch.testing.assert_close(perturbation(benign, "sign"), torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(perturbation(benign, "std"), -benign.std(dim=0))


def test_search_gamma_finds_the_threshold() -> None:
    assert search_gamma(lambda g: g <= 3.7, gamma_init=10.0, tau=1e-7) == pytest.approx(3.7, abs=1e-6)
    assert search_gamma(lambda g: False, gamma_init=10.0, tau=1e-5) == 0.0
    assert search_gamma(lambda g: True, gamma_init=10.0, tau=1e-5) == pytest.approx(20.0, abs=1e-4)


@pytest.mark.parametrize("name", ["min_max", "min_sum"])
@pytest.mark.parametrize("direction", ["unit_vec", "std", "sign"])
def test_min_max_and_min_sum_meet_their_constraint_with_maximal_gamma(build_attack, name, direction) -> None:
    m, k, d = 3, 10, 25
    g = torch.Generator().manual_seed(5)
    hon = 0.2 * torch.randn(d, generator=g) + torch.randn(k, d, generator=g)
    ctx = spread_context(m=m, k=k, d=d)
    ctx = AttackContext(**{**vars(ctx), "honest_updates": hon})
    attack = build_attack(name, direction=direction, gamma_init=10.0, tau=1e-6)
    rows = attack.craft(ctx)
    assert torch.equal(rows, rows[:1].expand(m, d))
    d_hon = cross_sq_distances(hon.double(), hon.double())
    d_row = cross_sq_distances(rows[:1].double(), hon.double())[0]
    if name == "min_max":
        assert d_row.max() <= d_hon.max() * (1 + 1e-9)
    else:
        assert d_row.sum() <= d_hon.sum(dim=1).max() * (1 + 1e-9)
    gamma = attack.last_gamma
    assert 0 < gamma < 19.9
    ok = min_max_condition(hon, name)
    pert = perturbation(hon, direction)
    assert not ok(hon.mean(dim=0) + (gamma + 1e-3) * pert)
    torch.testing.assert_close(rows[0], hon.mean(dim=0) + gamma * pert)


def test_min_max_crafted_row_lies_at_the_edge_of_the_honest_cloud(build_attack) -> None:
    ctx = spread_context(m=2, k=12, d=40)
    rows = build_attack("min_max").craft(ctx)
    hon = ctx.honest_updates
    worst = cross_sq_distances(rows[:1].double(), hon.double()).max().sqrt()
    assert worst == pytest.approx(float(cross_sq_distances(hon.double(), hon.double()).max().sqrt()), rel=1e-3)
