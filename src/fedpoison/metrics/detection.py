"""Detection metrics: how well an auditor, or a filtering rule, picks out the attacking rows.

Everything is computed from the per-client audit log (``RunResult.clients``,
``audit.csv``): one row per round per participant, plus, with a quarantining
auditor, rows marked ``quarantined`` for sampled clients kept out.

Definitions
-----------
- **Positive class**: the row was actually manipulated this round
  (``attacked``). A malicious client outside its attack schedule sends an
  honest row, which counts as a negative.
- **Flagged** (predicted positive): with an auditor, a row it flagged or the
  server did not keep before aggregation (``flagged`` or not ``kept``: this
  includes rows a reputation below the floor kept out, and non-finite rows
  dropped at the server's door); without an auditor, a row the rule did not
  select (Krum, Multi-Krum, FLAME, DnC "detect" what they drop). A rule that
  selects every row (mean, median) flags nothing. With both an auditor and a
  filtering rule, detection is the auditor's; the rule's drops still show in
  *malicious reached* and *honest excluded*.
- Only rows of participants count in the confusion matrix. Quarantined
  clients sent nothing that round; their rows are counted apart
  (``quarantined_malicious``, ``quarantined_honest``, by client identity).
- Precision :math:`TP/(TP+FP)`, recall :math:`TP/(TP+FN)`, false-positive
  rate :math:`FP/(FP+TN)`, F1 :math:`2TP/(2TP+FP+FN)`; each is NaN when its
  denominator is zero (so recall and AUC are NaN in a run without attack,
  and precision is NaN when nothing was flagged).
- Run level: the same ratios over the summed counts (micro-averaged over all
  rows of all rounds), so rounds with more participants weigh more.
- **Clean-round false-positive rate** (``fpr_clean``): the false-positive
  rate over the rows of *clean rounds* only, rounds in which no participant
  attacked (no positive row). It is what an honest federation pays for the
  auditor when nobody attacks; NaN when every round held an attack (delay the
  attack with its schedule, e.g. ``attack.start``, to measure it).
- **Detection delay** (rounds to first detection) of a malicious client: the
  round of its first flagged row, in or after the round of its first attack,
  minus the round of its first attacking row (0 = caught on its first
  attack); NaN if never caught. A flag in a round the client did not attack
  counts: the client was caught (its row there is a false positive all the
  same in the confusion counts).
- **Time to exclusion** of a malicious client: the first round, from its first
  attack on, in which it was kept out of the aggregate (its row not selected:
  dropped by the auditor, the server or a filtering rule; or the client
  quarantined), minus the round of its first attack; NaN if never kept out.
  An auditor that only lowers weights or scores never excludes, so its time
  to exclusion stays NaN while its detection delay is defined.
- **Malicious reached**: share of attacking rows that the rule selected,
  i.e. that entered the aggregate with non-zero weight (for coordinate-wise
  rules, which select every row, each row counts as reaching it).
- **Honest excluded**: share of non-attacking rows that were not selected.
- **AUC**: ROC AUC of the auditor's ``score`` over all participant rows of
  the run, by the Mann-Whitney rank statistic with average ranks for ties;
  without an auditor, of the binary flag (one operating point:
  :math:`(TPR + 1 - FPR) / 2`). Scores are z-scores normalised within each
  round, so pooling rounds is meaningful. ``detection_auc_source`` says
  which (``score`` or ``flag``).
- **Per round** (:func:`detection_table`, merged into the run's history
  with a ``detection_`` prefix): the confusion counts and rates of that
  round, their cumulative values, the round's ``fpr_clean`` (its FPR when it
  is a clean round, else NaN), its ``auc``, and how many of the attackers
  that had attacked so far were detected and excluded by then
  (``attackers_seen``, ``attackers_detected``, ``attackers_excluded``), the
  per-round view of the delays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

_COUNTS = ("tp", "fp", "tn", "fn")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def rates(tp: float, fp: float, tn: float, fn: float) -> dict[str, float]:
    """Precision, recall, FPR and F1 from confusion counts (NaN for a zero denominator).

    Example
    -------
    >>> rates(3, 1, 15, 1)
    {'precision': 0.75, 'recall': 0.75, 'fpr': 0.0625, 'f1': 0.75}
    """
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def participant_rows(clients: pd.DataFrame) -> pd.DataFrame:
    """The log's participant rows (quarantined rows dropped), with boolean ``positive`` and ``flag``."""
    df = clients
    if "quarantined" in df:
        df = df[~df["quarantined"].eq(True)]
    df = df.copy()
    df["positive"] = df["attacked"].astype(bool)
    if "flagged" in df:
        df["flag"] = df["flagged"].eq(True)
        if "kept" in df:
            df["flag"] |= df["kept"].eq(False)
    else:
        df["flag"] = ~df["selected"].astype(bool)
    df["reached"] = df["selected"].astype(bool)
    return df


