"""One line per run of grid output folders: the varied settings, accuracy, ASR, and what crfl / foundation_fl did.

    python examples/defenses2021/run_table.py runs/crfl-schedule runs/ffl-fedsgd

Columns: ``acc`` the final clean accuracy (mean of the last ``last_k`` evaluations), ``asr`` and ``peak``
the backdoor success (same mean, and the highest), ``cert`` crfl's certified accuracy, ``clipped`` in how
many rounds crfl's clip bound, and ``copied_attacker`` in how many rounds foundation_fl copied a
malicious client's update (``defense_ffl_client`` against the run's malicious clients).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import yaml


def row(run: Path) -> dict[str, object]:
    """The figures of one run folder."""
    s = json.loads((run / "summary.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    h = pd.read_csv(run / "history.csv")
    att = cfg["attack"]
    out: dict[str, object] = {
        "seed": cfg["seed"], "attack": att["name"], "space": att.get("space", ""),
        "defense": cfg["defense"]["name"], "pre": "+".join(cfg["defense"].get("pre") or []),
        "score": cfg["defense"].get("ffl_score", ""),
        "acc": s.get("clean_accuracy", s.get("final_accuracy")),
        "asr": s.get("attack_success_rate"), "peak": s.get("max_attack_success_rate"),
        "cert": s.get("crfl_certified_accuracy"),
    }
    if "defense_crfl_clipped" in h:
        out["clipped"] = f"{int(h['defense_crfl_clipped'].sum())}/{len(h)}"
    if "defense_ffl_client" in h:
        bad = set(s.get("malicious_clients") or [])
        copied = h["defense_ffl_client"].dropna().astype(int)
        out["copied_attacker"] = f"{int(copied.isin(bad).sum())}/{len(copied)}"
    return out


def main(folders: list[str]) -> None:
    """Print the table of every finished run under the given grid folders."""
    rows = [row(p.parent) for f in folders for p in sorted(Path(f).glob("runs/*/DONE.json"))]
    frame = pd.DataFrame(rows).sort_values(["seed", "attack", "defense", "pre"])
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main(sys.argv[1:])
