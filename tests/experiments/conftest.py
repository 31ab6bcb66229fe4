"""Fixtures for the experiment tests: a real small grid, hand-made result stores, tiny grids."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from experiment_fakes import TINY, write_fake_run

from fedpoison.experiments.executor import InlineExecutor
from fedpoison.experiments.grid import expand_grid
from fedpoison.experiments.runner import run_grid
from fedpoison.experiments.store import ResultStore


@pytest.fixture(scope="session")
def small_grid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real grid run in-process: 3 attacks x 2 defenses x 2 seeds of short digits runs."""
    grid = expand_grid({
        "name": "small",
        "base": {"rounds": 3, "clients": {"num": 8}, "dataset": {"limit": 400}, "attack": {"fraction": 0.25},
                 "local": {"epochs": 1}},
        "axes": {
            "attack": [{"name": "none"}, {"name": "sign_flip", "scale": 4.0},
                       {"name": "model_replacement", "scale": 2.0}],
            "defense.name": ["mean", "median"],
            "seed": [0, 1],
        },
        "analysis": {"last_k": 2, "target_accuracy": 0.5},
    })
    out = tmp_path_factory.mktemp("small-grid")
    progress = run_grid(grid, ResultStore(out), InlineExecutor(warm_up=False))
    assert progress.done == len(grid) == 12 and progress.failed == 0
    return out



@pytest.fixture
def fake_store(tmp_path: Path) -> Callable[[Sequence[tuple[dict[str, Any], pd.DataFrame, dict[str, Any] | None]]], Path]:
    """Build a results directory from (overrides, history, summary extras) triples."""

    def build(runs: Sequence[tuple[dict[str, Any], pd.DataFrame, dict[str, Any] | None]],
              name: str = "fake") -> Path:
        store = ResultStore(tmp_path / name)
        with store.writing():
            keys = [write_fake_run(store, o, h, summary=s) for o, h, s in runs]
            plan = {"name": name, "runs": [{"key": k, "index": i} for i, k in enumerate(keys)]}
            store.write_meta("plan.json", json.dumps(plan))
        return store.root

    return build


@pytest.fixture
def tiny_grid() -> Callable[..., Any]:
    """Expand a grid of tiny runs with the given axes."""

    def make(axes: dict[str, list[Any]], **extra: Any) -> Any:
        return expand_grid({"name": "tiny", "base": TINY, "axes": axes, **extra})

    return make



@pytest.fixture(scope="session")
def small_report(small_grid_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The report of the small grid, with the findings section."""
    from fedpoison.results import load
    from fedpoison.results.findings import check_findings
    from fedpoison.results.report import write_report

    results = load(small_grid_dir)
    return write_report(small_grid_dir, tmp_path_factory.mktemp("report"), results=results,
                        findings=check_findings(results))
