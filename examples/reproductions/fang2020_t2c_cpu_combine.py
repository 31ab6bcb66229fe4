"""Combine the cpu-scale runs of Fang et al. Table 2(c) made in several results folders into one report.

The cpu scale of ``fang2020_t2c`` was computed in pieces on a shared machine: seed 0 of every cell first
(an earlier results folder), then the cells whose attack changed (the partial-knowledge Krum search and the
Gaussian fit) and more seeds (the grids next to this script). This script reads every finished run of the
folders given, maps it to its cell by its resolved config (``config.yaml``), keeps for each (cell, seed) the
run of the LAST folder that has it (later folders hold the corrected attacks), and writes the ordinary
comparison report (``comparison.{html,tex,md,json}``) plus the Krum rows' selection counts.

Usage::

    python examples/reproductions/fang2020_t2c_cpu_combine.py OUT DIR [DIR ...]

It reads results folders and writes only under ``OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fedpoison.reproductions.collect import final_metric
from fedpoison.reproductions.compare import compare
from fedpoison.reproductions.report import counts, grid_markdown, write_report
from fedpoison.reproductions.spec import load_reproduction

REP = load_reproduction("fang2020_t2c")


def cell_of_config(cfg: dict[str, Any]) -> str | None:
    """``row/column`` of a run from its resolved config (None when it is not a cell of the table)."""
    attack, defense = cfg["attack"], cfg["defense"]["name"]
    name = attack["name"]
    if name == "none":
        column = "none"
    elif name == "gaussian":
        column = "gaussian"
    elif name == "label_flip":
        column = "label_flip"
    elif name in ("fang_krum", "fang_trim"):
        column = "partial" if attack.get("variant") == "partial" else "full"
    else:
        return None
    if defense == "mean":
        return "ref/fedavg" if column == "none" else None
    return f"{defense}/{column}"


def finished_runs(folder: Path) -> list[tuple[str, int, Path]]:
    """``(cell, seed, run folder)`` of every finished run in ``folder/runs``."""
    out: list[tuple[str, int, Path]] = []
    if not (folder / "runs").is_dir():  # a grid not started yet
        return out
    for run in sorted((folder / "runs").iterdir()):
        if not (run / "DONE.json").is_file() or not (run / "history.csv").is_file():
            continue
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cell = cell_of_config(cfg)
        if cell is not None:
            out.append((cell, int(cfg["seed"]), run))
    return out


def krum_picks(run: Path) -> tuple[int, int]:
    """Rounds in which the server's Krum selected a malicious row, and rounds."""
    audit = pd.read_csv(run / "audit.csv")
    picked = audit[audit["selected"] & audit["malicious"]]["round"].nunique()
    return int(picked), int(audit["round"].nunique())


def main(argv: list[str]) -> int:
    out, folders = Path(argv[0]), [Path(a) for a in argv[1:]]
    chosen: dict[tuple[str, int], tuple[Path, Path]] = {}
    for folder in folders:  # later folders replace earlier ones
        for cell, seed, run in finished_runs(folder):
            chosen[(cell, seed)] = (folder, run)
    values: dict[str, list[float]] = {}
    lines = []
    wall = 0.0
    for (cell, seed), (folder, run) in sorted(chosen.items()):
        value = final_metric(pd.read_csv(run / "history.csv"), REP.paper.metric, REP.paper.last_k)
        values.setdefault(cell, []).append(value)
        done = json.loads((run / "DONE.json").read_text())
        wall += float(done.get("wall_s", 0.0))
        extra = ""
        if cell.startswith("krum/"):
            picked, rounds = krum_picks(run)
            extra = f", Krum picked a malicious row in {picked}/{rounds} rounds"
        lines.append(f"- {cell} seed {seed}: {value:.3f} ({folder.name}/{run.name}, {done.get('wall_s', 0):.0f} s{extra})")
    results = compare(REP, values)
    meta = {"results": ", ".join(str(f) for f in folders), "runs": str(len(chosen)),
            "sum of run wall times (s)": round(wall, 1)}
    files = write_report(REP, "cpu", results, out, meta)
    (out / "runs.md").write_text("\n".join(lines) + "\n")
    print(grid_markdown(REP, results))
    print(", ".join(f"{k}: {v}" for k, v in counts(results).items()))
    print("\n".join(lines))
    print(f"report: {files.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
