"""The Ray executor on a real local Ray instance (``ray.init(num_cpus=2)``).

Runs a tiny grid as Ray tasks through the CLI, checks every run finished into the
crash-safe store, then reruns the same command and checks that nothing is
recomputed, exactly as with the local executor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedpoison.cli import main

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

GRID = """\
name: ray-smoke
base:
  rounds: 2
  clients: {num: 6}
  dataset: {name: digits}
axes:
  seed: [0, 1]
  defense.name: [mean, median]
"""


@pytest.fixture(scope="module")
def local_ray() -> object:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _finished(out: Path) -> dict[str, float]:
    runs = sorted(p for p in (out / "runs").iterdir() if (p / "summary.json").exists())
    return {p.name: (p / "summary.json").stat().st_mtime for p in runs}


def test_grid_on_ray_finishes_every_run_and_resumes(local_ray: object, tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    out = tmp_path / "out"
    args = ["grid", str(grid), "--out", str(out), "--executor", "ray", "--workers", "2", "--quiet"]
    assert main(args) == 0
    first = _finished(out)
    assert len(first) == 4
    for key in first:
        summary = json.loads((out / "runs" / key / "summary.json").read_text())
        assert summary["rounds"] == 2 and summary["final_accuracy"] > 0.1
    # the same command again: every run is already in the store, nothing is recomputed
    assert main(args) == 0
    assert _finished(out) == first


def test_address_without_ray_executor_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    assert main(["grid", str(grid), "--out", str(tmp_path / "o"), "--address", "auto"]) == 2
    assert "--address: only used with --executor ray" in capsys.readouterr().err


def test_grid_on_ray_loads_user_plugins_in_every_task(local_ray: object, tmp_path: Path) -> None:
    """Ray tasks run in worker processes that never imported the plug-in file: the config brings it along."""
    plugin = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "my_plugins.py"
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "name: ray-plugins\n"
        "base: {rounds: 2, clients: {num: 6}, dataset: {name: digits, limit: 300},\n"
        "       model: {name: wide_mlp, width: 16, depth: 1}, attack: {name: coordinate_noise, fraction: 0.34}}\n"
        "axes:\n  defense.name: [norm_trimmed_mean, mean]\n"
    )
    out = tmp_path / "out"
    args = ["grid", str(grid), "--plugin", str(plugin), "--out", str(out), "--executor", "ray", "--workers", "2",
            "--quiet"]
    assert main(args) == 0
    finished = _finished(out)
    assert len(finished) == 2
    for key in finished:
        config = (out / "runs" / key / "config.yaml").read_text()
        assert str(plugin) in config and "name: wide_mlp" in config
