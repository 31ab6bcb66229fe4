"""Slow: the digits acceptance numbers hold across seeds, not only for seed 0 (``pytest -m slow``)."""

from __future__ import annotations

import pytest

import fedpoison

SCALING = ["rounds=20", "attack.name=scaling", "attack.fraction=0.2", "attack.scale=10"]
AUDITS = {
    "norm_mad_quarantine": ["audit.name=norm_mad", "audit.policy=quarantine", "audit.quarantine_rounds=2"],
    "multi_signal_exclude": ["audit.name=multi_signal", "audit.policy=exclude"],
}


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 5))
@pytest.mark.parametrize("audit", sorted(AUDITS))
def test_scaling_is_caught_on_every_seed(seed: int, audit: str) -> None:
    clean = fedpoison.run(overrides=["rounds=20", f"seed={seed}"]).summary["final_accuracy"]
    s = fedpoison.run(overrides=[*SCALING, f"seed={seed}", *AUDITS[audit]]).summary
    assert s["detection_recall"] >= 0.9
    assert s["detection_fpr"] <= 0.05
    assert s["detection_max_rounds_to_detect"] <= 1
    assert s["final_accuracy"] >= clean - 0.03


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 4))
def test_alie_evades_norm_auditing_on_every_seed(seed: int) -> None:
    s = fedpoison.run(overrides=["rounds=20", f"seed={seed}", "attack.name=alie", "attack.fraction=0.2",
                                 "attack.knowledge=omniscient", *AUDITS["norm_mad_quarantine"]]).summary
    assert s["detection_recall"] <= 0.1
