"""Every YAML file under examples/ loads: a grid expands and validates, a run config validates.

The example grids back the figures in the docs; one that no longer loads (a renamed key, a removed
option) would leave a figure that nobody can rerun.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedpoison.experiments.grid import GRID_KEYS, load_grid
from fedpoison.plugins import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.rglob("*.yaml"))


def test_there_are_example_files() -> None:
    assert len(FILES) >= 20


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_file_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES.parent)  # some grids name plug-in files relative to the repository root
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    if set(data) <= set(GRID_KEYS) and {"base", "axes", "zip"} & set(data):
        grid = load_grid(path)
        assert len(grid) >= 1
        assert all(r.config.rounds >= 1 for r in grid.runs)
    else:
        cfg = load_config(path)
        assert cfg.rounds >= 1
