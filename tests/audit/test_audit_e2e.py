"""Auditing on real data: digits, 20 clients, 4 of them (20%) attacking every round.

Each run takes one to two seconds on one CPU thread; runs are shared through
a module-level cache, so each is made once however many tests read it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import fedpoison
from fedpoison.attacks.threat import attack_active
from fedpoison.metrics.detection import detection_table, rounds_to_detection
from fedpoison.simulation import loop
from fedpoison.simulation.checkpoint import run_with_checkpoints
from fedpoison.simulation.federation import Federation

ROUNDS = 20
SCALING = ["attack.name=scaling", "attack.fraction=0.2", "attack.scale=10"]
ALIE = ["attack.name=alie", "attack.fraction=0.2", "attack.knowledge=omniscient"]
QUARANTINE = ["audit.name=norm_mad", "audit.policy=quarantine", "audit.quarantine_rounds=2"]

RUNS: dict[str, list[str]] = {
    "scaling_fedavg": SCALING,
    "scaling_flag_only": [*SCALING, "audit.name=norm_mad", "audit.policy=flag"],
    "scaling_quarantine": [*SCALING, *QUARANTINE],
    "scaling_multi_reputation": [*SCALING, "audit.name=multi_signal", "audit.policy=reputation"],
    "alie_quarantine": [*ALIE, *QUARANTINE],
    "alie_multi_flag": [*ALIE, "audit.name=multi_signal", "audit.policy=flag"],
}


@pytest.fixture(scope="module")
def runs() -> Callable[[str], fedpoison.RunResult]:
    cache: dict[str, fedpoison.RunResult] = {}

    def get(name: str) -> fedpoison.RunResult:
        if name not in cache:
            cache[name] = fedpoison.run(overrides=[f"rounds={ROUNDS}", *RUNS[name]])
        return cache[name]

    return get


@pytest.fixture(scope="module")
def clean_accuracy(digits_fedavg: fedpoison.RunResult) -> float:
    """The no-attack FedAvg run (the shared session fixture: same config, 20 rounds)."""
    assert digits_fedavg.config.rounds == ROUNDS and digits_fedavg.config.attack.name == "none"
    return float(digits_fedavg.summary["final_accuracy"])


def participants(result: fedpoison.RunResult) -> pd.DataFrame:
    c = result.clients
    return c[~c["quarantined"].eq(True)] if "quarantined" in c else c


# ---- scaling x10: norm auditing with quarantine ------------------------------------------
def test_every_scaling_attacker_is_flagged_within_two_rounds_of_its_first_attack(runs) -> None:
    res = runs("scaling_quarantine")
    delays = rounds_to_detection(res.clients)
    assert sorted(delays.index) == res.summary["malicious_clients"] and len(delays) == 4
    assert (delays < 2).all(), delays.to_dict()   # flagged in its first or second attacking round


def test_quarantine_run_recall_fpr_and_accuracy(runs, clean_accuracy: float) -> None:
    s = runs("scaling_quarantine").summary
    assert s["detection_recall"] >= 0.9
    assert s["detection_fpr"] <= 0.05
    assert s["detection_malicious_reached"] == 0.0
    assert s["final_accuracy"] >= clean_accuracy - 0.03, (s["final_accuracy"], clean_accuracy)


def test_quarantined_attackers_sit_out_then_come_back_and_get_longer_sentences(runs) -> None:
    c = runs("scaling_quarantine").clients
    attacker = runs("scaling_quarantine").summary["malicious_clients"][0]
    mine = c[c["client"] == attacker].set_index("round")
    quarantined = mine["quarantined"].eq(True)
    # flagged in round 0, out 2 rounds, back and flagged again in round 3, then out 4 rounds (growth 2)
    assert mine.loc[0, "flagged"] and quarantined.loc[1:2].all() and not quarantined.loc[3]
    assert mine.loc[3, "flagged"] and quarantined.loc[4:7].all() and not quarantined.loc[8]
    table = detection_table(c)
    assert (table["quarantined_malicious"] > 0).any() and table["malicious_reached"].sum() == 0


def test_fedavg_without_auditor_collapses(runs, clean_accuracy: float) -> None:
    s = runs("scaling_fedavg").summary
    assert s["final_accuracy"] < 0.5 < clean_accuracy
    assert s["detection_recall"] == 0.0 and s["detection_malicious_reached"] == 1.0  # mean detects nothing


def test_flag_only_records_but_changes_nothing(runs) -> None:
    flagged, plain = runs("scaling_flag_only"), runs("scaling_fedavg")
    assert torch.equal(flagged.final_params, plain.final_params)
    assert flagged.summary["detection_recall"] >= 0.9  # it did see them
    assert participants(flagged)["kept"].all()


def test_multi_signal_with_reputation_also_stops_scaling(runs, clean_accuracy: float) -> None:
    res = runs("scaling_multi_reputation")
    s = res.summary
    assert s["detection_recall"] >= 0.9 and s["detection_fpr"] <= 0.05
    assert s["final_accuracy"] >= clean_accuracy - 0.03
    assert {"reputation", "history", "krum", "cosine", "sign_agreement"} <= set(res.clients.columns)


# ---- ALIE: the documented limitation -----------------------------------------------------
def test_alie_stays_inside_the_honest_spread_and_evades_norm_auditing(runs) -> None:
    res = runs("alie_quarantine")
    p = participants(res)
    attacking, honest = p[p["attacked"]], p[~p["attacked"]]
    assert len(attacking) == 4 * ROUNDS                  # never quarantined: always let in
    assert attacking["norm"].max() <= honest["norm"].max()
    s = res.summary
    assert s["detection_recall"] <= 0.1
    assert s["detection_auc"] < 0.5                      # ALIE rows look *more* normal than honest ones
    assert s["detection_malicious_reached"] >= 0.9


def test_alie_evades_the_multi_signal_auditor_too(runs) -> None:
    s = runs("alie_multi_flag").summary
    assert s["detection_recall"] <= 0.1 and s["detection_auc"] < 0.5


# ---- ground truth stays out of the defense ---------------------------------------------------
def test_relabelling_ground_truth_leaves_the_model_bit_for_bit_unchanged(runs, monkeypatch) -> None:
    """Same world, different record: the real attackers still attack, the log names four others.

    ``Federation.is_malicious`` is the one source of ground truth in a run. Here it
    returns a disjoint set of four clients, while the wrapped loop phases that
    *execute* the attack (poisoned training jobs, crafted rows) are handed the real
    attackers, so every update the server receives is the same as before. Only the
    recorded labels differ; if any part of the server read them, the model would too.
    """
    reference = runs("scaling_quarantine")
    real = torch.tensor(reference.summary["malicious_clients"])
    decoy = torch.tensor([c for c in range(20) if c not in set(real.tolist())][:4])

    def actually_attacking(fed: Federation, rnd: int, ids: torch.Tensor) -> torch.Tensor:
        return torch.isin(ids, real.to(ids.device)) & attack_active(fed.cfg.attack, fed.cfg.seed, rnd)

    client_jobs, craft_updates = loop.client_jobs, loop.craft_updates

    def jobs(fed: Federation, state: Any, rnd: int, ids: torch.Tensor, attacked: torch.Tensor) -> Any:
        return client_jobs(fed, state, rnd, ids, actually_attacking(fed, rnd, ids))

    def craft(fed: Federation, state: Any, rnd: int, ids: torch.Tensor, updates: torch.Tensor,
              weights: torch.Tensor, attacked: torch.Tensor, ctx: Any) -> torch.Tensor:
        real_mask = actually_attacking(fed, rnd, ids)
        if not real_mask.any():  # the loop only crafts when someone attacks
            return updates
        return craft_updates(fed, state, rnd, ids, updates, weights, real_mask, ctx)

    monkeypatch.setattr(Federation, "is_malicious", lambda self, ids: torch.isin(ids, decoy.to(ids.device)))
    monkeypatch.setattr(loop, "client_jobs", jobs)
    monkeypatch.setattr(loop, "craft_updates", craft)
    relabelled = fedpoison.run(overrides=[f"rounds={ROUNDS}", *RUNS["scaling_quarantine"]])

    assert torch.equal(relabelled.final_params, reference.final_params)
    cols = ["round", "client", "norm", "score", "flagged", "kept", "selected", "weight"]
    pd.testing.assert_frame_equal(relabelled.clients[cols], reference.clients[cols])
    assert not relabelled.clients["malicious"].equals(reference.clients["malicious"])
    assert relabelled.summary["detection_recall"] < 0.5 < reference.summary["detection_recall"]


# ---- results on disk, resume -------------------------------------------------------------
def test_summary_json_and_audit_csv_carry_detection(runs, tmp_path: Path) -> None:
    res = runs("scaling_quarantine")
    out = res.save(tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    for key in ("detection_precision", "detection_recall", "detection_fpr", "detection_auc"):
        assert isinstance(summary[key], float), key
    audit = pd.read_csv(out / "audit.csv")
    assert {"score", "flagged", "kept", "quarantined", "norm", "attacked", "malicious"} <= set(audit.columns)


def test_no_attack_summary_has_nan_recall_and_auc(digits_fedavg: fedpoison.RunResult) -> None:
    s = digits_fedavg.summary
    assert math.isnan(s["detection_recall"]) and math.isnan(s["detection_auc"])
    assert s["detection_fpr"] == 0.0


def test_resume_mid_quarantine_gives_the_uninterrupted_model(tmp_path: Path) -> None:
    cfg = fedpoison.load_config(overrides=["rounds=6", *SCALING, *QUARANTINE])
    whole = fedpoison.run(cfg)

    class Crash(Exception):
        pass

    def crash_after_round_3(record: dict[str, Any]) -> None:
        if record["round"] == 3:
            raise Crash

    with pytest.raises(Crash):
        run_with_checkpoints(cfg, out=tmp_path, every=2, progress=crash_after_round_3)
    resumed = run_with_checkpoints(cfg, out=tmp_path, every=2, resume=True)
    assert torch.equal(resumed.final_params, whole.final_params)
    pd.testing.assert_frame_equal(resumed.clients.reset_index(drop=True), whole.clients.reset_index(drop=True),
                                  check_dtype=False)
