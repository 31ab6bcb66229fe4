"""The shared contract, run over every registered aggregation rule and pre-aggregator.

Shape and dtype, no mutation, determinism under a seed, permutation invariance
where it holds, tracing through :class:`Defense`, and the registry metadata that
``fedpoison list defenses`` shows.
"""

from __future__ import annotations

import pytest
import torch

import fedpoison
from conftest import QUIET, _build, _make_ctx
from fedpoison.defenses import PRE_AGGREGATORS, RULES, AggregationResult, PreResult, build_defense

N, D, F = 11, 40, 2  # n >= 4f + 3: every rule's requirement holds

#: Pre-aggregators whose output rows depend on the row order (random buckets).
ORDER_DEPENDENT_PRE = {"bucketing"}


def _data(seed: int = 0, n: int = N, d: int = D) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    center = torch.randn(d, generator=g)
    x = center + 0.3 * torch.randn(n, d, generator=g)
    w = torch.randint(5, 50, (n,), generator=g).to(torch.float32)
    return x, w


def _rule(name: str, f: int = F):
    return _build(name, f, **QUIET.get(name, {}))


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
def test_rule_shape_dtype_and_record(name: str) -> None:
    x, w = _data()
    res = _rule(name)(x, w, _make_ctx(N, D))
    _check_result(res, N, D)
    if RULES.get(name).meta["filters"] is False:
        assert res.selected.all()


@pytest.mark.parametrize("name", RULES.names())
def test_rule_does_not_mutate_inputs(name: str) -> None:
    x, w = _data()
    ctx = _make_ctx(N, D)
    before = (x.clone(), w.clone(), ctx.global_params.clone(), ctx.client_ids.clone())
    _rule(name)(x, w, ctx)
    for a, b in zip((x, w, ctx.global_params, ctx.client_ids), before, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", RULES.names())
def test_rule_is_deterministic_under_a_seed(name: str) -> None:
    x, w = _data()
    a = _build(name, F)(x, w, _make_ctx(N, D, seed=3))  # noise on for FLAME: the seed fixes it
    b = _build(name, F)(x, w, _make_ctx(N, D, seed=3))
    torch.testing.assert_close(a.aggregate, b.aggregate, rtol=0, atol=0)
    assert torch.equal(a.selected, b.selected)
    torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=0)


@pytest.mark.parametrize("name", RULES.names())
def test_rule_is_permutation_invariant(name: str) -> None:
    """Permuting rows (and their client ids) permutes the record and keeps the aggregate.

    Every rule qualifies: the random draws of DnC, SignGuard and FLAME are over
    coordinates or noise, never over rows.
    """
    x, w = _data()
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(5))
    a = _rule(name)(x, w, _make_ctx(N, D))
    b = _rule(name)(x[perm], w[perm], _make_ctx(N, D, ids=torch.arange(N)[perm]))
    torch.testing.assert_close(a.aggregate, b.aggregate, rtol=1e-4, atol=1e-5)
    assert torch.equal(a.selected[perm], b.selected)
    torch.testing.assert_close(a.weights[perm], b.weights, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", RULES.names())
def test_rule_handles_identical_rows(name: str) -> None:
    """All rows equal: every rule returns that row (FLAME's noise off)."""
    row = torch.linspace(-1, 1, D)
    x = row.repeat(N, 1)
    res = _rule(name)(x, torch.ones(N), _make_ctx(N, D, root=lambda p: row.clone()))
    if name == "centered_clipping":  # moves at most tau from the zero center
        assert res.aggregate.norm() <= 1.0 + 1e-5
        return
    torch.testing.assert_close(res.aggregate, row, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", PRE_AGGREGATORS.names())
def test_pre_aggregator_contract(name: str) -> None:
    x, w = _data()
    ctx = _make_ctx(N, D)
    before = (x.clone(), w.clone())
    pre = _build(name, F, pre=True)
    out = pre(x, w, ctx)
    assert isinstance(out, PreResult)
    assert torch.equal(x, before[0]) and torch.equal(w, before[1])
    m = out.updates.shape[0]
    assert out.updates.shape == (m, D) and out.updates.dtype == torch.float32
    assert out.weights.shape == (m,)
    if out.groups is not None:
        assert out.groups.shape == (m, N)
        torch.testing.assert_close(out.groups.sum(dim=1), torch.ones(m))
        torch.testing.assert_close(out.groups @ x, out.updates, rtol=1e-4, atol=1e-5) if name != "clip" else None
    again = _build(name, F, pre=True)(x, w, _make_ctx(N, D))
    torch.testing.assert_close(out.updates, again.updates, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(set(PRE_AGGREGATORS.names()) - ORDER_DEPENDENT_PRE))
def test_pre_aggregator_is_permutation_equivariant(name: str) -> None:
    x, w = _data()
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(5))
    a = _build(name, F, pre=True)(x, w, _make_ctx(N, D))
    b = _build(name, F, pre=True)(x[perm], w[perm], _make_ctx(N, D, ids=torch.arange(N)[perm]))
    torch.testing.assert_close(a.updates[perm], b.updates, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", RULES.names())
def test_defense_never_writes_its_input(name: str) -> None:
    """The server step passes the round's matrix itself when every row is kept, so no rule may write it."""
    n = 20
    pre = "[clip,nnm]" if name != "foolsgold" else "[clip]"  # FoolsGold's history needs unmixed rows
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
    if name == "foolsgold" and "bucketing" in pre:
        pytest.skip("per-client history: rejected at config validation (test_defense_errors)")
    cfg = fedpoison.load_config(overrides=[f"defense.name={name}", f"defense.pre=[{','.join(pre)}]", "defense.f=1"])
    if name == "flame":
        cfg = fedpoison.load_config(cfg, overrides=["defense.noise_lambda=0.0"])
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
    assert isinstance(entry.meta.get("requires"), str) and entry.meta["requires"]
    assert isinstance(entry.meta.get("filters"), bool)
    assert entry.params.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("entry", list(PRE_AGGREGATORS), ids=lambda e: e.name)
def test_pre_aggregators_declare_what_list_defenses_shows(entry) -> None:
    assert entry.description and entry.reference
    assert isinstance(entry.meta.get("requires"), str)
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
