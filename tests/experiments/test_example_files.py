"""Every YAML file under examples/ loads: a grid expands and validates, a run config validates, and each
resolved config validates again to itself.

The example grids back the figures in the docs; one that no longer loads (a renamed key, a removed
option) would leave a figure that nobody can rerun.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedpoison.experiments.grid import GRID_KEYS, load_grid
from fedpoison.plugins import load_config
from fedpoison.plugins.resolve import validate_config

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
        configs = [r.config for r in grid.runs]
    else:
        cfg = load_config(path)
        assert cfg.rounds >= 1
        configs = [cfg]
    # A grid worker validates the resolved config it is sent, and a saved config.yaml is validated again
    # when rerun: the resolved form, with every default filled in, must validate to the same config.
    for cfg in configs:
        assert validate_config(cfg.to_dict()) == cfg
