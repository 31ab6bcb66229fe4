"""The Fashion-MNIST grids of examples/defenses2021 for alignins, multi_metrics, foundation_fl and backdoor_indicator."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpoison.experiments.grid import load_grid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "defenses2021"


@pytest.mark.parametrize(("name", "runs"), [("foundation_fl.yaml", 6), ("foundation_fl_coordinate.yaml", 3),
                                            ("detection_untargeted.yaml", 6), ("backdoor_indicator.yaml", 2)])
def test_grids_expand_to_the_documented_runs(name: str, runs: int) -> None:
    grid = load_grid(EXAMPLES / name)
    assert len(grid) == runs
    cfg = grid.runs[-1].config
    assert (cfg.dataset.name, cfg.model.name, cfg.partition.name, cfg.clients.num) == ("fashion-mnist", "cnn28",
                                                                                        "fang", 40)
    assert cfg.attack.fraction == 0.2
