"""Detection metrics on a hand-counted audit log, AUC against sklearn, and the CLI table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from fedpoison.audit.report import format_detection
from fedpoison.metrics.detection import (
    clean_round_fpr,
    detection_metrics,
    detection_summary,
    detection_table,
    roc_auc,
    rounds_to_detection,
    time_to_exclusion,
    with_detection_columns,
)


def hand_log() -> pd.DataFrame:
    """Five clients, three rounds; clients 0 and 1 are malicious.

    round 0: 0, 1 attack; the auditor flags 0 and 2     -> TP 1, FN 1, FP 1, TN 2
    round 1: 0 is quarantined; 1 attacks and is flagged -> TP 1, TN 3
    round 2: the attack is off; 3 is flagged            -> FP 1, TN 4
    """
    rows = []

    def add(rnd: int, c: int, attacked: bool, flagged: bool, score: float, **extra: object) -> None:
        rows.append({"round": rnd, "client": c, "malicious": c in (0, 1), "attacked": attacked,
                     "samples": 10, "norm": 1.0, "selected": not flagged, "weight": 0.0 if flagged else 0.25,
                     "score": score, "flagged": flagged, "kept": not flagged, **extra})

    add(0, 0, True, True, 5.0)
    add(0, 1, True, False, 2.0)
    add(0, 2, False, True, 3.5)
    add(0, 3, False, False, 0.1)
    add(0, 4, False, False, 0.2)
    rows.append({"round": 1, "client": 0, "malicious": True, "attacked": False, "samples": 10,
                 "norm": math.nan, "selected": False, "weight": 0.0, "quarantined": True})
    add(1, 1, True, True, 4.0)
    add(1, 2, False, False, 0.3)
    add(1, 3, False, False, 0.4)
    add(1, 4, False, False, 0.5)
    for c, s in enumerate([0.6, 0.7, 0.8, 3.6, 0.9]):
        add(2, c, False, c == 3, s)
    return pd.DataFrame(rows)


def test_per_round_table_matches_hand_counts() -> None:
    t = detection_table(hand_log()).set_index("round")
    assert t[["tp", "fp", "tn", "fn"]].values.tolist() == [[1, 1, 2, 1], [1, 0, 3, 0], [0, 1, 4, 0]]
    assert t.loc[0, ["precision", "recall", "fpr", "f1"]].tolist() == pytest.approx([0.5, 0.5, 1 / 3, 0.5])
    assert t.loc[1, ["precision", "recall", "fpr", "f1"]].tolist() == pytest.approx([1.0, 1.0, 0.0, 1.0])
    assert t.loc[2, "precision"] == 0.0 and math.isnan(t.loc[2, "recall"]) and t.loc[2, "fpr"] == pytest.approx(0.2)
    assert t["cum_recall"].tolist() == pytest.approx([0.5, 2 / 3, 2 / 3])
    assert t["cum_precision"].tolist() == pytest.approx([0.5, 2 / 3, 0.5])
    assert t["quarantined_malicious"].tolist() == [0, 1, 0]
    assert t["quarantined_honest"].tolist() == [0, 0, 0]
    assert t["malicious_reached"].tolist() == [1, 0, 0]
    assert t["honest_excluded"].tolist() == [1, 0, 1]


def test_run_level_numbers_match_hand_counts() -> None:
    s = detection_summary(hand_log())
    assert (s["detection_tp"], s["detection_fp"], s["detection_tn"], s["detection_fn"]) == (2, 2, 9, 1)
    assert s["detection_precision"] == pytest.approx(0.5)
    assert s["detection_recall"] == pytest.approx(2 / 3)
    assert s["detection_fpr"] == pytest.approx(2 / 11)
    assert s["detection_f1"] == pytest.approx(4 / 7)
    # positives 5.0, 4.0, 2.0 against 11 negatives of which 3.5 and 3.6 beat 2.0: 31 of 33 pairs
    assert s["detection_auc"] == pytest.approx(31 / 33)
    assert s["detection_malicious_reached"] == pytest.approx(1 / 3)
    assert s["detection_honest_excluded"] == pytest.approx(2 / 11)
    assert s["detection_max_rounds_to_detect"] == 1.0 and s["detection_mean_rounds_to_detect"] == 0.5
    assert s["detection_undetected"] == 0
    assert rounds_to_detection(hand_log()).to_dict() == {0: 0.0, 1: 1.0}
    assert detection_metrics(hand_log())["rounds_to_detection"] == {0: 0.0, 1: 1.0}


def test_filtering_rule_without_auditor_flags_what_it_does_not_select() -> None:
    log = hand_log()
    log = log[~log["quarantined"].eq(True)].drop(columns=["score", "flagged", "kept", "quarantined"])
    s = detection_summary(log)
    assert (s["detection_tp"], s["detection_fp"], s["detection_tn"], s["detection_fn"]) == (2, 2, 9, 1)
    # binary score: AUC = (TPR + 1 - FPR) / 2
    assert s["detection_auc"] == pytest.approx((2 / 3 + 1 - 2 / 11) / 2)
    log["selected"] = True  # mean, median: select everything, detect nothing
    s = detection_summary(log)
    assert s["detection_recall"] == 0.0 and math.isnan(s["detection_precision"]) and s["detection_fpr"] == 0.0
    assert s["detection_undetected"] == 2 and math.isnan(s["detection_max_rounds_to_detect"])


def test_rows_the_server_did_not_keep_count_as_detected() -> None:
    log = hand_log()
    # round 0, client 1: dropped before the audit (non-finite): not flagged, not kept, score NaN
    i = log.index[(log["round"] == 0) & (log["client"] == 1)][0]
    log.loc[i, ["flagged", "kept", "selected", "score"]] = [False, False, False, math.nan]
    s = detection_summary(log)
    assert (s["detection_tp"], s["detection_fn"]) == (3, 0)


def test_no_attack_and_empty_logs_give_nan_where_undefined() -> None:
    log = hand_log()
    log["attacked"] = False
    s = detection_summary(log)
    assert math.isnan(s["detection_recall"]) and math.isnan(s["detection_auc"])
    assert s["detection_precision"] == 0.0  # every flag was a false positive
    assert s["detection_fpr"] == pytest.approx(4 / 14)  # flags: (0,0), (0,2), (1,1), (2,3)
    empty = detection_summary(pd.DataFrame())
    assert all(math.isnan(empty[k]) for k in ("detection_precision", "detection_recall", "detection_fpr",
                                              "detection_auc"))
    assert detection_table(pd.DataFrame()).empty


def test_detection_does_not_mutate_the_log() -> None:
    log = hand_log()
    before = log.copy()
    detection_summary(log)
    detection_table(log)
    pd.testing.assert_frame_equal(log, before)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_auc_matches_sklearn_with_ties(pairs: list[tuple[bool, int]]) -> None:
    from sklearn.metrics import roc_auc_score

    y = np.array([p for p, _ in pairs])
    s = np.array([float(v) for _, v in pairs])
    if y.all() or not y.any():
        assert math.isnan(roc_auc(y, s))
    else:
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_format_detection_renders_values_and_na() -> None:
    s = detection_summary(hand_log())
    s["detection_recall"] = math.nan
    console = Console(record=True, width=100)
    console.print(format_detection(s))
    text = console.export_text()
    assert "precision" in text and "0.500" in text and "n/a" in text
    assert "TP 2  FP 2  TN 9  FN 1" in text
    assert "rounds to detection (max)" in text and "1.0" in text
    assert len(format_detection({}).rows) == 0


def test_fpr_clean_counts_only_rounds_without_an_attack() -> None:
    # round 2 is the only clean round: client 3 flagged among five honest rows
    log = hand_log()
    assert clean_round_fpr(log) == pytest.approx(1 / 5)
    s = detection_summary(log)
    assert s["detection_fpr_clean"] == pytest.approx(0.2) and s["detection_clean_rounds"] == 1
    t = detection_table(log).set_index("round")
    assert math.isnan(t.loc[0, "fpr_clean"]) and math.isnan(t.loc[1, "fpr_clean"])
    assert t.loc[2, "fpr_clean"] == pytest.approx(0.2)
    assert math.isnan(t.loc[0, "cum_fpr_clean"]) and t.loc[2, "cum_fpr_clean"] == pytest.approx(0.2)
    # a malicious client outside its schedule sends an honest row: round 2 stays clean with client 0 in it
    assert bool(log.loc[(log["round"] == 2) & (log["client"] == 0), "malicious"].iloc[0])
    # every round attacked: no clean round, fpr_clean undefined
    log.loc[(log["round"] == 2) & (log["client"] == 0), "attacked"] = True
    assert math.isnan(clean_round_fpr(log)) and detection_summary(log)["detection_clean_rounds"] == 0


def test_fpr_clean_of_a_filtering_rule_is_read_from_the_rows_it_drops() -> None:
    log = hand_log()
    log = log[~log["quarantined"].eq(True)].drop(columns=["score", "flagged", "kept", "quarantined"])
    log.loc[log["round"] == 2, "selected"] = [True, False, False, True, True]  # drops honest 1 and 2
    assert clean_round_fpr(log) == pytest.approx(2 / 5)
    assert detection_summary(log)["detection_auc_source"] == "flag"


def test_detection_delay_is_first_attack_to_first_flag() -> None:
    s = detection_summary(hand_log())
    assert s["detection_delay"] == pytest.approx(0.5) and s["detection_delay_max"] == 1.0
    assert s["detection_auc_source"] == "score"
    log = hand_log()
    # client 1 attacks in rounds 0 and 1 and is never flagged: its delay is NaN
    log.loc[(log["round"] == 1) & (log["client"] == 1), "flagged"] = False
    log.loc[(log["round"] == 1) & (log["client"] == 1), ["kept", "selected"]] = True
    assert rounds_to_detection(log).to_dict()[0] == 0.0 and math.isnan(rounds_to_detection(log).to_dict()[1])
    s = detection_summary(log)
    assert s["detection_delay"] == 0.0 and s["detection_undetected"] == 1  # mean over the caught ones


def test_time_to_exclusion_counts_drops_and_quarantine_not_flags_alone() -> None:
    log = hand_log()
    assert time_to_exclusion(log).to_dict() == {0: 0.0, 1: 1.0}
    # an auditor that flags but keeps every row (score only): detected, never excluded
    flag_only = log.copy()
    rows = ~flag_only["quarantined"].eq(True)
    flag_only.loc[rows, "kept"] = True
    flag_only.loc[rows, "selected"] = True
    flag_only = flag_only[rows]
    assert rounds_to_detection(flag_only).to_dict() == {0: 0.0, 1: 1.0}
    assert time_to_exclusion(flag_only).isna().all()
    s = detection_summary(flag_only)
    assert math.isnan(s["detection_exclusion_time"]) and s["detection_never_excluded"] == 2
    # quarantine counts: client 0 kept in round 0, quarantined in round 1 -> excluded after 1 round
    q = log.copy()
    q.loc[(q["round"] == 0) & (q["client"] == 0), ["flagged", "kept", "selected"]] = [False, True, True]
    assert time_to_exclusion(q).to_dict() == {0: 1.0, 1: 1.0}
    s = detection_summary(q)
    assert s["detection_exclusion_time"] == 1.0 and s["detection_exclusion_time_max"] == 1.0
    assert detection_metrics(q)["time_to_exclusion"] == {0: 1.0, 1: 1.0}
    # a drop before the first attack is not an exclusion
    early = log.copy()
    early.loc[(early["round"] == 0) & (early["client"] == 1), "attacked"] = False
    early.loc[(early["round"] == 0) & (early["client"] == 1), "selected"] = False
    assert time_to_exclusion(early).to_dict()[1] == 0.0  # first attack round 1, dropped in round 1


def test_per_round_attacker_counts_and_auc() -> None:
    t = detection_table(hand_log()).set_index("round")
    assert t["attackers_seen"].tolist() == [2, 2, 2]
    assert t["attackers_detected"].tolist() == [1, 2, 2]
    assert t["attackers_excluded"].tolist() == [1, 2, 2]
    # round 0: positives 5.0, 2.0 vs negatives 3.5, 0.1, 0.2 -> 5 of 6 pairs
    assert t.loc[0, "auc"] == pytest.approx(5 / 6)
    assert t.loc[1, "auc"] == 1.0 and math.isnan(t.loc[2, "auc"])


def test_history_gets_the_per_round_detection_columns() -> None:
    history = pd.DataFrame({"round": [0, 1, 2, 3], "test_accuracy": [0.1, 0.2, 0.3, 0.4]})
    out = with_detection_columns(history, hand_log())
    assert out["detection_fpr_clean"].isna().tolist() == [True, True, False, True]
    assert out["detection_tp"].tolist()[:3] == [1, 1, 0] and math.isnan(out["detection_tp"].iloc[3])
    assert out["test_accuracy"].tolist() == [0.1, 0.2, 0.3, 0.4]
    again = with_detection_columns(out, hand_log())  # idempotent: old detection columns replaced
    assert list(again.columns) == list(out.columns)
    assert with_detection_columns(history, pd.DataFrame()) is history


def test_detection_delay_counts_a_flag_in_a_quiet_round_after_the_first_attack() -> None:
    log = hand_log()
    # client 1 attacks in round 0 (not flagged); make round 1, where it is flagged, a quiet round: delay 1
    log.loc[(log["round"] == 1) & (log["client"] == 1), "attacked"] = False
    assert rounds_to_detection(log).to_dict() == {0: 0.0, 1: 1.0}
    # a flag before the first attack does not count
    early = hand_log()
    early.loc[(early["round"] == 0) & (early["client"] == 1), "attacked"] = False
    early.loc[(early["round"] == 0) & (early["client"] == 1), "flagged"] = True
    early.loc[(early["round"] == 1) & (early["client"] == 1), "flagged"] = False
    early.loc[(early["round"] == 1) & (early["client"] == 1), ["kept", "selected"]] = True
    assert math.isnan(rounds_to_detection(early).to_dict()[1])
