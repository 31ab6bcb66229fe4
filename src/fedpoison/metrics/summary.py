"""Summary metrics of one run, computed from its per-round history.

Every number here is a pure function of ``history`` (one row per round, with
``test_accuracy`` only on evaluated rounds) and ``timings``. The definitions:

* **final accuracy**: the mean of the evaluations made in the run's last ``k``
  rounds (``last_k``), which is less sensitive to the last round's noise than
  the last value alone. With one evaluation per round that is the last ``k``
  evaluations; with sparser evaluations (``eval.every`` > 1) fewer of them, and
  the last one alone when they are ``k`` or more rounds apart, so an early
  evaluation is never averaged into a "final" number;
* **best accuracy**: the highest evaluation;
* **rounds to target**: the number of rounds trained when an evaluation first
  reached ``target`` (``NaN`` when it never did); grids also report it relative
  to the matching no-attack run (:mod:`fedpoison.results`);
* **accuracy AUC**: the area under the accuracy-vs-round curve by the
  trapezoid rule, divided by the span of rounds, so it lies in [0, 1] and
  rewards learning early (a single evaluation gives that accuracy);
* **stability**: the standard deviation of the evaluations in the last ``k``
  rounds (``ddof=0``; ``NaN`` when that window holds fewer than two) and the
  largest drop between two consecutive evaluations;
* **attack success rate** and **targeted misclassification**: the mean of the
  evaluations in the last ``k`` rounds and the maximum over the run;
* **seconds per round**: training + aggregation + evaluation wall time;
* **backdoor durability** (``backdoor_*``, runs with an attack success rate):
  the rounds the backdoor outlives the attacker's last round, see
  :mod:`fedpoison.metrics.durability`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from fedpoison.metrics.durability import durability_metrics

#: Default number of trailing evaluations averaged into "final" numbers.
LAST_K = 3
#: Default target accuracy for the convergence-speed metric.
TARGET_ACCURACY = 0.8


def _evaluated(history: pd.DataFrame, column: str) -> pd.DataFrame:
    """The ``round`` and ``column`` of the rows where ``column`` was measured."""
    if column not in history or "round" not in history:
        return pd.DataFrame({"round": pd.Series(dtype=float), column: pd.Series(dtype=float)})
    rows = history[["round", column]].dropna()
    return rows.astype(float)


def final_window(rounds: np.ndarray, last_k: int) -> np.ndarray:
    """Bool mask of the evaluations made in the last ``last_k`` rounds of the run.

    ``rounds`` are the evaluated rounds, increasing; the window ends at the last
    one and always holds it.

    >>> final_window(np.array([0, 1, 2, 3, 4]), 3).tolist()
    [False, False, True, True, True]
    >>> final_window(np.array([0, 10, 19]), 3).tolist()  # eval.every=10, 20 rounds
    [False, False, True]
    """
    if len(rounds) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(rounds) > rounds[-1] - last_k


def accuracy_metrics(rounds: np.ndarray, acc: np.ndarray, *, last_k: int = LAST_K,
                     target: float = TARGET_ACCURACY) -> dict[str, float]:
    """Accuracy, convergence and stability numbers of one accuracy curve.

    Parameters
    ----------
    rounds, acc:
        Round indices (0-based) of the evaluations and the accuracy measured
        after each; same length, rounds increasing.
    last_k:
        Final rounds whose evaluations are averaged into ``final_accuracy`` and
        into the stability std (:func:`final_window`).
    target:
        Accuracy whose first attainment defines ``rounds_to_target``.

    Examples
    --------
    >>> m = accuracy_metrics(np.array([0, 1, 2, 3]), np.array([0.2, 0.6, 0.5, 0.9]), last_k=2)
    >>> m["final_accuracy"], m["max_accuracy_drop"], m["rounds_to_target"]
    (0.7, 0.1, 4.0)
    """
    if last_k < 1:
        raise ValueError(f"last_k: expected an integer >= 1, got {last_k}")
    nan = math.nan
    if len(acc) == 0:
        return {"final_accuracy": nan, "best_accuracy": nan, "rounds_to_target": nan, "accuracy_auc": nan,
                "accuracy_std_last_k": nan, "max_accuracy_drop": nan}
    tail = acc[final_window(rounds, last_k)]
    reached = np.flatnonzero(acc >= target)
    if len(acc) > 1 and rounds[-1] > rounds[0]:
        auc = float(np.trapezoid(acc, rounds) / (rounds[-1] - rounds[0]))
    else:
        auc = float(acc[-1])
    drops = -np.diff(acc)
    return {
        "final_accuracy": round(float(tail.mean()), 12),
        "best_accuracy": float(acc.max()),
        "rounds_to_target": float(rounds[reached[0]] + 1) if len(reached) else nan,
        "accuracy_auc": auc,
        "accuracy_std_last_k": float(tail.std()) if len(tail) > 1 else nan,
        "max_accuracy_drop": round(float(max(drops.max(), 0.0)), 12) if len(drops) else 0.0,
    }


def summarize(history: pd.DataFrame, timings: pd.DataFrame, *, last_k: int = LAST_K,
              target: float = TARGET_ACCURACY) -> dict[str, Any]:
    """The run-level numbers saved in ``summary.json`` (see the module docstring).

    ``history`` needs ``round`` and, on evaluated rounds, ``test_accuracy`` and
    ``test_loss``; ``attack_success_rate`` and ``targeted_misclassification``
    are summarised when present. ``timings`` has ``train_s``, ``aggregate_s``
    and ``eval_s`` per round.
    """
    out: dict[str, Any] = {"rounds": len(history)}
    acc = _evaluated(history, "test_accuracy")
    out["evaluations"] = len(acc)
    out["last_k"] = int(last_k)
    out["target_accuracy"] = float(target)
    out.update(accuracy_metrics(acc["round"].to_numpy(), acc["test_accuracy"].to_numpy(),
                                last_k=last_k, target=target))
    loss = _evaluated(history, "test_loss")["test_loss"]
    out["final_loss"] = float(loss.iloc[-1]) if len(loss) else math.nan
    for key in ("attack_success_rate", "targeted_misclassification"):
        rows = _evaluated(history, key)
        if len(rows):
            values = rows[key].to_numpy()
            out[key] = round(float(values[final_window(rows["round"].to_numpy(), last_k)].mean()), 12)
            out[f"max_{key}"] = float(values.max())
    if "attack_success_rate" in out or "targeted_misclassification" in out:
        out["clean_accuracy"] = out["final_accuracy"]
    out.update(durability_metrics(history))
    cols = [c for c in ("train_s", "aggregate_s", "eval_s") if c in timings]
    total = timings[cols].sum(axis=1) if len(timings) and cols else pd.Series(dtype=float)
    out["seconds_per_round"] = float(total.mean()) if len(total) else math.nan
    return out
