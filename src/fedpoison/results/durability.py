"""The backdoor durability table of a grid: ASR, peak, lifespans and clean-accuracy cost.

One row per targeted attack x defense (and any other varying axis), cells
``mean ± spread`` over seeds. Lifespans come from
:mod:`fedpoison.metrics.durability`; a mean that includes a censored run (the
backdoor was still above the level when the run ended) is a lower bound and is
written ``≥ mean``. The clean-accuracy cost is the grid's ``accuracy_drop``:
the matching no-attack run's final accuracy minus this run's (``–`` when the
grid has no ``attack.name: none`` run with the same other settings).
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from fedpoison.results.export import format_mean_std, latex_escape
from fedpoison.results.stats import check_stat
from fedpoison.results.tables import Results, aggregate_seeds, group_columns

#: Columns of the table: summary metric -> heading.
DURABILITY_COLUMNS: dict[str, str] = {
    "attack_success_rate": "ASR",
    "backdoor_peak_asr": "peak ASR",
    "backdoor_asr_at_last_attack": "ASR at last attack",
    "backdoor_lifespan_50": "rounds to ASR < 0.5",
    "backdoor_lifespan_10": "rounds to ASR < 0.1",
    "accuracy_drop": "clean-acc. cost",
}


def has_durability(results: Results) -> bool:
    """Whether any run of ``results`` has a backdoor lifespan (a targeted run whose attacker stopped)."""
    runs = results.runs
    return "backdoor_lifespan_50" in runs and pd.to_numeric(runs["backdoor_lifespan_50"], errors="coerce").notna().any()


def durability_table(results: Results, *, digits: int = 3, latex: bool = False, stat: str = "std") -> pd.DataFrame:
    """One row per targeted configuration, one ``mean ± spread`` column per durability figure.

    Runs without an attack success rate are left out. Lifespan cells whose
    runs include a censored one start with ``≥`` (``$\\geq$`` in LaTeX).
    """
    check_stat(stat)
    runs = results.runs
    targeted = runs["attack_success_rate"].notna() if "attack_success_rate" in runs else runs.index != runs.index
    sub = dataclasses.replace(results, runs=runs[targeted])
    wanted = [m for m in DURABILITY_COLUMNS if m in sub.runs]
    censor_cols = [f"{m}_censored" for m in ("backdoor_lifespan_50", "backdoor_lifespan_10") if m in wanted]
    agg = aggregate_seeds(sub, wanted + [c for c in censor_cols if c in sub.runs])
    by = group_columns(sub)
    out = agg[by].copy()
    if latex:  # the report escapes the two label columns; other axes are escaped here
        for col in by[2:]:
            out[col] = [latex_escape(str(v)) for v in out[col]]
    geq = "$\\geq$ " if latex else "≥ "
    for m in wanted:
        cells = []
        for i in agg.index:
            text = format_mean_std(agg.loc[i, f"{m}_mean"], agg.loc[i, f"{m}_{stat}"], digits=digits, latex=latex)
            censored = agg.loc[i, f"{m}_censored_mean"] if f"{m}_censored_mean" in agg else math.nan
            if isinstance(censored, float) and not math.isnan(censored) and censored > 0:
                text = geq + text
            cells.append(text)
        out[DURABILITY_COLUMNS[m]] = cells
    out["seeds"] = agg["n_seeds"]
    return out.rename(columns={"attack_label": "attack", "defense_label": "defense"})
