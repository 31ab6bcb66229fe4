"""Error paths: requirements on n and f at call time and at config validation, bad parameters,
missing context. Every message names the rule, the requirement and the values.
"""

from __future__ import annotations

import pytest
import torch

import fedpoison
from fedpoison.defenses import RULES, ParamSlice
from fedpoison.errors import AggregationError, ConfigError
from fedpoison.plugins.resolve import validate_config
from fedpoison.testing import build_defense_step as _build
from fedpoison.testing import make_round_context as _make_ctx

#: (rule, n, f, extra params, words of the requirement) that break each rule's requirement.
BROKEN = [
    ("median", 4, 2, {}, "n >= 2f + 1"),
    ("trimmed_mean", 4, 2, {}, "n >= 2b + 1"),
    ("trimmed_mean", 2, 0, {"beta": 0.49}, "n >= 2b + 1"),  # b = floor(0.98) = 0 is fine ...
    ("krum", 6, 2, {}, "n >= 2f + 3"),
    ("multi_krum", 6, 2, {}, "n >= 2f + 3"),
    ("multi_krum", 5, 1, {"m": 6}, "1 <= m <= n"),
    ("bulyan", 10, 2, {}, "n >= 4f + 3"),
    ("geometric_median", 4, 2, {}, "n >= 2f + 1"),
    ("dnc", 3, 3, {}, "n - floor(c f) >= 1"),
]


@pytest.mark.parametrize(("name", "n", "f", "params", "words"), BROKEN)
def test_call_time_requirement_errors_name_rule_requirement_and_values(name, n, f, params, words) -> None:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    rule = _build(name, f, **params)
    if name == "trimmed_mean" and params:
        rule(x, torch.ones(n), _make_ctx(n, 4))  # ... so this one passes
        return
    with pytest.raises(AggregationError) as err:
        rule(x, torch.ones(n), _make_ctx(n, 4))
    msg = str(err.value)
    assert msg.startswith(f"{name}: requires") and words in msg and f"n={n}" in msg


def test_nnm_requirement() -> None:
    with pytest.raises(AggregationError, match=r"nnm: requires n >= f \+ 1, got n=2, f=2"):
        _build("nnm", 2, pre=True)(torch.ones(2, 3), torch.ones(2), _make_ctx(2, 3))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["defense.name=bulyan", "defense.f=5"], "defense.name 'bulyan': requires n >= 4f + 3, got n=20 rows per round and f=5"),
        (["defense.name=krum", "defense.f=9"], "n >= 2f + 3, got n=20"),
        (["defense.name=krum", "defense.pre=[bucketing]", "defense.f=4"], "n >= 2f + 3, got n=10"),
        (["defense.name=median", "clients.per_round=5", "defense.f=3"], "n >= 2f + 1, got n=5"),
        (["defense.name=trimmed_mean", "defense.beta=0.4", "clients.per_round=4"], None),
        (["defense.name=multi_krum", "defense.m=30"], "1 <= m <= n, got n=20 rows per round and f=0 (m=30)"),
        (["defense.name=mean", "defense.pre=[nnm]", "defense.f=20"], "n >= f + 1"),
        (["defense.name=foolsgold", "defense.pre=[bucketing]"], "one row per client"),
    ],
)
def test_config_validation_fails_when_participants_are_known(overrides, words) -> None:
    if words is None:
        fedpoison.load_config(overrides=overrides)  # b = floor(1.6) = 1, n = 4 >= 3: valid
        return
    with pytest.raises(ConfigError) as err:
        fedpoison.load_config(overrides=overrides)
    assert words in str(err.value)


def test_config_default_f_follows_the_threat_model() -> None:
    """Without defense.f, the check uses the expected attackers per round (8 of 20 here)."""
    cfg = fedpoison.load_config(overrides=["defense.name=median", "attack.name=sign_flip", "attack.count=8"])
    assert cfg.assumed_f == 8
    half = fedpoison.load_config(cfg, overrides=["clients.per_round=10"])
    assert half.assumed_f == 4
    with pytest.raises(ConfigError, match=r"'bulyan': requires n >= 4f \+ 3, got n=20 rows per round and f=8"):
        fedpoison.load_config(cfg, overrides=["defense.name=bulyan"])


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["defense.name=median", "defense.tau=1.0"], "unknown key 'defense.tau'"),
        (["defense.name=trimmed_mean", "defense.beta=0.5"], "defense.beta"),
        (["defense.name=norm_bound", "defense.clip_norm=1.0", "defense.clip_quantile=0.9"], "not both"),
        (["defense.name=mean", "defense.pre=[clip]", "defense.clip_norm=-1"], "defense.clip_norm"),
        (["defense.name=mean", "defense.pre=[clip]", "defense.clip_scope=neuron"], "defense.clip_scope"),
        (["defense.name=signguard", "defense.sg_lower=4.0"], "sg_lower must be <= sg_upper"),
        (["defense.name=mean", "defense.pre=[bucketing]", "defense.bucket_size=0"], "defense.bucket_size"),
        (["defense.name=krum", "defense.pre=[clipp]"], "did you mean 'clip'"),
        (["defense.name=krumm"], "did you mean 'krum'"),
    ],
)
def test_bad_parameters_are_config_errors(overrides, words) -> None:
    with pytest.raises(ConfigError) as err:
        fedpoison.load_config(overrides=overrides)
    assert words in str(err.value)


