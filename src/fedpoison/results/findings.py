"""Claims checked on the result tables, not read off a plot.

:func:`check_findings` tests three headline claims of the poisoning literature
on any results with a no-attack baseline (``attack.name: none``) and FedAvg
(``defense.name: mean`` with no pre-aggregator or auditor). Each finding
holds, does not hold, or is not applicable (the grid has nothing to test it
on: no untargeted attack, no targeted attack, no defense besides FedAvg, or no
collapse to recover from):

1. **FedAvg collapses under an untargeted attack**: some attack without a
   backdoor target leaves FedAvg at most ``collapse`` (default half) of its
   no-attack final accuracy, or makes it diverge.
2. **A backdoor succeeds under FedAvg**: some targeted attack reaches an
   attack success rate of at least ``backdoor_asr`` (default 0.5).
3. **Robust rules and auditing recover most of the accuracy**: under every
   untargeted attack that collapsed FedAvg, every other defense recovers at
   least ``recover`` (default half) of what FedAvg lost:
   ``(acc(attack, defense) - acc(attack, mean)) / (acc(none, mean) - acc(attack, mean))``.

All accuracies are means over seeds (and over any other axes) of the final
accuracy; a diverged run counts as accuracy 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from fedpoison.results.tables import Results

FEDAVG = "mean"


@dataclass(frozen=True)
class Finding:
    """A claim checked on the result tables: what is claimed, what was measured, whether it holds.

    Attributes
    ----------
    claim:
        The claim, in one sentence.
    measured:
        The numbers it was checked on, or why it could not be checked.
    holds:
        Whether the claim holds (``False`` when not applicable).
    applicable:
        ``False`` when the results hold nothing to check the claim on.
    """

    claim: str
    measured: str
    holds: bool
    applicable: bool = True

    @property
    def status(self) -> str:
        """``"holds"``, ``"does not hold"`` or ``"not applicable"``."""
        if not self.applicable:
            return "not applicable"
        return "holds" if self.holds else "does not hold"


def _means(results: Results) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = results.runs.copy()
    acc = runs["final_accuracy"].astype(float)
    if "diverged" in runs:
        acc = acc.where(~runs["diverged"].astype(bool), 0.0)
    runs["_acc"] = acc
    accuracy = runs.groupby(["attack_label", "defense_label"], sort=False)["_acc"].mean().unstack()
    asr = (runs.groupby(["attack_label", "defense_label"], sort=False)["attack_success_rate"].mean().unstack()
           if "attack_success_rate" in runs else pd.DataFrame())
    return accuracy, asr


def check_findings(results: Results, *, collapse: float = 0.5, backdoor_asr: float = 0.5,
                   recover: float = 0.5) -> list[Finding]:
    """The three claims (see the module docstring); empty when there is no baseline or no FedAvg."""
    accuracy, asr = _means(results)
    if "none" not in accuracy.index or FEDAVG not in accuracy.columns:
        return []
    clean = float(accuracy.loc["none", FEDAVG])
    targeted = set(asr.dropna(how="all").index) if len(asr) else set()
    untargeted = [a for a in accuracy.index if a != "none" and a not in targeted]
    out: list[Finding] = []

    fedavg = {a: float(accuracy.loc[a, FEDAVG]) for a in untargeted if not math.isnan(accuracy.loc[a, FEDAVG])}
    collapsed = [a for a, v in fedavg.items() if v <= collapse * clean]
    shown = ", ".join(f"{a} {v:.3f}" for a, v in fedavg.items()) or "no untargeted attack in the grid"
    out.append(Finding("FedAvg collapses under at least one untargeted attack",
                       f"no-attack accuracy {clean:.3f}; under attack: {shown} (collapse: <= {collapse:.0%} of "
                       "no-attack)", bool(collapsed), applicable=bool(fedavg)))

    if len(asr) and FEDAVG in asr.columns:
        rates = {a: float(asr.loc[a, FEDAVG]) for a in targeted if not math.isnan(asr.loc[a, FEDAVG])}
    else:
        rates = {}
    shown = ", ".join(f"{a} ASR {v:.3f}" for a, v in rates.items()) or "no targeted attack in the grid"
    out.append(Finding("A backdoor succeeds under FedAvg", f"{shown} (success: ASR >= {backdoor_asr:.2f})",
                       any(v >= backdoor_asr for v in rates.values()), applicable=bool(rates)))

    defenses = [d for d in accuracy.columns if d != FEDAVG]
    details, ok = [], bool(collapsed) and bool(defenses)
    for a in collapsed:
        lost = clean - fedavg[a]
        for d in defenses:
            v = float(accuracy.loc[a, d]) if a in accuracy.index else math.nan
            share = (v - fedavg[a]) / lost if lost > 0 and not math.isnan(v) else math.nan
            details.append(f"{d} under {a}: {v:.3f} ({share:.0%} of the loss recovered)")
            ok = ok and not math.isnan(share) and share >= recover
    if not defenses:
        why = "no defense besides FedAvg in the grid"
    else:
        why = "FedAvg did not collapse under any untargeted attack: nothing to recover"
    out.append(Finding("Robust rules and auditing recover most of the accuracy", "; ".join(details) or why, ok,
                       applicable=bool(details)))
    return out