def confusion(positive: pd.Series | np.ndarray, flag: pd.Series | np.ndarray) -> dict[str, int]:
    """TP, FP, TN, FN counts of boolean ``flag`` against boolean ``positive``."""
    p = np.asarray(positive, dtype=bool)
    f = np.asarray(flag, dtype=bool)
    return {"tp": int((p & f).sum()), "fp": int((~p & f).sum()),
            "tn": int((~p & ~f).sum()), "fn": int((p & ~f).sum())}


def detection_table(clients: pd.DataFrame) -> pd.DataFrame:
    """One row per round: confusion counts, rates, their cumulative values, and exclusions.

    Columns: ``round``, ``tp``, ``fp``, ``tn``, ``fn``, ``precision``,
    ``recall``, ``fpr``, ``f1``, ``cum_precision``, ``cum_recall``,
    ``cum_fpr``, ``fpr_clean`` and ``cum_fpr_clean`` (the FPR of clean rounds,
    NaN in a round with an attack), ``auc`` (of the round's rows),
    ``attackers_seen``, ``attackers_detected``, ``attackers_excluded`` (malicious
    clients that had attacked by this round, and of them those first flagged,
    and first kept out, by this round), ``malicious_reached`` and
    ``honest_excluded`` (counts of rows), ``quarantined_malicious`` and
    ``quarantined_honest`` (clients kept out). Empty (with these columns) for
    an empty log.
    """
    cols = ["round", *_COUNTS, "precision", "recall", "fpr", "f1", "cum_precision", "cum_recall", "cum_fpr",
            "fpr_clean", "cum_fpr_clean", "auc", "attackers_seen", "attackers_detected", "attackers_excluded",
            "malicious_reached", "honest_excluded", "quarantined_malicious", "quarantined_honest"]
    if clients is None or len(clients) == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    df = participant_rows(clients)
    rounds = sorted(clients["round"].unique().tolist())
    records: list[dict[str, Any]] = []
    cum = dict.fromkeys(_COUNTS, 0)
    cum_clean = {"fp": 0, "tn": 0}
    quarantined = _quarantined(clients)
    score = _score(df)
    first_attack = _first_attack(df)
    detected_at = first_attack + rounds_to_detection(clients).reindex(first_attack.index)
    excluded_at = first_attack + time_to_exclusion(clients).reindex(first_attack.index)
    for rnd in rounds:
        in_round = df["round"] == rnd
        part = df[in_round]
        counts = confusion(part["positive"], part["flag"])
        for k in _COUNTS:
            cum[k] += counts[k]
        total = rates(**cum)
        clean = not bool(part["positive"].any())
        if clean:
            cum_clean["fp"] += counts["fp"]
            cum_clean["tn"] += counts["tn"]
        q = quarantined[quarantined["round"] == rnd]
        records.append({
            "round": int(rnd), **counts, **rates(**counts),
            "cum_precision": total["precision"], "cum_recall": total["recall"], "cum_fpr": total["fpr"],
            "fpr_clean": _ratio(counts["fp"], counts["fp"] + counts["tn"]) if clean else math.nan,
            "cum_fpr_clean": _ratio(cum_clean["fp"], cum_clean["fp"] + cum_clean["tn"]),
            "auc": roc_auc(part["positive"], score[in_round]),
            "attackers_seen": int((first_attack <= rnd).sum()),
            "attackers_detected": int((detected_at <= rnd).sum()),
            "attackers_excluded": int((excluded_at <= rnd).sum()),
            "malicious_reached": int((part["positive"] & part["reached"]).sum()),
            "honest_excluded": int((~part["positive"] & ~part["reached"]).sum()),
            "quarantined_malicious": int(q["malicious"].astype(bool).sum()),
            "quarantined_honest": int((~q["malicious"].astype(bool)).sum()),
        })
    return pd.DataFrame.from_records(records, columns=cols)


