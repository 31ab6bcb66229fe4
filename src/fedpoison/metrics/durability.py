"""Backdoor durability: how long a backdoor outlives the attacker's last round.

Computed from a run's per-round history for every run that measures an attack
success rate (ASR). Definitions:

* **last attack round** :math:`L`: the last round in which a malicious client
  took part and attacked (the history's ``attack_active``), whatever stopped
  it (``attack.end_round``, the schedule, sampling). No such round: every
  durability figure is ``NaN``.
* **ASR at the last attack**: the evaluation made after round :math:`L`'s
  aggregation (``NaN`` when round :math:`L` was not evaluated).
* **lifespan below** :math:`\\tau` (``backdoor_lifespan_50`` for
  :math:`\\tau = 0.5`, ``backdoor_lifespan_10`` for 0.1): :math:`r - L` for the
  first evaluated round :math:`r \\ge L` with ASR below :math:`\\tau`. So 0 means
  the backdoor was already below :math:`\\tau` when the attacker stopped, and 1
  that one round of honest training took it below.
* **censoring**: when no evaluation at or after :math:`L` falls below
  :math:`\\tau` (the run ended first), the lifespan is not observed. It is then
  reported as the rounds observed, :math:`r_{last} - L` with
  :math:`r_{last}` the last evaluated round (a lower bound on the true
  lifespan), and ``backdoor_lifespan_50_censored`` is true. A mean over seeds
  that includes a censored run is a lower bound; the tables mark it ``≥``.
* **peak ASR** (``backdoor_peak_asr``): the largest ASR evaluated after the
  first attack round :math:`F` (rounds :math:`r \\ge F`). Evaluations before any
  attack are left out: a barely trained model that sends every input to one
  class scores ASR 1 at chance accuracy (often round 0) without any backdoor.
  The summary's ``max_attack_success_rate`` still counts every evaluation.
* **clean-accuracy cost** needs what the model would have reached without the
  attack, which one run cannot know: it is the grid's ``accuracy_drop``
  (the matching no-attack run's final accuracy minus this run's; same config
  except the ``attack.*`` keys), in the tables and the report.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

#: ASR levels whose crossing defines a lifespan, with their summary-key suffixes.
THRESHOLDS: dict[str, float] = {"50": 0.5, "10": 0.1}


def _active_rounds(history: pd.DataFrame) -> pd.Series:
    if "attack_active" not in history or "round" not in history:
        return pd.Series([], dtype=float)
    return history["round"][history["attack_active"].fillna(False).astype(bool)]


def last_attack_round(history: pd.DataFrame) -> int | None:
    """The last round whose ``attack_active`` is true, or ``None``."""
    active = _active_rounds(history)
    return int(active.max()) if len(active) else None


def first_attack_round(history: pd.DataFrame) -> int | None:
    """The first round whose ``attack_active`` is true, or ``None``."""
    active = _active_rounds(history)
    return int(active.min()) if len(active) else None


def lifespan(rounds: np.ndarray, asr: np.ndarray, last: int, threshold: float) -> tuple[float, bool]:
    """``(lifespan, censored)`` of a backdoor below ``threshold`` after round ``last``.

    ``rounds`` are the evaluated rounds (increasing) and ``asr`` the ASR
    measured after each. The lifespan is ``r - last`` for the first evaluated
    ``r >= last`` with ``asr < threshold``; when there is none it is censored:
    the rounds observed after ``last`` (0 when nothing was evaluated after it),
    with ``censored`` true.

    Examples
    --------
    >>> r = np.array([0, 1, 2, 3, 4, 5])
    >>> lifespan(r, np.array([0.1, 0.9, 0.95, 0.7, 0.4, 0.05]), 2, 0.5)
    (2.0, False)
    >>> lifespan(r, np.array([0.1, 0.9, 0.95, 0.7, 0.4, 0.05]), 2, 0.01)
    (3.0, True)
    """
    after = rounds >= last
    below = np.flatnonzero(after & (asr < threshold))
    if len(below):
        return float(rounds[below[0]] - last), False
    observed = rounds[after]
    return float(observed[-1] - last) if len(observed) else 0.0, True


def durability_metrics(history: pd.DataFrame) -> dict[str, Any]:
    """The ``backdoor_*`` summary figures of one run (module docstring); ``{}`` without an ASR column."""
    if "attack_success_rate" not in history or "round" not in history:
        return {}
    rows = history[["round", "attack_success_rate"]].dropna().astype(float)
    rounds = rows["round"].to_numpy()
    asr = rows["attack_success_rate"].to_numpy()
    last = last_attack_round(history)
    out: dict[str, Any] = {"backdoor_last_attack_round": math.nan if last is None else float(last)}
    at_last = asr[rounds == last] if last is not None else np.zeros(0)
    out["backdoor_asr_at_last_attack"] = float(at_last[0]) if len(at_last) else math.nan
    first = first_attack_round(history)
    since = asr[rounds >= first] if first is not None else np.zeros(0)
    out["backdoor_peak_asr"] = float(since.max()) if len(since) else math.nan
    for suffix, threshold in THRESHOLDS.items():
        if last is None or len(rounds) == 0:
            out[f"backdoor_lifespan_{suffix}"], out[f"backdoor_lifespan_{suffix}_censored"] = math.nan, math.nan
            continue
        span, censored = lifespan(rounds, asr, last, threshold)
        out[f"backdoor_lifespan_{suffix}"] = span
        out[f"backdoor_lifespan_{suffix}_censored"] = censored
    return out
