"""Configs that do nothing: an attack with no attackers is an error; idle settings warn, once, in one line."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import fedpoison
from fedpoison.cli import main
from fedpoison.config_noops import ConfigWarning, check_run_config, ineffective_settings, meaningless
from fedpoison.errors import ConfigError
from fedpoison.experiments.grid import expand_grid
from fedpoison.plugins import load_config

TINY = {"rounds": 2, "clients": {"num": 5}, "dataset": {"limit": 200}}


def _messages(overrides: list[str]) -> list[str]:
    return [w.message for w in ineffective_settings(load_config(TINY, overrides))]


def test_an_attack_without_attackers_it_was_asked_for_is_an_error() -> None:
    cfg = load_config(TINY, ["attack.name=sign_flip"])
    assert cfg.num_malicious == 0
    assert meaningless(cfg) == (
        "attack.fraction: attack 'sign_flip' has no attackers: attack.fraction is 0 and attack.count is unset, "
        "so 0 of 5 clients are malicious (set attack.fraction, e.g. attack.fraction=0.2, or attack.count; "
        "for a run without attack, set attack.name=none)")
    assert meaningless(load_config(TINY, ["attack.name=sign_flip", "attack.fraction=0"])) == meaningless(cfg)
    assert meaningless(load_config(TINY, ["attack.name=sign_flip", "attack.count=0"])) == (
        "attack.count: attack 'sign_flip' has no attackers (attack.count=0); expected at least 1 "
        "(for a run without attack, set attack.name=none)")
    # the zero point of a grid's sweep over the fraction is deliberate
    assert meaningless(cfg, varied={"attack.fraction"}) is None
    # a fraction that rounds to no client: 0.05 * 5 = 0.25 -> 0
    with pytest.raises(ConfigError, match=r"attack.fraction: 0.05 of clients.num=5 rounds to 0 attackers.*above 0.1"):
        check_run_config(load_config(TINY, ["attack.name=sign_flip", "attack.fraction=0.05"]))
    # 0.1 x 5 = 0.5 also rounds to 0 (ties to even)
    assert "rounds to 0 attackers" in str(meaningless(load_config(TINY, ["attack.name=sign_flip",
                                                                          "attack.fraction=0.1"])))
    # the Python API refuses it before computing anything
    with pytest.raises(ConfigError, match="has no attackers"):
        fedpoison.run(TINY, overrides=["attack.name=sign_flip"])
    # one attacker is enough
    assert meaningless(load_config(TINY, ["attack.name=sign_flip", "attack.fraction=0.2"])) is None
    assert meaningless(load_config(TINY, ["attack.name=sign_flip", "attack.count=1"])) is None


def test_settings_that_do_nothing_are_named() -> None:
    assert _messages(["attack.fraction=0.2"]) == [
        "attack.fraction=0.2 has no effect: attack.name is none, so no client is malicious"]
    assert _messages(["attack.count=2", "attack.collude=true"]) == [
        "attack.count=2, attack.collude=True has no effect: attack.name is none, so no client is malicious"]
    assert _messages(["attack.name=sign_flip", "attack.fraction=0.4", "attack.start_round=2"]) == [
        "attack.start_round=2 is not before rounds=2: attack 'sign_flip' never fires (rounds are numbered from 0)"]
    assert _messages(["attack.name=sign_flip", "attack.fraction=0.4", "attack.probability=0"]) == [
        "attack.probability=0: attack 'sign_flip' never fires"]
    # nothing to say about a plain run or a working attack
    assert _messages([]) == []
    assert _messages(["attack.name=sign_flip", "attack.fraction=0.4", "attack.start_round=1"]) == []


def test_the_cli_prints_one_warning_line_and_still_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["run", "--set", "rounds=1", "--set", "clients.num=5", "--set", "dataset.limit=200",
                 "--set", "attack.fraction=0.2", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "warning: attack.fraction=0.2 has no effect: attack.name is none" in err and "Traceback" not in err
    assert (out / "history.csv").is_file()
    # the error: exit 2, one line, nothing written
    bad = tmp_path / "bad"
    assert main(["run", "--set", "attack.name=sign_flip", "--out", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: attack.fraction: attack 'sign_flip' has no attackers" in err and not bad.exists()


def test_a_grid_warns_once_and_not_about_what_it_varies() -> None:
    # the sweep's fraction is meant for its attack runs: no warning for the none runs
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        expand_grid({"base": {**TINY, "attack": {"fraction": 0.4}},
                     "axes": {"attack.name": ["none", "sign_flip"], "seed": [0, 1]}})
        expand_grid({"base": {**TINY, "attack": {"name": "sign_flip"}},
                     "axes": {"attack.fraction": [0.0, 0.4]}})
    # a setting no run uses: one warning for the whole grid, naming it
    with pytest.warns(ConfigWarning) as caught:
        expand_grid({"base": {**TINY, "attack": {"fraction": 0.4}}, "axes": {"seed": [0, 1, 2]}})
    assert [str(w.message) for w in caught] == [
        "grid: attack.fraction=0.4 has no effect: attack.name is none, so no client is malicious"]
    # an attack run with no attackers fails the grid, named by its axis values
    with pytest.raises(ConfigError, match=r"run \(attack.name=sign_flip\): attack.fraction: attack 'sign_flip' "
                                          "has no attackers"):
        expand_grid({"base": TINY, "axes": {"attack.name": ["none", "sign_flip"]}})
