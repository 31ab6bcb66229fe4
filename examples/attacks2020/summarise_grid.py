"""One line per run of a backdoor grid folder: clean accuracy, its change against no attack, ASR.

Run: ``python examples/attacks2020/summarise_grid.py /work/runs/pgdx/pgd-cerberus``

The change in clean accuracy is against the no-attack run of the same seed and
defense (blank when the grid has none). ASR is the summary's
``attack_success_rate`` (mean over the evaluations of the last ``last_k``
rounds); peak ASR is the summary's ``backdoor_peak_asr``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml


def fmt(value: object) -> str:
    """Three decimals, or ``-`` for a missing value."""
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def load(folder: Path) -> list[dict[str, object]]:
    """Seed, attack, defense and summary of every finished run under ``folder/runs``."""
    rows = []
    for run in sorted((folder / "runs").iterdir()):
        if not (run / "DONE.json").exists():
            continue
        config = yaml.safe_load((run / "config.yaml").read_text())
        summary = json.loads((run / "summary.json").read_text())
        rows.append({"seed": config["seed"], "attack": config["attack"]["name"],
                     "defense": config["defense"]["name"], "summary": summary})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    rows = load(args.folder)
    clean = {(r["seed"], r["defense"]): r["summary"]["final_accuracy"] for r in rows if r["attack"] == "none"}
    print("| seed | defense | attack | clean accuracy | change vs no attack | ASR (last 3) | peak ASR |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["seed"], r["defense"] != "mean", r["defense"], r["attack"])):
        s = r["summary"]
        base = clean.get((r["seed"], r["defense"]))
        gap = None if base is None or r["attack"] == "none" else s["final_accuracy"] - base
        print(f"| {r['seed']} | {r['defense']} | {r['attack']} | {fmt(s['final_accuracy'])} | {fmt(gap)} | "
              f"{fmt(s.get('attack_success_rate'))} | {fmt(s.get('backdoor_peak_asr'))} |")
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        asr = r["summary"].get("attack_success_rate")
        if isinstance(asr, float):
            groups.setdefault((str(r["defense"]), str(r["attack"])), []).append(asr)
    for (defense, attack), values in sorted(groups.items()):
        if len(values) > 1:
            print(f"{defense} {attack}: ASR mean {statistics.mean(values):.3f} over {len(values)} seeds: "
                  + ", ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
