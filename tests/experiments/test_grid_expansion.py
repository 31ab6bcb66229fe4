"""Grid files: product, zip groups, exclude rules, overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from experiment_fakes import TINY

from fedpoison.errors import ConfigError
from fedpoison.experiments.demo import DEMO_GRID
from fedpoison.experiments.grid import expand_grid, load_grid

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def grid(**parts: Any) -> Any:
    return expand_grid({"base": TINY, **parts})


def test_product_in_file_order_first_axis_slowest() -> None:
    g = grid(axes={"seed": [0, 1, 2], "partition.name": ["iid", "dirichlet"]})
    assert len(g) == 6
    assert [(r.config.seed, r.config.partition.name) for r in g.runs] == [
        (0, "iid"), (0, "dirichlet"), (1, "iid"), (1, "dirichlet"), (2, "iid"), (2, "dirichlet")]
    assert [r.index for r in g.runs] == list(range(6))
    assert len({r.key for r in g.runs}) == 6
    assert g.axis_keys() == ["seed", "partition.name"]
    assert g.runs[1].label == "seed=0 partition.name=dirichlet"


def test_base_is_applied_and_keys_are_resolved_config_hashes() -> None:
    g = grid(axes={"seed": [3]})
    cfg = g.runs[0].config
    assert (cfg.rounds, cfg.clients.num, cfg.dataset.limit, cfg.seed) == (2, 5, 200, 3)
    assert g.runs[0].key == cfg.key()


def test_zip_group_varies_keys_together() -> None:
    g = grid(axes={"seed": [0, 1]},
             zip=[{"defense.name": ["mean", "median", "mean"], "audit.name": ["none", "none", "norm_mad"]}])
    assert len(g) == 6
    pairs = [(r.config.defense.name, r.config.audit.name) for r in g.runs[:3]]
    assert pairs == [("mean", "none"), ("median", "none"), ("mean", "norm_mad")]


def test_mapping_values_merge_into_the_section() -> None:
    g = grid(axes={"attack": [{"name": "none"}, {"name": "sign_flip", "scale": 3.0}]},
             base={**TINY, "attack": {"fraction": 0.2}})
    a = g.runs[1].config.attack
    assert (a.name, a.fraction, a.model_extra["scale"]) == ("sign_flip", 0.2, 3.0)
    assert g.runs[1].label == "attack=sign_flip(scale=3.0)"


def test_exclude_rules_match_any_of_a_list_and_defaults() -> None:
    g = grid(axes={"attack.name": ["none", "sign_flip"], "attack.fraction": [0.2, 0.4]},
             exclude=[{"attack.name": "none", "attack.fraction": [0.4]}])
    assert len(g) == 3 and g.excluded == 1
    assert ("none", 0.4) not in [(r.config.attack.name, r.config.attack.fraction) for r in g.runs]
    # a key the grid never sets matches its default
    g = grid(axes={"seed": [0, 1]}, exclude=[{"seed": 1, "defense.name": "mean"}])
    assert [r.config.seed for r in g.runs] == [0]
    # list-valued keys match when wrapped in a list
    g = grid(axes={"defense.pre": [[], ["clip"]]}, exclude=[{"defense.pre": [["clip"]]}])
    assert [r.config.defense.pre for r in g.runs] == [[]]


def test_overrides_apply_last_and_identical_configs_merge() -> None:
    g = expand_grid({"base": TINY, "axes": {"seed": [0, 1], "rounds": [2, 3]}}, ["rounds=5"])
    assert len(g) == 2 and g.merged == 2
    assert {r.config.rounds for r in g.runs} == {5}
    assert g.source["overrides"] == {"rounds": 5}


def test_analysis_settings_default_and_override() -> None:
    assert grid(axes={"seed": [0]}).analysis == {"last_k": 3, "target_accuracy": 0.8}
    assert grid(axes={"seed": [0]}, analysis={"last_k": 5}).analysis["last_k"] == 5


def test_load_grid_reads_a_file_and_a_base_path(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"name": "g", "base": "base.yaml", "axes": {"seed": [0, 1]}}))
    g = load_grid(tmp_path / "g.yaml")
    assert g.name == "g" and len(g) == 2 and g.runs[0].config.clients.num == 5
    assert g.source["base"]["clients"] == {"num": 5}


@pytest.mark.parametrize(("parts", "message"), [
    ({"axis": {"seed": [0]}}, "unknown key 'axis', did you mean 'axes'?"),
    ({"axes": {"clients.nmu": [1]}}, "axes.clients.nmu: unknown config key 'clients.nmu', did you mean 'clients.num'?"),
    ({"axes": {"seed": 3}}, "axes.seed: expected a non-empty list of values, got 3"),
    ({"axes": {"seed": []}}, "axes.seed: expected a non-empty list of values"),
    ({"axes": {"seed.x": [1]}}, "axes.seed.x: 'seed' is a value, not a section"),
    ({"zip": [{"seed": [0, 1], "rounds": [2]}]}, "zip[0]: expected lists of equal length, got seed has 2, rounds has 1"),
    ({"zip": {"seed": [0]}}, "zip: expected a list of groups"),
    ({"axes": {"seed": [0]}, "zip": [{"seed": [1]}]}, "zip[0].seed: sets 'seed', which axes.seed also sets"),
    ({"axes": {"attack": [{"name": "none"}]}, "zip": [{"attack.name": ["none"]}]},
     "zip[0].attack.name: sets 'attack.name', which axes.attack also sets"),
    ({"axes": {"defense.pre": [[]], "defense": [{"pre": ["clip"]}]}},
     "axes.defense: sets 'defense.pre', which axes.defense.pre also sets"),
    ({"exclude": [{"partitoin.name": "iid"}]}, "exclude[0].partitoin.name: unknown config key 'partitoin.name'"),
    ({"exclude": {"seed": 0}}, "exclude: expected a list of rules"),
    ({"axes": {"seed": [0]}, "exclude": [{"seed": 0}]}, "the exclude rules leave no run"),
    ({"analysis": {"last_k": 0}}, "analysis.last_k: expected an integer >= 1, got 0"),
    ({"analysis": {"target": 0.5}}, "analysis.target: unknown key"),
    ({"analysis": {"target_accuracy": 2}}, "analysis.target_accuracy: expected a number in (0, 1], got 2"),
    ({"name": 3}, "name: expected a string, got 3"),
    ({"base": {"clients": {"nmu": 3}}}, "unknown key 'clients.nmu', did you mean 'clients.num'?"),
    ({"base": [1]}, "base: expected a config mapping or a path to a config file"),
])
def test_errors_name_the_field(parts: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        expand_grid({"base": TINY, **parts} if "base" not in parts else parts, where="grid file g.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("grid file g.yaml: ")


def test_an_invalid_run_is_named_with_its_axis_values() -> None:
    with pytest.raises(ConfigError) as info:
        grid(axes={"attack.name": ["none", "scaling"], "attack.scale": [5.0]},
             base={**TINY, "attack": {"fraction": 0.2}})
    msg = str(info.value)
    assert "run (attack.name=none, attack.scale=5.0): unknown key 'attack.scale'" in msg
    assert "(attack.name=none works in no run of the grid)" in msg
    with pytest.raises(ConfigError) as info:
        grid(axes={"defense.name": ["mean", "medain"], "seed": [0, 1]})
    msg = str(info.value)
    assert "run (defense.name=medain, seed=0): defense.name: " in msg and "did you mean 'median'" in msg
    assert "(defense.name=medain works in no run of the grid)" in msg


def test_a_combination_error_suggests_zip_or_exclude() -> None:
    with pytest.raises(ConfigError) as info:
        grid(axes={"clients.num": [5, 20], "clients.per_round": [4, 10]})
    msg = str(info.value)
    assert "run (clients.num=5, clients.per_round=10): clients.per_round: expected at most" in msg
    assert "each of these values works in other runs: use a zip group or an exclude rule" in msg
    g = grid(axes={"clients.num": [5, 20], "clients.per_round": [4, 10]},
             exclude=[{"clients.num": 5, "clients.per_round": 10}])
    assert len(g) == 3


def test_override_keys_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        expand_grid({"base": TINY}, ["rounds_=3"])
    assert "--set.rounds_: unknown config key 'rounds_', did you mean 'rounds'" in str(info.value)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_scenarios_expand_on_digits_and_fashion_mnist(path: Path) -> None:
    g = load_grid(path)
    assert len(g) >= 2 and g.name and g.description
    assert {r.config.dataset.name for r in g.runs} == {"digits"}
    f = load_grid(path, ["dataset.name=fashion-mnist"])
    assert len(f) == len(g) and {r.config.dataset.name for r in f.runs} == {"fashion-mnist"}


def test_demo_grid_is_shipped_as_a_scenario() -> None:
    assert yaml.safe_load((SCENARIOS / "demo.yaml").read_text()) == DEMO_GRID
