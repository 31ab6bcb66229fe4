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
- **Rounds to first detection** of a malicious client: the round of its
  first flagged attacking row minus the round of its first attacking row
  (0 = caught on its first attack); NaN if never caught.
- **Malicious reached**: share of attacking rows that the rule selected,
  i.e. that entered the aggregate with non-zero weight (for coordinate-wise
  rules, which select every row, each row counts as reaching it).
- **Honest excluded**: share of non-attacking rows that were not selected.
- **AUC**: ROC AUC of the auditor's ``score`` over all participant rows of
  the run, by the Mann-Whitney rank statistic with average ranks for ties;
  without an auditor, of the binary flag (one operating point:
  :math:`(TPR + 1 - FPR) / 2`). Scores are z-scores normalised within each
  round, so pooling rounds is meaningful.
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
    ``cum_fpr``, ``malicious_reached`` and ``honest_excluded`` (counts of rows),
    ``quarantined_malicious`` and ``quarantined_honest`` (clients kept out).
    Empty (with these columns) for an empty log.
    """
    cols = ["round", *_COUNTS, "precision", "recall", "fpr", "f1", "cum_precision", "cum_recall", "cum_fpr",
            "malicious_reached", "honest_excluded", "quarantined_malicious", "quarantined_honest"]
    if clients is None or len(clients) == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    df = participant_rows(clients)
    rounds = sorted(clients["round"].unique().tolist())
    records: list[dict[str, Any]] = []
    cum = dict.fromkeys(_COUNTS, 0)
    quarantined = _quarantined(clients)
    for rnd in rounds:
        part = df[df["round"] == rnd]
        counts = confusion(part["positive"], part["flag"])
        for k in _COUNTS:
            cum[k] += counts[k]
        total = rates(**cum)
        q = quarantined[quarantined["round"] == rnd]
        records.append({
            "round": int(rnd), **counts, **rates(**counts),
            "cum_precision": total["precision"], "cum_recall": total["recall"], "cum_fpr": total["fpr"],
            "malicious_reached": int((part["positive"] & part["reached"]).sum()),
            "honest_excluded": int((~part["positive"] & ~part["reached"]).sum()),
            "quarantined_malicious": int(q["malicious"].astype(bool).sum()),
            "quarantined_honest": int((~q["malicious"].astype(bool)).sum()),
        })
    return pd.DataFrame.from_records(records, columns=cols)


def rounds_to_detection(clients: pd.DataFrame) -> pd.Series:
    """Per malicious client that attacked: rounds from its first attack to its first flagged attack.

    Indexed by client id; NaN for a client never flagged while attacking.
    """
    if clients is None or len(clients) == 0:
        return pd.Series(dtype=float, name="rounds_to_detection")
    df = participant_rows(clients)
    att = df[df["positive"]]
    first_attack = att.groupby("client")["round"].min()
    first_flag = att[att["flag"]].groupby("client")["round"].min()
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
    (``{client: rounds or NaN}``).
    """
    out = detection_summary(clients)
    out["rounds_to_detection"] = {int(k): float(v) for k, v in rounds_to_detection(clients).items()}
    return out


def detection_summary(clients: pd.DataFrame) -> dict[str, Any]:
    """The run-level detection numbers merged into ``summary.json`` (all scalars).

    ``detection_precision``, ``detection_recall``, ``detection_fpr``,
    ``detection_f1``, ``detection_auc``, ``detection_tp``/``fp``/``tn``/``fn``,
    ``detection_malicious_reached`` (share of attacking rows aggregated),
    ``detection_honest_excluded`` (share of honest rows dropped),
    ``detection_max_rounds_to_detect`` and ``detection_mean_rounds_to_detect``
    (over the malicious clients that attacked; NaN if any was never caught)
    and ``detection_undetected`` (how many attacking clients were never caught).
    """
    nan = math.nan
    empty: dict[str, Any] = {"detection_precision": nan, "detection_recall": nan, "detection_fpr": nan, "detection_f1": nan,
             "detection_auc": nan, "detection_tp": 0, "detection_fp": 0, "detection_tn": 0, "detection_fn": 0,
             "detection_malicious_reached": nan, "detection_honest_excluded": nan,
             "detection_max_rounds_to_detect": nan, "detection_mean_rounds_to_detect": nan,
             "detection_undetected": 0}
    if clients is None or len(clients) == 0 or "attacked" not in clients:
        return empty
    df = participant_rows(clients)
    counts = confusion(df["positive"], df["flag"])
    r = rates(**counts)
    score = df["score"] if "score" in df else df["flag"].astype(float)
    delays = rounds_to_detection(clients)
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
    }


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
