"""Rules and pre-aggregators composed into a :class:`Defense`, over every registered one.

The per-plug-in contract (shape, no mutation, determinism, permutation
invariance, hostile rows, requirements) is :mod:`fedpoison.testing`'s, run in
``tests/plugins/test_contracts.py``. Here: tracing through :class:`Defense`
with pre-aggregators, non-finite rows, and the registry metadata that
``fedpoison list defenses`` shows.
"""

from __future__ import annotations

import json

import pytest
import torch

import fedpoison
from fedpoison.defenses import PRE_AGGREGATORS, RULES, AggregationResult, build_defense
from fedpoison.registry import Requirement
from fedpoison.testing import make_round_context as _make_ctx

N, D, F = 11, 40, 2  # n >= 4f + 3: every rule's requirement holds

def _data(seed: int = 0, n: int = N, d: int = D) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    center = torch.randn(d, generator=g)
    x = center + 0.3 * torch.randn(n, d, generator=g)
    w = torch.randint(5, 50, (n,), generator=g).to(torch.float32)
    return x, w


def _check_result(res: AggregationResult, n: int, d: int, steps: int = 1) -> None:
    assert isinstance(res, AggregationResult)
    assert res.aggregate.shape == (d,) and res.aggregate.dtype == torch.float32
    assert torch.isfinite(res.aggregate).all()
    assert res.weights.shape == (n,) and res.weights.dtype.is_floating_point
    assert (res.weights >= 0).all()
    assert res.weights.sum() <= 1.0 + 1e-5
    assert res.selected.shape == (n,) and res.selected.dtype == torch.bool
    assert res.scores is None or res.scores.shape == (n,)
    assert isinstance(res.clipped, int) and 0 <= res.clipped <= n * steps  # summed over clipping steps
    assert all(isinstance(v, float) for v in res.info.values())


@pytest.mark.parametrize("name", RULES.names())
def test_defense_never_writes_its_input(name: str) -> None:
    """The server step passes the round's matrix itself when every row is kept, so no rule may write it."""
    n = 20
    per_client = RULES.get(name).has("per_client_state")
    pre = "[clip]" if per_client else "[clip,nnm]"  # per-client history needs unmixed rows
    cfg = fedpoison.load_config(overrides=[f"defense.name={name}", f"defense.pre={pre}", "defense.f=1"])
    x, w = _data(n=n)
    x_before, w_before = x.clone(), w.clone()
    build_defense(cfg.defense, f=1)(x, w, _make_ctx(n, D))
    assert torch.equal(x, x_before) and torch.equal(w, w_before)


@pytest.mark.parametrize("name", RULES.names())
@pytest.mark.parametrize("pre", [["clip"], ["bucketing"], ["nnm"], ["clip", "bucketing"]])
def test_composed_defense_traces_back_to_clients(name: str, pre: list[str]) -> None:
    """Built from a config, with pre-aggregators: weights and selection refer to the input rows."""
    n = 20  # the default federation; bucketing leaves 10 rows, enough for Bulyan with f = 1
    entry = RULES.get(name)
    if entry.has("per_client_state") and "bucketing" in pre:
        pytest.skip("per-client history: rejected at config validation (test_defense_errors)")
    quiet = [f"defense.{k}={json.dumps(v)}" for k, v in entry.meta.get("quiet_params", {}).items()]
    cfg = fedpoison.load_config(overrides=[f"defense.name={name}", f"defense.pre=[{','.join(pre)}]", "defense.f=1",
                                           *quiet])
    defense = build_defense(cfg.defense, f=0)
    x, w = _data(n=n)
    res = defense(x, w, _make_ctx(n, D))
    _check_result(res, n, D, steps=1 + len(pre))
    if "bucketing" in pre and res.selected.any():
        assert res.selected.sum() >= 2  # a kept bucket keeps both of its clients


@pytest.mark.parametrize("name", RULES.names())
def test_server_step_drops_nonfinite_rows_before_the_rule(name: str) -> None:
    """The server's step (not the defense) drops NaN/Inf rows, and spreads the result back over them."""
    from fedpoison.simulation.server import audit_and_defend

    x, w = _data(n=13)  # 11 rows left: Bulyan's n >= 4f + 3 still holds
    x = x.clone()
    x[3, 5] = float("nan")
    x[7] = float("inf")
    defense = build_defense(fedpoison.load_config(overrides=[f"defense.name={name}"]).defense, f=F)
    out = audit_and_defend(x, w, _make_ctx(13, D), defense, on_violation="raise")
    assert torch.isfinite(out.aggregate).all()
    assert out.nonfinite == 2 and out.keep.tolist() == [i not in (3, 7) for i in range(13)]
    assert not out.selected[3] and not out.selected[7] and out.weights[3] == 0 and out.weights[7] == 0


@pytest.mark.parametrize("entry", list(RULES), ids=lambda e: e.name)
def test_rules_declare_what_list_defenses_shows(entry) -> None:
    assert entry.description and entry.reference
    assert isinstance(entry.requires, Requirement) and entry.requires.text
    assert isinstance(entry.meta.get("filters"), bool)
    assert entry.params.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("entry", list(PRE_AGGREGATORS), ids=lambda e: e.name)
def test_pre_aggregators_declare_what_list_defenses_shows(entry) -> None:
    assert entry.description and entry.reference
    assert isinstance(entry.requires, Requirement)
    assert entry.params.model_config.get("extra") == "forbid"


def test_shared_keys_have_one_meaning() -> None:
    """A key declared by several plug-ins has the same type and default everywhere it is declared."""
    seen: dict[str, tuple[object, str]] = {}
    for entry in [*RULES, *PRE_AGGREGATORS]:
        for key, field in entry.params.model_fields.items():
            sig = (field.annotation, field.default)
            if key in seen and key not in {"max_iter", "weighting"}:
                assert seen[key][0] == sig, f"{key}: {entry.name} vs {seen[key][1]}"
            seen.setdefault(key, (sig, entry.name))
