"""Load, small version: worker memory stays flat over a grid of tiny runs.

The full check (200 runs) is ``benchmarks/load_grid.py``; its figures are in
``benchmarks/RESULTS.md``. Promise (LIMITS.md, "Load").
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "load_grid.py"


def _bench() -> object:
    spec = importlib.util.spec_from_file_location("load_grid", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_grid"] = module
    spec.loader.exec_module(module)
    return module


def test_worker_memory_is_flat_over_40_tiny_runs(tmp_path: Path) -> None:
    report = _bench().run_and_sample(40, 2, tmp_path / "out")  # type: ignore[attr-defined]
    assert report["finished"] == 40
    assert report["rss_mb_at_end"], "the grid's worker processes were sampled"
    # after the first 4 runs every worker has loaded what it needs; 36 more runs add ~nothing
    assert report["max_growth_mb"] < 40, report
