"""Print the figures of ``checks.py``'s runs: ASR, clean accuracy, lifespans.

Run: ``python examples/attacks2020/summarise.py /work/runs/atk1 [--prefix digits_]``
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def fmt(v: object) -> str:
    return "nan" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    runs = {p.stem.removeprefix(args.prefix): json.loads(p.read_text())
            for p in sorted(args.folder.glob(f"{args.prefix}[abc]*_*.json"))}
    base = runs.get("a_none", {}).get("summary", {}).get("final_accuracy")
    print("| run | clean acc. | acc. - no attack | ASR (last 3) | peak ASR | lifespan < 0.5 | lifespan < 0.1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, run in runs.items():
        s = run["summary"]
        comparable = name.startswith(("a_", "c_mean"))  # same rounds and defense as a_none
        gap = None if base is None or not comparable or s.get("final_accuracy") is None else s["final_accuracy"] - base
        spans = []
        for lvl in ("50", "10"):
            span, cens = s.get(f"backdoor_lifespan_{lvl}"), s.get(f"backdoor_lifespan_{lvl}_censored")
            spans.append(("≥ " if cens else "") + fmt(span))
        print(f"| {name} | {fmt(s.get('final_accuracy'))} | {fmt(gap)} | {fmt(s.get('attack_success_rate'))} | "
              f"{fmt(s.get('max_attack_success_rate'))} | {spans[0]} | {spans[1]} |")
    for group, attack in [(g, a) for g in ("b", "b2") for a in ("backdoor", "neurotoxin")]:
        seeds = [r["summary"] for n, r in runs.items() if n.startswith(f"{group}_{attack}_s")]
        if seeds:
            for lvl in ("50", "10"):
                vals = [s[f"backdoor_lifespan_{lvl}"] for s in seeds]
                cens = sum(bool(s[f"backdoor_lifespan_{lvl}_censored"]) for s in seeds)
                print(f"{group} {attack}: lifespan < 0.{lvl[0]} mean {statistics.mean(vals):.2f} over {len(vals)} seeds "
                      f"({cens} censored): {vals}")


if __name__ == "__main__":
    main()