def _first_attack(df: pd.DataFrame) -> pd.Series:
    """Per client that attacked: the round of its first attacking row (participant rows of :func:`participant_rows`)."""
    first: pd.Series = df[df["positive"]].groupby("client")["round"].min()
    return first


def _score(df: pd.DataFrame) -> pd.Series:
    """The continuous suspicion score where the log has one, else the binary flag."""
    if "score" in df:
        return df["score"].astype(float)
    return df["flag"].astype(float)


def clean_round_fpr(clients: pd.DataFrame) -> float:
    """``fpr_clean``: the false-positive rate over the rows of rounds in which nobody attacked.

    A round is clean when none of its participant rows was attacked (a
    malicious client outside its attack schedule sends an honest row, so its
    round can be clean). Rows are pooled over the clean rounds (micro
    average). NaN when no round was clean, or for an empty log.

    Example
    -------
    >>> log = pd.DataFrame({"round": [0, 0, 1, 1], "client": [0, 1, 0, 1], "attacked": [True, False, False, False],
    ...                     "selected": [False, False, True, False]})
    >>> clean_round_fpr(log)  # round 1 is clean; client 1 was dropped there
    0.5
    """
    if clients is None or len(clients) == 0 or "attacked" not in clients:
        return math.nan
    df = participant_rows(clients)
    attacked_rounds = set(df.loc[df["positive"], "round"].tolist())
    clean = df[~df["round"].isin(attacked_rounds)]
    counts = confusion(clean["positive"], clean["flag"])
    return _ratio(counts["fp"], counts["fp"] + counts["tn"])


def time_to_exclusion(clients: pd.DataFrame) -> pd.Series:
    """Per malicious client that attacked: rounds from its first attack until it was first kept out.

    Kept out: a row of the client, in or after the round of its first
    attack, that did not enter the aggregate (not ``selected``: dropped by
    the auditor, the server's door or a filtering rule), or a round in which
    it was quarantined. Indexed by client id; NaN for a client never kept out.
    """
    if clients is None or len(clients) == 0:
        return pd.Series(dtype=float, name="time_to_exclusion")
    df = participant_rows(clients)
    first_attack = _first_attack(df)
    log = clients[clients["client"].isin(first_attack.index)]
    out_rows = ~log["selected"].astype(bool)
    if "quarantined" in log:
        out_rows |= log["quarantined"].eq(True)
    after = log["round"].to_numpy() >= first_attack.reindex(log["client"]).to_numpy()
    excluded = log[out_rows.to_numpy() & after]
    first_out = excluded.groupby("client")["round"].min()
    out = (first_out.reindex(first_attack.index) - first_attack).astype(float)
    out.index.name = "client"
    return out.rename("time_to_exclusion")


