"""Print the durability table of a backdoor-lifespan grid, one row per defense x attack, seeds side by side.

Run: ``python examples/attacks2020/lifespan_table.py runs/neurotoxin-lifespan``

Reads every finished run under ``DIR/runs`` (``config.yaml``, ``summary.json``,
``history.csv``). Columns: peak ASR from the first attack round, ASR after the
last attack round, rounds from then until ASR < 0.5 and < 0.1 (``≥``: the run
ended first), clean accuracy after the last attack round and at the end, each
minus the no-attack run of the same seed and defense when there is one.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import yaml


def variant(cfg: dict) -> tuple[str, str]:
    """``(defense, attack label)`` of a run's config."""
    attack = cfg["attack"]
    label = attack["name"]
    if attack.get("mask_source", "global_update") != "global_update":
        label += f" ({attack['mask_source']})"
    return cfg["defense"]["name"], label


def accuracy_at(run: Path, round_: int) -> float | None:
    with (run / "history.csv").open() as f:
        for row in csv.DictReader(f):
            if int(row["round"]) == round_ and row.get("test_accuracy"):
                return float(row["test_accuracy"])
    return None


def span(s: dict, level: str) -> str:
    v = s.get(f"backdoor_lifespan_{level}")
    if v is None or v != v:
        return "-"
    return ("≥ " if s.get(f"backdoor_lifespan_{level}_censored") else "") + f"{v:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    rows: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for run in sorted((args.folder / "runs").iterdir()):
        if not (run / "DONE.json").is_file():
            continue
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        summary = json.loads((run / "summary.json").read_text())
        last = summary.get("backdoor_last_attack_round")
        last_round = int(cfg["attack"]["end_round"]) if last is None or last != last else int(last)
        rows[variant(cfg)][int(cfg["seed"])] = {
            **summary, "acc_at_last": accuracy_at(run, last_round)}

    print("| defense | attack | peak ASR | ASR at last attack round | rounds to ASR < 0.5 | rounds to ASR < 0.1 "
          "| accuracy at last attack round (- none) | final accuracy (- none) |")
    print("|---|---|---|---|---|---|---|---|")
    for (defense, attack), seeds in sorted(rows.items()):
        print(row(defense, attack, seeds, rows.get((defense, "none"), {})))


def num(v: object, signed: bool = False) -> str:
    if not isinstance(v, (int, float)) or v != v:
        return "-"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def row(defense: str, attack: str, seeds: dict[int, dict], none: dict[int, dict]) -> str:
    """One markdown row: each cell lists the seeds' values, ``a / b / c``."""
    order = sorted(seeds)

    def acc(s: dict, seed: int, key: str) -> str:
        base = none.get(seed, {}).get(key)
        gap = "" if base is None or attack == "none" or s.get(key) is None else f" ({num(s[key] - base, True)})"
        return num(s.get(key)) + gap

    cells = [
        [num(seeds[s].get("backdoor_peak_asr")) for s in order],
        [num(seeds[s].get("backdoor_asr_at_last_attack")) for s in order],
        [span(seeds[s], "50") for s in order],
        [span(seeds[s], "10") for s in order],
        [acc(seeds[s], s, "acc_at_last") for s in order],
        [acc(seeds[s], s, "final_accuracy") for s in order],
    ]
    return (f"| {defense} | {attack} (seeds {', '.join(map(str, order))}) | "
            + " | ".join(" / ".join(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
