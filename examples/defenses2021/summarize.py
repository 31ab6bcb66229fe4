"""One line per run of a grid output folder: accuracy, ASR, detection recall, FPR and fpr_clean.

    python examples/defenses2021/summarize.py runs/det runs/ffl runs/bi

``fpr_clean`` is the false-positive rate over the rounds in which no attacker
took part (no row of the round was attacked). A row counts as flagged as in
``fedpoison.metrics.detection``: with an auditor, flagged or not kept; without
one, not selected by the rule.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import yaml


def flags(log: pd.DataFrame) -> pd.Series:
    """Predicted positives of the audit log's participant rows."""
    if "flagged" in log:
        return log["flagged"].fillna(False).astype(bool) | ~log["kept"].fillna(True).astype(bool)
    return ~log["selected"].astype(bool)


def fpr_clean(log: pd.DataFrame) -> float:
    """False-positive rate over the rounds with no attacked row."""
    if "quarantined" in log:
        log = log[~log["quarantined"].eq(True)]
    attacked_rounds = set(log.loc[log["attacked"].astype(bool), "round"])
    clean = log[~log["round"].isin(attacked_rounds)]
    if clean.empty:
        return float("nan")
    return float(flags(clean).mean())


def summarize(run: Path) -> dict[str, object]:
    """The figures of one run folder."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    s = json.loads((run / "summary.json").read_text())
    log = pd.read_csv(run / "audit.csv")
    hist = pd.read_csv(run / "history.csv")
    asr = hist["attack_success_rate"].dropna().iloc[-1] if "attack_success_rate" in hist else float("nan")
    audit = cfg.get("audit", {}).get("name", "none")
    return {
        "attack": cfg["attack"]["name"],
        "defense": "+".join([*cfg["defense"].get("pre", []), cfg["defense"]["name"]]),
        "audit": audit if audit == "none" else f"{audit}({cfg['audit'].get('bi_source', '')})".replace("()", ""),
        "final_acc": round(s["final_accuracy"], 4),
        "asr": round(float(asr), 4),
        "recall": s.get("detection_recall"),
        "fpr": None if s.get("detection_fpr") is None else round(s["detection_fpr"], 4),
        "fpr_clean": round(fpr_clean(log), 4),
    }


def main(folders: list[str]) -> None:
    """Print a markdown table of every finished run under ``folders``."""
    rows = [summarize(p.parent) for f in folders for p in sorted(Path(f).glob("runs/*/summary.json"))]
    if not rows:
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
