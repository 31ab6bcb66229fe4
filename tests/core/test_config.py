"""Config loading, overrides and the errors they give."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpoison import ConfigError, load_config
from fedpoison.config import parse_override


def test_defaults_are_a_digits_fedavg_run() -> None:
    cfg = load_config()
    assert (cfg.dataset.name, cfg.partition.name, cfg.clients.num, cfg.defense.name, cfg.attack.name) == (
        "digits", "iid", 20, "mean", "none")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("clients.nmu=5", "unknown key 'clients.nmu', did you mean 'clients.num'?"),
        ("roundz=5", "unknown key 'roundz', did you mean 'rounds'?"),
        ("local.lr=-1", "local.lr: input should be greater than 0, got -1"),
        ("clients.per_round=50", "clients.per_round: expected at most clients.num=20, got 50"),
        ("dataset.name=mnits", "dataset.name: unknown dataset 'mnits', did you mean 'mnist'?"),
        ("attack.count=30", "attack.count: expected at most clients.num=20 attackers, got 30"),
        ("attack.fracton=0.2", "unknown key 'attack.fracton', did you mean 'attack.fraction'?"),
        ("partition.min_samples=zero", "partition.min_samples: input should be a valid integer"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert message in str(info.value)


def test_override_values_are_read_as_yaml() -> None:
    assert parse_override("defense.pre=[clip]") == ("defense.pre", ["clip"])
    assert parse_override("local.steps=null") == ("local.steps", None)
    assert parse_override("attack.fraction=0.3") == ("attack.fraction", 0.3)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("rounds")


def test_yaml_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rounds: 7\nclients:\n  num: 10\n")
    cfg = load_config(path, ["clients.num=12"])
    assert cfg.rounds == 7 and cfg.clients.num == 12


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(overrides=["partition.name=dirichlet", "partition.alpha=0.3", "seed=4"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again == cfg and again.key() == cfg.key()


def test_bad_yaml_files_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_config_key_changes_with_any_knob() -> None:
    assert load_config().key() != load_config(overrides=["local.lr=0.1"]).key()


def test_attack_needing_more_knowledge_than_the_threat_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs at least 'omniscient' knowledge"):
        load_config(overrides=["attack.name=alie", "attack.fraction=0.2"])
    cfg = load_config(overrides=["attack.name=alie", "attack.fraction=0.2", "attack.knowledge=omniscient"])
    assert cfg.attack.knowledge == "omniscient"
    # more knowledge than needed is fine
    load_config(overrides=["attack.name=sign_flip", "attack.fraction=0.2", "attack.knowledge=defense_aware"])
