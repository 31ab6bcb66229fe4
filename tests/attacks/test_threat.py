"""The threat model's rules (attacks/threat.py), shared by the round loop and the Flower adapter."""

from __future__ import annotations

import pytest
import torch

from fedpoison.attacks import Knowledge
from fedpoison.attacks.threat import (
    attack_active,
    check_crafted,
    choose_malicious,
    malicious_count,
    sees_honest_updates,
)
from fedpoison.config import AttackSection
from fedpoison.errors import UpdateError
from fedpoison.plugins import load_config


def test_schedule_by_hand() -> None:
    a = AttackSection(name="sign_flip", start_round=2, end_round=9, every=3)
    assert [r for r in range(12) if attack_active(a, 0, r)] == [2, 5, 8]
    assert not any(attack_active(AttackSection(name="none"), 0, r) for r in range(5))


def test_probability_is_one_seeded_draw_per_round() -> None:
    a = AttackSection(name="sign_flip", probability=0.5)
    fired = [attack_active(a, 7, r) for r in range(200)]
    assert fired == [attack_active(a, 7, r) for r in range(200)]  # the same seed, the same rounds
    assert 60 < sum(fired) < 140
    assert fired != [attack_active(a, 8, r) for r in range(200)]  # another seed, other rounds


def test_count_and_choice_of_malicious_clients() -> None:
    assert malicious_count(AttackSection(name="sign_flip", fraction=0.25), 10) == 2  # round(2.5) = 2
    assert malicious_count(AttackSection(name="sign_flip", fraction=0.9, count=3), 10) == 3
    assert malicious_count(AttackSection(name="none", count=3), 10) == 0
    ids = choose_malicious(10, 3, seed=4)
    assert ids.dtype == torch.int64 and ids.tolist() == sorted(set(ids.tolist())) and len(ids) == 3
    assert torch.equal(ids, choose_malicious(10, 3, seed=4))
    assert choose_malicious(10, 0, seed=4).tolist() == []
    # the federation draws with the same rule
    from fedpoison.simulation.federation import build_federation

    cfg = load_config(None, {"clients.num": 10, "rounds": 1, "attack.name": "sign_flip", "attack.count": 3, "seed": 4})
    assert build_federation(cfg).malicious.tolist() == ids.tolist()
    with pytest.raises(ValueError, match="count <= 10, got 11"):
        choose_malicious(10, 11, seed=0)


def test_crafted_shape_check_names_the_attack_and_the_shapes() -> None:
    ok = torch.zeros(2, 5)
    assert check_crafted(ok, 2, 5, attack="x") is ok
    with pytest.raises(UpdateError, match=r"attack 'evil': expected crafted updates of shape \(2, 5\), got \(2, 4\)"):
        check_crafted(torch.zeros(2, 4), 2, 5, attack="evil")
    with pytest.raises(UpdateError, match="got list"):
        check_crafted([[0.0] * 5] * 2, 2, 5, attack="evil")


def test_knowledge_order() -> None:
    assert [k.level for k in Knowledge] == [0, 1, 2]
    assert [sees_honest_updates(k) for k in ("local", "omniscient", "defense_aware")] == [False, True, True]
