"""Backdoor durability: lifespans on hand-built histories, and their table in a grid report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedpoison.metrics import summarize
from fedpoison.metrics.durability import durability_metrics, last_attack_round, lifespan
from fedpoison.results import load
from fedpoison.results.durability import durability_table
from fedpoison.results.report import write_report


def history(asr: list[float | None], active: list[bool], acc: float = 0.9) -> pd.DataFrame:
    n = len(asr)
    return pd.DataFrame({
        "round": range(n),
        "attack_active": active,
        "test_accuracy": [acc] * n,
        "test_loss": [0.3] * n,
        "attack_success_rate": [math.nan if a is None else a for a in asr],
    })


TIMINGS = pd.DataFrame({"round": range(8), "train_s": 0.1, "aggregate_s": 0.0, "eval_s": 0.0})


def test_lifespans_count_rounds_after_the_last_attacked_round() -> None:
    # attack in rounds 1-3; ASR 0.95 after round 3, then decays: < 0.5 after round 5, < 0.1 after round 7
    h = history([0.1, 0.6, 0.9, 0.95, 0.7, 0.45, 0.2, 0.05], [False, True, True, True] + [False] * 4)
    m = durability_metrics(h)
    assert m["backdoor_last_attack_round"] == 3.0
    assert m["backdoor_asr_at_last_attack"] == 0.95
    assert (m["backdoor_lifespan_50"], m["backdoor_lifespan_50_censored"]) == (2.0, False)
    assert (m["backdoor_lifespan_10"], m["backdoor_lifespan_10_censored"]) == (4.0, False)


def test_a_backdoor_still_above_at_the_end_is_censored_at_the_rounds_observed() -> None:
    h = history([0.1, 0.9, 0.9, 0.8, 0.6, 0.55, 0.3, 0.2], [False, True] + [False] * 6)
    m = durability_metrics(h)
    assert (m["backdoor_lifespan_50"], m["backdoor_lifespan_50_censored"]) == (5.0, False)
    assert (m["backdoor_lifespan_10"], m["backdoor_lifespan_10_censored"]) == (6.0, True)  # a lower bound


def test_a_backdoor_never_established_has_lifespan_zero_and_no_attack_means_nan() -> None:
    m = durability_metrics(history([0.0, 0.3, 0.2, 0.1], [True, True, False, False]))
    assert (m["backdoor_lifespan_50"], m["backdoor_lifespan_50_censored"]) == (0.0, False)
    none = durability_metrics(history([0.05, 0.04, 0.03], [False, False, False]))
    assert math.isnan(none["backdoor_last_attack_round"]) and math.isnan(none["backdoor_lifespan_50"])
    assert durability_metrics(pd.DataFrame({"round": [0], "test_accuracy": [0.5]})) == {}


def test_attack_until_the_end_is_censored_with_nothing_observed() -> None:
    assert lifespan(np.array([0, 1, 2]), np.array([0.2, 0.9, 0.9]), 2, 0.5) == (0.0, True)
    assert last_attack_round(history([0.5] * 3, [True, True, True])) == 2


def test_sparse_evaluations_use_the_first_evaluated_round_below() -> None:
    # eval.every=2: rounds 0, 2, 4, 6 evaluated; last attack round 2
    h = history([0.1, None, 0.9, None, 0.6, None, 0.3, None], [True, True, True] + [False] * 5)
    m = durability_metrics(h)
    assert m["backdoor_lifespan_50"] == 4.0 and m["backdoor_lifespan_50_censored"] is False
    assert m["backdoor_lifespan_10"] == 4.0 and m["backdoor_lifespan_10_censored"] is True


def test_peak_asr_leaves_out_evaluations_before_the_first_attack() -> None:
    # an untrained model sends everything to the target in round 0 (ASR 1 at chance accuracy)
    h = history([1.0, 0.2, 0.6, 0.7, 0.3, 0.1], [False, False, True, True, False, False])
    m = durability_metrics(h)
    assert m["backdoor_peak_asr"] == 0.7
    assert math.isnan(durability_metrics(history([1.0, 0.2], [False, False]))["backdoor_peak_asr"])


def test_summary_carries_the_durability_figures() -> None:
    s = summarize(history([0.1, 0.6, 0.9, 0.95, 0.7, 0.45, 0.2, 0.05], [False, True, True, True] + [False] * 4),
                  TIMINGS)
    assert s["backdoor_lifespan_50"] == 2.0 and s["max_attack_success_rate"] == 0.95


def test_durability_table_and_report(fake_store: Any, tmp_path: Path) -> None:
    runs = []
    stop = [False, True, True, True] + [False] * 4
    for seed, tail in ((0, [0.7, 0.45, 0.2, 0.05]), (1, [0.8, 0.7, 0.6, 0.55])):
        base = {"seed": seed, "defense.name": "mean"}
        runs.append(({**base, "attack.name": "none"}, history([None] * 8, [False] * 8, acc=0.9), None))
        runs.append(({**base, "attack.name": "backdoor", "attack.fraction": 0.25},
                     history([0.1, 0.6, 0.9, 0.95, *tail], stop, acc=0.88), None))
    store = fake_store(runs)
    results = load(store)
    table = durability_table(results)
    row = table[table["attack"].astype(str).str.startswith("backdoor")].iloc[0]
    # seed 0 crosses 0.5 after 2 rounds; seed 1 never does (censored at 4): mean 3, a lower bound
    assert row["rounds to ASR < 0.5"].startswith("≥ 3.000")
    assert row["clean-acc. cost"].startswith("0.020")
    assert row["peak ASR"].startswith("0.950")
    assert not table["attack"].astype(str).str.startswith("none").any()
    report = write_report(store, tmp_path / "rep")
    names = [t.name for t in report.tables]
    assert "backdoor_durability" in names
    html = report.html.read_text()
    assert "Backdoor durability" in html and "rounds to ASR &lt; 0.5" in html
    tex = (tmp_path / "rep").rglob("backdoor_durability.tex")
    assert "$\\geq$" in next(tex).read_text()
