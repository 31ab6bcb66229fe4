"""Load: a grid of many tiny runs on 2 workers keeps worker memory flat (issue 9).

Runs ``fedpoison grid`` on N tiny digits runs (1 round, 5 clients) with 2 local
workers, samples the resident memory of every process under the grid (the fork
server and its workers) from /proc while it runs, and reports each worker's RSS
after the first 10% of runs and at the end. Flat memory means the growth per 100
runs stays within noise (a few MB), not proportional to the number of runs.

    python benchmarks/load_grid.py --runs 200 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def grid_file(path: Path, runs: int) -> Path:
    path.write_text(
        "name: load\n"
        "base: {rounds: 1, clients: {num: 5}, dataset: {name: digits}}\n"
        f"axes: {{seed: {list(range(runs))}}}\n"
    )
    return path


def run_and_sample(runs: int, workers: int, out: Path, interval: float = 0.1) -> dict[str, object]:
    """Run the grid and sample worker memory; return per-worker RSS at 10% and at the end."""
    grid = grid_file(out.parent / "load.yaml", runs)
    cmd = [sys.executable, "-m", "fedpoison", "grid", str(grid), "--out", str(out),
           "--workers", str(workers), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[tuple[int, dict[int, float]]] = []
    runs_dir = out / "runs"
    while proc.poll() is None:
        done = sum(1 for p in runs_dir.glob("*/summary.json")) if runs_dir.exists() else 0
        mem = {pid: r for pid in descendants(proc.pid) if (r := rss_mb(pid)) is not None}
        samples.append((done, mem))
        time.sleep(interval)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "grid failed")
    early_mark = max(1, runs // 10)
    early: dict[int, float] = {}
    late: dict[int, float] = {}
    for done, mem in samples:
        for pid, r in mem.items():
            if done <= early_mark:
                early[pid] = max(early.get(pid, 0.0), r)
            late[pid] = r
    both = sorted(set(early) & set(late))
    finished = sum(1 for p in runs_dir.glob("*/summary.json"))
    return {
        "runs": runs, "finished": finished, "workers": workers, "wall_s": round(wall, 1),
        "runs_per_min": round(60 * finished / wall, 1),
        "rss_mb_after_10pct": {pid: round(early[pid], 1) for pid in both},
        "rss_mb_at_end": {pid: round(late[pid], 1) for pid in both},
        "max_growth_mb": round(max((late[p] - early[p] for p in both), default=0.0), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_and_sample(args.runs, args.workers, Path(tmp) / "out")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
