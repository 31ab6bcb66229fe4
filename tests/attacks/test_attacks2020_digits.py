"""The digits versions of the Fashion-MNIST checks of neurotoxin, pgd_backdoor and cerberus.

Same runs as ``examples/attacks2020/checks.py --dataset digits`` (its settings
are imported, so the two cannot drift). Each run takes 5-20 s, hence ``slow``.
Checks that did not hold when measured are ``xfail`` with the figures measured
(docs/attacks.md lists them); they are kept so that a change that makes them
hold shows up.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

import fedpoison

pytestmark = pytest.mark.slow

_SPEC = importlib.util.spec_from_file_location(
    "attacks2020_checks", Path(__file__).resolve().parents[2] / "examples" / "attacks2020" / "checks.py")
assert _SPEC is not None and _SPEC.loader is not None
checks: Any = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(checks)

_CACHE: dict[str, fedpoison.RunResult] = {}


def run(group: str, name: str) -> fedpoison.RunResult:
    if name not in _CACHE:
        overrides = [*checks.RUNS[group][name], *checks.DIGITS_ROUNDS[group]]
        _CACHE[name] = fedpoison.run(overrides=[*checks.DIGITS, *overrides])
    return _CACHE[name]


def fedavg_check(name: str) -> tuple[float, float]:
    """(ASR, clean accuracy minus the no-attack run's) under FedAvg."""
    attacked, clean = run("a", f"a_{name}").summary, run("a", "a_none").summary
    return attacked["attack_success_rate"], attacked["final_accuracy"] - clean["final_accuracy"]


def test_neurotoxin_reaches_the_asr_at_little_accuracy_cost_under_fedavg() -> None:
    asr, gap = fedavg_check("neurotoxin")  # measured: 0.830, -0.007
    assert asr >= 0.8 and gap >= -0.03


@pytest.mark.xfail(reason="measured on digits: ASR 0.699 (clean accuracy -0.004): the PGD ball of the clean-update "
                          "norm halves the backdoor update (its unconstrained norm is about twice the clean one)",
                   strict=False)
def test_pgd_backdoor_reaches_the_asr_under_fedavg() -> None:
    asr, gap = fedavg_check("pgd_backdoor")
    assert asr >= 0.8 and gap >= -0.03


def test_cerberus_reaches_the_asr_under_fedavg() -> None:
    asr, gap = fedavg_check("cerberus")  # measured: 0.956, +0.003
    assert asr >= 0.8 and gap >= -0.03


def lifespans(group: str, attack: str) -> list[float]:
    return [run(group, f"{group}_{attack}_s{seed}").summary["backdoor_lifespan_10"] for seed in (0, 1, 2)]


@pytest.mark.xfail(reason="measured on digits (attack rounds 5-9 of 25): rounds to ASR < 0.1 of neurotoxin "
                          "6, 5, 1 against backdoor >= 15, 12, 3; the masked update also peaks lower "
                          "(0.31 against 0.52 on seed 0)", strict=False)
def test_neurotoxin_outlives_the_plain_backdoor() -> None:
    neuro, plain = lifespans("b", "neurotoxin"), lifespans("b", "backdoor")
    assert sum(neuro) > sum(plain)


def c_asr(defense: str, attack: str) -> float:
    return float(run("c", f"c_{defense}_{attack}").summary["attack_success_rate"])


def test_pgd_backdoor_beats_model_replacement_against_multi_krum() -> None:
    # measured: 0.863 against 0.002 (Multi-Krum drops the scaled rows)
    assert c_asr("multi_krum", "pgd_backdoor") > c_asr("multi_krum", "model_replacement")


@pytest.mark.xfail(reason="measured on digits: pgd_backdoor 0.722 against model_replacement 0.772 under "
                          "norm_bound (the clipped replacement update still carries the backdoor)", strict=False)
def test_pgd_backdoor_beats_model_replacement_against_norm_bound() -> None:
    assert c_asr("norm_bound", "pgd_backdoor") > c_asr("norm_bound", "model_replacement")
