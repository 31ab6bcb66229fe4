"""Summary metrics of one run, computed from its per-round history."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def _finite(values: pd.Series) -> pd.Series:
    return values.dropna()


def summarize(history: pd.DataFrame, timings: pd.DataFrame, *, last_k: int = 1) -> dict[str, Any]:
    """The run-level numbers saved in ``summary.json``.

    ``final_accuracy`` is the accuracy of the last evaluation (``last_k = 1``) or
    the mean of the last ``last_k`` evaluations.
    """
    out: dict[str, Any] = {"rounds": int(len(history))}
    acc = _finite(history["test_accuracy"]) if "test_accuracy" in history else pd.Series(dtype=float)
    if len(acc):
        out["final_accuracy"] = float(acc.iloc[-last_k:].mean())
        out["best_accuracy"] = float(acc.max())
        out["final_loss"] = float(_finite(history["test_loss"]).iloc[-1])
    else:
        out["final_accuracy"] = out["best_accuracy"] = out["final_loss"] = math.nan
    for key in ("attack_success_rate", "targeted_misclassification"):
        if key in history and len(_finite(history[key])):
            out[key] = float(_finite(history[key]).iloc[-1])
            out[f"max_{key}"] = float(_finite(history[key]).max())
    if "attack_success_rate" in out or "targeted_misclassification" in out:
        out["clean_accuracy"] = out["final_accuracy"]
    total = timings[["train_s", "aggregate_s", "eval_s"]].sum(axis=1) if len(timings) else pd.Series(dtype=float)
    out["seconds_per_round"] = float(total.mean()) if len(total) else math.nan
    return out