def with_detection_columns(history: pd.DataFrame, clients: pd.DataFrame) -> pd.DataFrame:
    """``history`` with :func:`detection_table`'s columns, prefixed ``detection_``, joined on ``round``.

    Rounds without a log row get NaN. ``history`` is returned unchanged when
    the log is empty or holds no ground truth (no ``attacked`` column).
    """
    if clients is None or len(clients) == 0 or "attacked" not in clients or "round" not in history:
        return history
    table = detection_table(clients)
    table = table.rename(columns={c: f"detection_{c}" for c in table.columns if c != "round"})
    keep = [c for c in history.columns if not str(c).startswith("detection_")]
    return history[keep].merge(table, on="round", how="left")


def rounds_to_detection(clients: pd.DataFrame) -> pd.Series:
    """Per malicious client that attacked: rounds from its first attack to its first flag.

    This is the detection delay. The first flag is the client's first flagged
    row in or after the round of its first attack, whether or not it attacked
    in that round (an intermittent attacker flagged in a quiet round has been
    caught all the same). Indexed by client id; NaN for a client never flagged
    from its first attack on.
    """
    if clients is None or len(clients) == 0:
        return pd.Series(dtype=float, name="rounds_to_detection")
    df = participant_rows(clients)
    first_attack = _first_attack(df)
    mine = df[df["client"].isin(first_attack.index) & df["flag"]]
    after = mine["round"].to_numpy() >= first_attack.reindex(mine["client"]).to_numpy()
    first_flag = mine[after].groupby("client")["round"].min()
    out = (first_flag.reindex(first_attack.index) - first_attack).astype(float)
    out.index.name = "client"
    return out.rename("rounds_to_detection")


