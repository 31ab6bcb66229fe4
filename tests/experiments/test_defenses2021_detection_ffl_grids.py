"""The Fashion-MNIST grids of examples/defenses2021 for alignins, multi_metrics, foundation_fl and backdoor_indicator."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpoison.experiments.grid import load_grid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "defenses2021"


@pytest.mark.parametrize(("name", "runs"), [("foundation_fl.yaml", 6), ("foundation_fl_coordinate.yaml", 3),
                                            ("foundation_fl_fedsgd.yaml", 6), ("foundation_fl_fedsgd_coordinate.yaml", 3),
                                            ("foundation_fl_trim_update.yaml", 2),
                                            ("detection_untargeted.yaml", 6), ("backdoor_indicator.yaml", 2)])
def test_grids_expand_to_the_documented_runs(name: str, runs: int) -> None:
    grid = load_grid(EXAMPLES / name)
    assert len(grid) == runs
    cfg = grid.runs[-1].config
    assert (cfg.dataset.name, cfg.model.name, cfg.partition.name, cfg.clients.num) == ("fashion-mnist", "cnn28",
                                                                                        "fang", 40)
    assert cfg.attack.fraction == 0.2


def test_the_one_step_grid_is_the_papers_regime() -> None:
    """One SGD step of batch 32 at lr 0.01 without momentum per client and round; Trim crafted on the updates."""
    grid = load_grid(EXAMPLES / "foundation_fl_fedsgd.yaml")
    for run in grid.runs:
        local = run.config.local
        assert (local.steps, local.batch_size, local.lr, local.momentum) == (1, 32, 0.01, 0.0)
    trim = [r.config for r in grid.runs if r.config.attack.name == "fang_trim"]
    assert len(trim) == 2 and all(c.attack.params_dict()["space"] == "update" for c in trim)