def test_shared_clip_keys_reach_both_plug_ins() -> None:
    cfg = fedpoison.load_config(
        overrides=["defense.name=norm_bound", "defense.pre=[clip]", "defense.clip_norm=2.5", "defense.noise_std=0.1"]
    )
    from fedpoison.defenses import build_defense

    defense = build_defense(cfg.defense, f=0)
    assert defense.pre[0].params.clip_norm == 2.5 and defense.rule.params.clip_norm == 2.5


@pytest.mark.parametrize("rule", ["norm_bound", "mean"])
def test_a_fixed_clip_bound_survives_the_resolved_config(rule: str) -> None:
    """A resolved config carries clip_quantile's default beside the user's clip_norm; validating it again
    (what a grid worker and ``fedpoison run saved/config.yaml`` do) must not call the two keys a clash.
    """
    pre = ["defense.pre=[clip]"] if rule == "mean" else []
    cfg = fedpoison.load_config(overrides=[f"defense.name={rule}", *pre, "defense.clip_norm=1.5"])
    again = validate_config(cfg.to_dict())
    assert again == cfg and again.defense.params_dict()["clip_norm"] == 1.5
    with pytest.raises(ConfigError, match="not both"):
        fedpoison.load_config(cfg, overrides=["defense.clip_quantile=0.9"])


def test_fltrust_without_root_update_says_what_is_missing() -> None:
    with pytest.raises(AggregationError, match=r"fltrust: requires the server's root update .*root_size=100"):
        _build("fltrust")(torch.ones(3, 2), torch.ones(3), _make_ctx(3, 2, root=None))
    with pytest.raises(AggregationError, match=r"root update must have shape \(2,\), got \(3,\)"):
        _build("fltrust")(torch.ones(3, 2), torch.ones(3), _make_ctx(3, 2, root=lambda p: torch.ones(3)))


def test_layer_clipping_needs_a_layout_that_tiles_the_update() -> None:
    clip = _build("clip", pre=True, clip_norm=1.0, clip_scope="layer")
    with pytest.raises(AggregationError, match=r"clip: requires ctx\.slices"):
        clip(torch.ones(2, 4), torch.ones(2), _make_ctx(2, 4, slices=()))
    gap = (ParamSlice("a", 0, 2, (2,)), ParamSlice("b", 3, 4, (1,)))
    with pytest.raises(AggregationError, match="without gaps"):
        clip(torch.ones(2, 4), torch.ones(2), _make_ctx(2, 4, slices=gap))
    short = (ParamSlice("a", 0, 2, (2,)),)
    with pytest.raises(AggregationError, match="covered=2, d=4"):
        clip(torch.ones(2, 4), torch.ones(2), _make_ctx(2, 4, slices=short))


def test_stateful_rules_refuse_a_change_of_update_length() -> None:
    for name in ("centered_clipping", "foolsgold"):
        rule = _build(name)
        rule(torch.ones(3, 4), torch.ones(3), _make_ctx(3, 4))
        with pytest.raises(AggregationError, match=f"{name}: requires the same update length every round"):
            rule(torch.ones(3, 5), torch.ones(3), _make_ctx(3, 5))


def test_foolsgold_needs_one_id_per_row() -> None:
    with pytest.raises(AggregationError, match="foolsgold: requires one distinct client id per row"):
        _build("foolsgold")(torch.ones(3, 2), torch.ones(3), _make_ctx(3, 2, ids=torch.tensor([0, 0, 1])))


def test_no_rule_falls_back_to_the_mean_silently() -> None:
    """Rules whose output can be undefined return the zero update and record why."""
    x = torch.tensor([[-1.0, 0.0], [0.0, -2.0], [-1.0, -1.0]])
    res = _build("fltrust")(x, torch.ones(3), _make_ctx(3, 2, root=lambda p: torch.tensor([1.0, 1.0])))
    assert res.aggregate.abs().sum() == 0 and res.info["no_trust"] == 1.0


@pytest.mark.parametrize("name", [e.name for e in RULES if e.requires is not None and e.requires.holds is not None])
def test_requirement_holds_for_a_comfortable_federation_and_not_for_a_tiny_one(name) -> None:
    entry = RULES.get(name)
    assert not entry.requires.violated(100, 5, entry.params())
    assert entry.requires.violated(1, 5, entry.params())
