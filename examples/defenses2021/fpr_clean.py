"""Print detection recall, FPR and fpr_clean of runs from their audit.csv.

fpr_clean: false positives among the rows of rounds in which no attacker took part (no ``attacked``
row). Flags are read as fedpoison's detection metrics read them (fedpoison.metrics.detection):
an auditor's ``flagged`` or not ``kept``, else the rows a filtering rule did not select.

Usage: python3 examples/defenses2021/fpr_clean.py RUN_DIR [RUN_DIR...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from fedpoison.metrics.detection import participant_rows


def figures(run: Path) -> dict[str, float]:
    """Recall, FPR, fpr_clean, clean rounds, and the final accuracy and ASR of one run folder."""
    df = participant_rows(pd.read_csv(run / "audit.csv"))
    attacked_rounds = set(df.loc[df["positive"], "round"])
    clean = df[~df["round"].isin(attacked_rounds)]
    pos, neg = df[df["positive"]], df[~df["positive"]]
    summary = json.loads((run / "summary.json").read_text())
    return {
        "recall": float(pos["flag"].mean()) if len(pos) else float("nan"),
        "fpr": float(neg["flag"].mean()) if len(neg) else float("nan"),
        "fpr_clean": float(clean["flag"].mean()) if len(clean) else float("nan"),
        "clean_rounds": float(clean["round"].nunique()),
        "accuracy": float(summary.get("final_accuracy", float("nan"))),
        "asr": float(summary.get("attack_success_rate", float("nan"))),
    }


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        f = figures(Path(arg))
        print(f"{Path(arg).name}: " + ", ".join(f"{k} {v:.3f}" for k, v in f.items()))
