"""Mechanism tests of ``three_dfed``: indicators, feedback, decoys, noise masks, norm clipping."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedpoison.attacks.three_dfed import classify_feedback, norm_clip, zero_sum_masks
from fedpoison.core.rows import cosine_to, row_norms
from fedpoison.testing import build_attack, make_attack_context

D = 40


def _own(m: int, seed: int = 0) -> torch.Tensor:
    """Backdoor rows that never move coordinates 0..5: the low-importance ones."""
    rows = torch.randn(m, D, generator=torch.Generator().manual_seed(seed)) + 1.0
    rows[:, :6] = 0.0
    return rows


def _ctx(own: torch.Tensor, w: torch.Tensor, rnd: int, n: int = 10, lr: float = 1.0) -> object:
    base = make_attack_context(m=own.shape[0], k=0, d=D, honest=False, round=rnd, server_lr=lr,
                               generator_seed=rnd)
    return dataclasses.replace(base, own_updates=own, global_params=w, num_participants=n)


def _attack(**params: object) -> object:
    return build_attack("three_dfed", mask_fraction=3 / D, **params)


def test_each_row_carries_its_indicator_on_a_low_importance_coordinate() -> None:
    attack = _attack(indicator_scale=2.0)
    rows = attack.craft(_ctx(_own(3), torch.zeros(D), 0))
    assert attack.indicators == [0, 1, 2]  # coordinates nobody moved, ties by index
    for j in range(3):
        others = torch.cat([rows[j, :j], rows[j, j + 1:]])
        assert float(rows[j, j]) == pytest.approx(2.0 * float(others.abs().max()))
        assert torch.count_nonzero(rows[torch.arange(3) != j, j]) == 0  # only row j marks coordinate j


def test_feedback_tells_accepted_clipped_and_rejected_rows_apart() -> None:
    attack, own, lr, n = _attack(), _own(3), 0.5, 10
    w0 = torch.zeros(D)
    rows = attack.craft(_ctx(own, w0, 0, n=n, lr=lr))
    # the server averages n rows: row 0 as sent, row 1 clipped to half, row 2 dropped; honest rows are zero
    w1 = w0 + lr * (rows[0] + 0.5 * rows[1]) / n
    attack.craft(_ctx(own, w1, 1, n=n, lr=lr))
    assert attack.last_status == ["accepted", "clipped", "rejected"]
    assert attack.num_decoy == 0  # a backdoor row got through: no decoy needed


def test_no_row_through_adds_a_decoy_and_an_accepted_decoy_removes_it() -> None:
    attack, own = _attack(decoy_scale=3.0), _own(3)
    attack.craft(_ctx(own, torch.zeros(D), 0))
    rows = attack.craft(_ctx(own, torch.zeros(D), 1))  # nothing reached the global model
    assert attack.last_status == ["rejected"] * 3 and attack.num_decoy == 1
    assert attack.decoys == [False, False, True]
    backdoor_mean = rows[:2].mean(dim=0)
    decoy = rows[2].clone()
    decoy[attack.indicators[2]] = 0.0
    expect = 3.0 * backdoor_mean
    expect[attack.indicators] = 0.0
    expect[attack.indicators[2]] = 0.0
    # the decoy is the scaled backdoor mean (indicators aside; the masks sum to zero over the backdoor rows)
    keep = torch.ones(D, dtype=torch.bool)
    keep[attack.indicators] = False
    torch.testing.assert_close(decoy[keep], expect[keep])
    # only the decoy gets through: the attacker drops it again
    w = torch.zeros(D) + 1.0 * rows[2] / 10
    attack.craft(_ctx(own, w, 2))
    assert attack.last_status[2] == "accepted" and attack.num_decoy == 0


def test_alpha_is_redrawn_when_too_few_backdoor_rows_are_accepted() -> None:
    attack = _attack(alpha=0.99, alpha_min=0.5)
    own = _own(4)
    rows = attack.craft(_ctx(own, torch.zeros(D), 0))
    attack.craft(_ctx(own, rows[0] / 10, 1))  # 1 of 4 accepted
    assert attack.alpha != 0.99 and 0.5 <= attack.alpha <= 0.99
    kept = build_attack("three_dfed", mask_fraction=3 / D, alpha=0.95)
    rows = kept.craft(_ctx(own, torch.zeros(D), 0))
    kept.craft(_ctx(own, rows.sum(dim=0) / 10, 1))  # all accepted
    assert kept.last_status == ["accepted"] * 4 and kept.alpha == 0.95


def test_noise_masks_sum_to_zero_live_on_their_coordinates_and_set_the_cosine() -> None:
    rows = _own(5)
    coords = torch.arange(6, 30)
    masks = zero_sum_masks(rows, coords, 0.8, torch.Generator().manual_seed(0))
    torch.testing.assert_close(masks.sum(dim=0), torch.zeros(D), atol=1e-5, rtol=0)
    outside = torch.ones(D, dtype=torch.bool)
    outside[coords] = False
    assert torch.count_nonzero(masks[:, outside]) == 0
    b = rows.mean(dim=0)
    rms = torch.sqrt((row_norms(masks) ** 2).mean())
    torch.testing.assert_close(rms, torch.tensor(float(b.norm()) * (1 / 0.8**2 - 1) ** 0.5), rtol=1e-4, atol=0)
    # rows that are all the same direction b: cosine of b + mask to b is alpha when the mask is orthogonal to b
    same = b.expand(5, D).clone()
    same[:, coords] = 0.0
    m2 = zero_sum_masks(same, coords, 0.8, torch.Generator().manual_seed(1))
    assert float((same + m2).mean(dim=0).sub(same[0]).abs().max()) < 1e-5  # the average is the backdoor row
    cos = cosine_to(same + m2, same[0])
    assert float(cos.mean()) == pytest.approx(0.8, abs=0.05) and float(cos.max()) < 0.95
    assert torch.count_nonzero(zero_sum_masks(rows[:1], coords, 0.8, torch.Generator())) == 0


def test_norm_clip_bounds_large_rows_and_lifts_small_ones_by_at_most_the_cap() -> None:
    rows = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.03, 0.04]])
    out = norm_clip(rows, 2.0, 5.0)
    torch.testing.assert_close(row_norms(out), torch.tensor([2.0, 2.0, 0.25]))


def test_classify_feedback_treats_non_finite_feedback_as_rejected() -> None:
    assert classify_feedback(torch.tensor([float("nan"), 0.1]), 0.01) == ["rejected", "accepted"]


def test_state_round_trips() -> None:
    a, own = _attack(), _own(3)
    a.craft(_ctx(own, torch.zeros(D), 0))
    b = _attack()
    b.load_state_dict(a.state_dict())
    w = torch.full((D,), 0.01)
    assert torch.equal(a.craft(_ctx(own, w, 1)), b.craft(_ctx(own, w, 1)))
