"""Plug-ins from a user's own file: the CLI, a YAML config, a grid with 2 workers, Python, entry points.

The plug-in file is ``examples/plugins/my_plugins.py`` (an attack, a rule, an
auditor, a partition and a model with params of their own), copied to a folder
outside the package so nothing is found by accident.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

import fedpoison
from fedpoison.cli import main
from fedpoison.errors import ConfigError
from fedpoison.plugins import load_plugins, registries

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "my_plugins.py"
SMALL = ["rounds=2", "clients.num=8", "dataset.limit=400"]
MINE = ["attack.name=coordinate_noise", "attack.fraction=0.25", "attack.sigma=50",
        "defense.name=norm_trimmed_mean", "defense.keep=0.75", "model.name=wide_mlp", "model.width=24",
        "model.depth=1", "partition.name=label_blocks", "partition.mix=0.5", "audit.name=cosine_gate"]


@pytest.fixture(scope="module", autouse=True)
def _registries_restored() -> Iterator[None]:
    """Leave the registries (and the loaded-file cache) as they were, so later test modules see built-ins only."""
    from fedpoison.plugins import loading

    regs = registries()
    saved = {name: dict(reg._entries) for name, reg in regs.items()}
    loaded = dict(loading._loaded)
    yield
    for name, reg in regs.items():
        reg._entries.clear()
        reg._entries.update(saved[name])
    loading._loaded.clear()
    loading._loaded.update(loaded)


@pytest.fixture(scope="module")
def plugin_file() -> Path:
    """The example file itself: a process loads a plug-in file once, from one place (a copy elsewhere
    holding the same names is another plug-in, and registering it would clash).
    """
    return EXAMPLE


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _check_run(out: Path, plugin_file: Path) -> pd.DataFrame:
    cfg = (out / "config.yaml").read_text()
    assert str(plugin_file) in cfg and "width: 24" in cfg and "mix: 0.5" in cfg and "keep: 0.75" in cfg
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 2
    audit = pd.read_csv(out / "audit.csv")
    assert audit["malicious"].sum() > 0
    return history


def test_cli_run_with_plugin_uses_every_plugin_and_its_params(plugin_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", "--plugin", str(plugin_file), *_sets(SMALL + MINE), "--out", str(out), "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "fedpoison", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _check_run(out, plugin_file)
    # the model really is the user's: depth 1, width 24 on 1x8x8 digits
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2


def test_yaml_config_names_plugins_relative_to_itself(plugin_file: Path, tmp_path: Path) -> None:
    config = tmp_path / "configs" / "exp.yaml"
    config.parent.mkdir()
    relative = os.path.relpath(plugin_file, config.parent)  # read relative to the config file, not the cwd
    lines = [f"plugins: [{relative}]", "rounds: 2", "clients: {num: 8}", "dataset: {limit: 400}"]
    nested: dict[str, dict[str, str]] = {}
    for item in MINE:
        key, value = item.split("=")
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    body = "\n".join(lines) + "\n" + "\n".join(
        f"{s}: {{{', '.join(f'{k}: {v}' for k, v in kv.items())}}}" for s, kv in nested.items())
    config.write_text(body + "\n")
    out = tmp_path / "yaml-run"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "fedpoison", "run", str(config), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    _check_run(out, plugin_file)


def test_grid_with_two_workers_loads_plugins_in_every_worker(plugin_file: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "name: mine\n"
        "base: {rounds: 2, clients: {num: 8}, dataset: {limit: 400}, model: {name: wide_mlp, width: 24, depth: 1},\n"
        "       attack: {name: coordinate_noise, fraction: 0.25}}\n"
        "axes:\n  defense.name: [norm_trimmed_mean, median]\n  seed: [0, 1]\n"
    )
    out = tmp_path / "grid-out"
    args = ["grid", str(grid), "--plugin", str(plugin_file), "--out", str(out), "--workers", "2", "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "fedpoison", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [p for p in (out / "runs").iterdir() if (p / "summary.json").exists()]
    assert len(runs) == 4
    assert not (out / "failed").exists() or not any((out / "failed").iterdir())


def test_python_api_with_plugins_key(plugin_file: Path) -> None:
    overrides = {k: v for k, v in (item.split("=") for item in SMALL + MINE)}
    result = fedpoison.run(overrides={**overrides, "plugins": [str(plugin_file)]})
    assert len(result.history) == 2
    assert result.config.model.params_dict() == {"width": 24, "depth": 1}


def test_param_of_another_plugin_exits_2_naming_the_key_and_its_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--set", "partition.name=iid", "--set", "partition.alpha=0.1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "partition.alpha" in err and "'dirichlet'" in err and "Traceback" not in err


def test_plugin_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    assert main(["list", "attacks", "--plugin", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "broken.py" in err and "RuntimeError: boom" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match=r"plugins\[0\]: expected an importable module"):
        fedpoison.load_config(overrides={"plugins": ["no_such_module_here"]})
    with pytest.raises(ConfigError, match="no such file"):
        fedpoison.load_config(overrides={"plugins": [str(tmp_path / "missing.py")]})


def test_loading_twice_is_a_no_op_and_a_clash_is_an_error(plugin_file: Path, tmp_path: Path) -> None:
    first = load_plugins([str(plugin_file)])[0]
    again = load_plugins([str(plugin_file)])[0]
    assert first is again
    attacks = registries()["attacks"]
    entry = attacks.get("coordinate_noise")
    attacks.register("coordinate_noise", description="x", params=entry.params)(entry.obj)  # same object: no-op
    assert attacks.get("coordinate_noise") is entry
    other = tmp_path / "other.py"
    other.write_text(
        "from fedpoison.attacks import Attack, register_attack\n"
        "from fedpoison.registry import NoParams\n"
        "@register_attack('coordinate_noise', description='clash', params=NoParams, reference='')\n"
        "class Clash(Attack):\n    pass\n"
    )
    with pytest.raises(ConfigError, match="'coordinate_noise' is already registered"):
        load_plugins([str(other)])


def test_redefinition_from_the_same_place_replaces_it_as_in_a_notebook() -> None:
    rules = registries()["defenses"]
    source = (
        "import torch\n"
        "from fedpoison.defenses import RULES, AggregationResult\n"
        "@RULES.register('notebook_mean', description='mean', requires='none')\n"
        "class NotebookMean:\n"
        "    def __init__(self, params=None, *, f=0): pass\n"
        "    def __call__(self, x, w, ctx):\n"
        "        n = x.shape[0]\n"
        "        return AggregationResult(x.mean(0), torch.full((n,), 1 / n), torch.ones(n, dtype=torch.bool))\n"
    )
    namespace: dict[str, object] = {"__name__": "__main__"}
    try:
        exec(compile(source, "<cell>", "exec"), namespace)  # a notebook cell ...
        first = rules.get("notebook_mean").obj
        exec(compile(source, "<cell>", "exec"), namespace)  # ... run again
        assert rules.get("notebook_mean").obj is not first
        assert rules.get("notebook_mean").obj is namespace["NotebookMean"]
    finally:
        rules.unregister("notebook_mean")


def test_entry_point_group_is_found_by_itself(plugin_file: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "my_fedpoison_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    shutil.copy(plugin_file, site / "my_fedpoison_plugins.py")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-fedpoison-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fedpoison.plugins]\nmine = my_fedpoison_plugins\n")
    env_path = str(site)
    proc = subprocess.run(
        [sys.executable, "-m", "fedpoison", "list", "attacks"], capture_output=True, text=True, timeout=120,
        env={**_env(), "PYTHONPATH": env_path + ":" + _env().get("PYTHONPATH", ""), "COLUMNS": "300"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "coordinate_noise" in proc.stdout


def _env() -> dict[str, str]:
    return dict(os.environ)


def test_custom_rule_changes_the_aggregate_in_a_real_run(plugin_file: Path) -> None:
    """The user's rule is the one the server calls: with keep=1/8 only the smallest-norm row survives."""
    base = {k: v for k, v in (item.split("=") for item in SMALL)}
    plain = fedpoison.run(overrides={**base, "plugins": [str(plugin_file)], "defense.name": "norm_trimmed_mean",
                                     "defense.keep": 1.0})
    one = fedpoison.run(overrides={**base, "plugins": [str(plugin_file)], "defense.name": "norm_trimmed_mean",
                                   "defense.keep": 0.125})
    assert not torch.equal(torch.tensor(plain.history["test_loss"].to_numpy()),
                           torch.tensor(one.history["test_loss"].to_numpy()))
