"""Fuzz the config loader: every input is a valid config or one clear ConfigError.

Promise (LIMITS.md, "Bad configs"): no other exception escapes ``load_config``,
the message names the offending key, and the CLI exits 2 with no traceback.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fedpoison import ConfigError, ExperimentConfig, load_config
from fedpoison.cli import main


def _dotted_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _dotted_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


KNOWN = _dotted_keys(ExperimentConfig)
PLUGIN_KEYS = ["attack.scale", "attack.target_class", "defense.clip_norm", "defense.beta", "audit.threshold",
               "audit.policy", "attack.z", "defense.m"]
NAMES = {"attack.name": ["none", "sign_flip", "alie", "nosuch"], "defense.name": ["mean", "median", "krum", "bulyan", "x"],
         "audit.name": ["none", "norm_mad", "zz"], "dataset.name": ["digits", "synthetic", "cifar"],
         "partition.name": ["iid", "dirichlet", "fang", "nope"], "model.name": ["auto", "mlp", "cnn9"]}

values = st.one_of(
    st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True, width=32), st.booleans(), st.none(),
    st.text(max_size=6), st.lists(st.sampled_from(["clip", "bucketing", "nnm", "bogus"]), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
keys = st.one_of(st.sampled_from(KNOWN + PLUGIN_KEYS), st.text(min_size=1, max_size=12),
                 st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(["clients", "local", "attack", "rounds"]),
                           st.text(min_size=1, max_size=6)))


@st.composite
def overrides(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = draw(st.dictionaries(keys, values, max_size=5))
    for key, choices in NAMES.items():
        if draw(st.booleans()):
            out[key] = draw(st.sampled_from(choices))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides())
def test_any_override_mix_is_valid_or_one_config_error(mix: dict[str, Any]) -> None:
    try:
        cfg = load_config(overrides=mix)
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg.strip()  # one line (values appear as their repr)
        return
    assert isinstance(cfg, ExperimentConfig)
    # a valid config survives its own round trip
    assert load_config(cfg.to_dict()) == cfg


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mix=overrides())
def test_cli_exits_0_or_2_and_never_prints_a_traceback(mix: dict[str, Any], capfd: pytest.CaptureFixture[str]) -> None:
    args = ["config"]
    for k, v in mix.items():
        if "=" in k or k.startswith("-"):
            continue
        args += ["--set", f"{k}={v}"]
    code = main(args)
    err = capfd.readouterr().err
    assert code in (0, 2)
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("error:")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["attack.name=sign_flip", "attack.count=25"], "attack.count"),
        (["attack.name=sign_flip", "attack.fraction=1.5"], "attack.fraction"),
        (["clients.num=5", "clients.per_round=6"], "clients.per_round"),
        (["attack.start_round=5", "attack.end_round=2"], "attack.end_round"),
        (["defense.pre=[clip, bogus]"], "defense.pre[1]"),
        (["local.engine=gpu"], "local.engine"),
        (["partition.name=dirichlet", "partition.alpha=0"], "partition.alpha"),
    ],
)
def test_impossible_combinations_name_the_field(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    assert fragment in str(info.value)


def test_api_and_cli_give_the_same_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["clients.per_round=50"])
    assert main(["config", "--set", "clients.per_round=50"]) == 2
    assert str(info.value) in " ".join(capsys.readouterr().err.split())