def roc_auc(labels: np.ndarray | pd.Series, scores: np.ndarray | pd.Series) -> float:
    """ROC AUC by the Mann-Whitney statistic, average ranks for ties; NaN without both classes.

    .. math:: AUC = \\frac{R_+ - n_+ (n_+ + 1) / 2}{n_+ n_-}

    with :math:`R_+` the sum of the positives' ranks among all scores. NaN
    scores rank as the most suspicious.

    Example
    -------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    s = np.where(np.isnan(s), np.inf, s)
    n_pos = int(y.sum())
    n_neg = int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_metrics(clients: pd.DataFrame) -> dict[str, Any]:
    """Run-level detection numbers, including the per-client rounds to detection.

    Keys: those of :func:`detection_summary` plus ``rounds_to_detection``
    and ``time_to_exclusion`` (each ``{client: rounds or NaN}``).
    """
    out = detection_summary(clients)
    out["rounds_to_detection"] = {int(k): float(v) for k, v in rounds_to_detection(clients).items()}
    out["time_to_exclusion"] = {int(k): float(v) for k, v in time_to_exclusion(clients).items()}
    return out


def detection_summary(clients: pd.DataFrame) -> dict[str, Any]:
    """The run-level detection numbers merged into ``summary.json`` (all scalars).

    ``detection_precision``, ``detection_recall``, ``detection_fpr``,
    ``detection_f1``, ``detection_auc``, ``detection_tp``/``fp``/``tn``/``fn``,
    ``detection_malicious_reached`` (share of attacking rows aggregated),
    ``detection_honest_excluded`` (share of honest rows dropped),
    ``detection_max_rounds_to_detect`` and ``detection_mean_rounds_to_detect``
    (over the malicious clients that attacked; NaN if any was never caught)
    and ``detection_undetected`` (how many attacking clients were never caught);
    ``detection_fpr_clean`` (:func:`clean_round_fpr`) and
    ``detection_clean_rounds`` (how many rounds were clean);
    ``detection_delay`` and ``detection_delay_max`` (mean and largest detection
    delay over the attackers that were caught, NaN if none was);
    ``detection_exclusion_time`` and ``detection_exclusion_time_max`` (the same
    for :func:`time_to_exclusion`) and ``detection_never_excluded``;
    ``detection_auc_source`` (``score`` or ``flag``).
    """
    nan = math.nan
    empty: dict[str, Any] = {"detection_precision": nan, "detection_recall": nan, "detection_fpr": nan, "detection_f1": nan,
             "detection_auc": nan, "detection_tp": 0, "detection_fp": 0, "detection_tn": 0, "detection_fn": 0,
             "detection_malicious_reached": nan, "detection_honest_excluded": nan,
             "detection_max_rounds_to_detect": nan, "detection_mean_rounds_to_detect": nan,
             "detection_undetected": 0, "detection_fpr_clean": nan, "detection_clean_rounds": 0,
             "detection_delay": nan, "detection_delay_max": nan, "detection_exclusion_time": nan,
             "detection_exclusion_time_max": nan, "detection_never_excluded": 0, "detection_auc_source": ""}
    if clients is None or len(clients) == 0 or "attacked" not in clients:
        return empty
    df = participant_rows(clients)
    counts = confusion(df["positive"], df["flag"])
    r = rates(**counts)
    score = _score(df)
    delays = rounds_to_detection(clients)
    exclusion = time_to_exclusion(clients)
    attacked_rounds = set(df.loc[df["positive"], "round"].tolist())
    pos, neg = df[df["positive"]], df[~df["positive"]]
    caught = delays.notna().all() and len(delays) > 0
    return {
        "detection_precision": r["precision"],
        "detection_recall": r["recall"],
        "detection_fpr": r["fpr"],
        "detection_f1": r["f1"],
        "detection_auc": roc_auc(df["positive"], score),
        **{f"detection_{k}": v for k, v in counts.items()},
        "detection_malicious_reached": _ratio(int(pos["reached"].sum()), len(pos)),
        "detection_honest_excluded": _ratio(int((~neg["reached"]).sum()), len(neg)),
        "detection_max_rounds_to_detect": float(delays.max()) if caught else nan,
        "detection_mean_rounds_to_detect": float(delays.mean()) if caught else nan,
        "detection_undetected": int(delays.isna().sum()),
        "detection_fpr_clean": clean_round_fpr(clients),
        "detection_clean_rounds": int(df["round"].nunique() - len(attacked_rounds)),
        "detection_delay": _mean_or_nan(delays),
        "detection_delay_max": _max_or_nan(delays),
        "detection_exclusion_time": _mean_or_nan(exclusion),
        "detection_exclusion_time_max": _max_or_nan(exclusion),
        "detection_never_excluded": int(exclusion.isna().sum()),
        "detection_auc_source": "score" if "score" in df else "flag",
    }


def _mean_or_nan(values: pd.Series) -> float:
    v = values.dropna()
    return float(v.mean()) if len(v) else math.nan


def _max_or_nan(values: pd.Series) -> float:
    v = values.dropna()
    return float(v.max()) if len(v) else math.nan


def _quarantined(clients: pd.DataFrame) -> pd.DataFrame:
    if "quarantined" not in clients:
        return clients.iloc[0:0]
    return clients[clients["quarantined"].eq(True)]


def fake_client_detection(clients: pd.DataFrame) -> dict[str, Any]:
    """Recall on fake clients' rows and on compromised genuine clients' rows, apart.

    For runs with ``attack.fake_clients`` (the audit log has a ``fake``
    column): fake rows are always positives (a fake client only ever sends
    attack rows), so they are already in :func:`detection_summary`'s counts;
    this splits its recall by where the attacking row came from.
    Keys: ``detection_fake_rows``, ``detection_recall_fake``,
    ``detection_recall_compromised`` (NaN without such rows). Empty for a log
    without a ``fake`` column.
    """
    if clients is None or len(clients) == 0 or "fake" not in clients:
        return {}
    df = participant_rows(clients)
    fake = df["fake"].eq(True)
    pos_fake, pos_genuine = df[df["positive"] & fake], df[df["positive"] & ~fake]
    return {
        "detection_fake_rows": len(pos_fake),
        "detection_recall_fake": _ratio(int(pos_fake["flag"].sum()), len(pos_fake)),
        "detection_recall_compromised": _ratio(int(pos_genuine["flag"].sum()), len(pos_genuine)),
    }
