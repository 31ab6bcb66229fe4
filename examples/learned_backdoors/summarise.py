"""Print a grid's clean accuracy, ASR and durability figures, one row per attack setting (mean over seeds).

Run: ``python3 examples/learned_backdoors/summarise.py runs/chameleon-vs-backdoor``
(a folder written by ``fedpoison grid``). The accuracy gap is to the ``attack=none`` row of the same seed.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

KEYS = ("final_accuracy", "attack_success_rate", "backdoor_peak_asr", "backdoor_asr_at_last_attack",
        "backdoor_lifespan_50", "backdoor_lifespan_10")


def main() -> None:
    """Read ``plan.json`` and each finished run's ``summary.json``; print a markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    plan = json.loads((args.folder / "plan.json").read_text())
    rows: dict[str, dict[int, dict]] = {}
    for run in plan["runs"]:
        path = args.folder / "runs" / run["key"] / "summary.json"
        if not path.exists():
            continue
        label = run["label"]
        seed = int(m.group(1)) if (m := re.search(r"seed=(\d+)", label)) else 0
        setting = re.sub(r"\s*seed=\d+", "", label)
        rows.setdefault(setting, {})[seed] = json.loads(path.read_text())
    clean = next((v for k, v in rows.items() if "attack=none" in k), {})
    print("| setting | seeds | clean acc. | vs no attack | ASR (final) | per seed | peak ASR | ASR at last attack |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for setting, seeds in rows.items():
        def mean(key: str, seeds: dict[int, dict] = seeds) -> float | None:
            vals = [s[key] for s in seeds.values() if isinstance(s.get(key), (int, float))]
            return statistics.mean(vals) if vals else None
        gaps = [s["final_accuracy"] - clean[k]["final_accuracy"] for k, s in seeds.items() if k in clean]
        per_seed = " / ".join(f"{seeds[k].get('attack_success_rate') or 0:.3f}" for k in sorted(seeds))
        cells = [mean(k) for k in KEYS]
        fmt = [("" if v is None else f"{v:.3f}") for v in cells]
        gap = f"{statistics.mean(gaps):+.3f}" if gaps and "attack=none" not in setting else ""
        print(f"| {setting} | {len(seeds)} | {fmt[0]} | {gap} | {fmt[1]} | {per_seed} | {fmt[2]} | {fmt[3]} |")


if __name__ == "__main__":
    main()
