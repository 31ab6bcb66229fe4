"""Hostile update rows never crash the server.

Promise (LIMITS.md, "Hostile updates"): every registered aggregation rule,
pre-aggregator and auditor accepts rows of NaN, +/-Inf, 1e38 and zeros mixed with
honest rows. Each returns a result of the right shape, or raises
``AggregationError`` naming its requirement on n and f. Non-finite rows follow
the ``defense.nonfinite`` policy, and the count is recorded. A global model that
still turns non-finite marks the run diverged, keeps its history, and writes
``summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedpoison
import fedpoison.cli
from fedpoison.audit import AUDITORS
from fedpoison.config import AuditSection, DefenseSection
from fedpoison.core.slices import ParamSlice
from fedpoison.defenses import PRE_AGGREGATORS, RULES, RoundContext, build_defense
from fedpoison.errors import AggregationError
from fedpoison.simulation.server import AuditedAggregation, audit_and_defend, subset_decision

D = 40
KINDS = ["honest", "nan", "inf", "-inf", "huge", "-huge", "zero"]
ROBUST = {"median", "trimmed_mean", "krum", "multi_krum", "bulyan", "geometric_median"}


def make_rows(kinds: list[str], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(D, generator=g) * 0.1
    rows = []
    for kind in kinds:
        noise = base + 0.05 * torch.randn(D, generator=g)
        rows.append({"honest": noise, "nan": torch.full((D,), float("nan")), "inf": torch.full((D,), float("inf")),
                     "-inf": torch.full((D,), float("-inf")), "huge": torch.full((D,), 1e38),
                     "-huge": torch.full((D,), -1e38), "zero": torch.zeros(D)}[kind])
    return torch.stack(rows)


def ctx_for(n: int, rnd: int = 0) -> RoundContext:
    g = torch.Generator().manual_seed(rnd)
    # two tensors, like a model's output layer (weight, bias): DeepSight and LASA read the layout
    layout = (ParamSlice("w", 0, D // 2, (D // 2,)), ParamSlice("b", D // 2, D, (D - D // 2,)))
    return RoundContext(rnd, torch.arange(n), g, torch.zeros(D), layout,
                        root_update=lambda params: torch.full((D,), 0.01))


def defense_for(rule: str, pre: list[str], policy: str, f: int) -> object:
    extra = {"root_size": 10} if rule == "fltrust" else {}
    return build_defense(DefenseSection(name=rule, pre=pre, nonfinite=policy, **extra), f=f)


def server_step(defense: object, updates: torch.Tensor, ctx: RoundContext) -> AuditedAggregation:
    """The server's step (non-finite policy, then the defense), raising the defense's AggregationError."""
    return audit_and_defend(updates, torch.ones(len(updates)), ctx, defense, on_violation="raise")


CASES = [(r, []) for r in RULES.names()] + [("median", [p]) for p in PRE_AGGREGATORS.names()]


@pytest.mark.parametrize("policy", ["drop", "zero", "keep"])
@pytest.mark.parametrize(("rule", "pre"), CASES, ids=[f"{r}+{'+'.join(p)}" if p else r for r, p in CASES])
def test_every_rule_survives_every_kind_of_hostile_row(rule: str, pre: list[str], policy: str) -> None:
    kinds = ["honest"] * 12 + ["nan", "inf", "-inf", "huge", "-huge", "zero"]
    updates = make_rows(kinds)
    before = updates.clone()
    defense = defense_for(rule, pre, policy, f=2)
    # 15 or 18 rows and f = 2: every requirement holds, so no rule may refuse these rows
    out = server_step(defense, updates, ctx_for(len(kinds)))
    assert out.aggregate.shape == (D,) and out.aggregate.dtype == torch.float32
    assert out.selected.shape == (len(kinds),)
    assert torch.equal(updates.isnan(), before.isnan()) and torch.equal(updates.nan_to_num(), before.nan_to_num())
    assert out.nonfinite == 3
    if policy == "drop":
        assert not out.selected[12:15].any(), "non-finite rows were dropped before the rule"


@pytest.mark.parametrize("rule", sorted(ROBUST))
def test_robust_rules_stay_finite_and_bounded_with_huge_rows_dropped_nan(rule: str) -> None:
    kinds = ["honest"] * 13 + ["nan", "huge", "-huge"]
    updates = make_rows(kinds, seed=3)
    res = server_step(defense_for(rule, [], "drop", f=2), updates, ctx_for(len(kinds)))
    assert torch.isfinite(res.aggregate).all()
    honest = updates[:13]
    assert (res.aggregate.abs() <= honest.abs().max() * 2 + 1e-6).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=14),
    rule=st.sampled_from(RULES.names()),
    policy=st.sampled_from(["drop", "zero", "keep"]),
    f=st.integers(0, 4),
    seed=st.integers(0, 1000),
)
def test_random_mixes_never_crash(kinds: list[str], rule: str, policy: str, f: int, seed: int) -> None:
    updates = make_rows(kinds, seed)
    n_bad = sum(k in {"nan", "inf", "-inf"} for k in kinds)
    rows_left = len(kinds) - n_bad if policy == "drop" else len(kinds)
    entry = RULES.get(rule)
    try:
        res = server_step(defense_for(rule, [], policy, f=f), updates, ctx_for(len(kinds), seed))
    except AggregationError as exc:
        # only a broken requirement may stop a rule, and the error must say which
        assert entry.requires is not None and entry.requires.violated(rows_left, f, entry.params()), str(exc)
        assert str(exc).startswith(f"{rule}: requires") and f"n={rows_left}" in str(exc), str(exc)
        return
    assert res.aggregate.shape == (D,)
    assert res.nonfinite == n_bad
    if policy != "keep" and n_bad < len(kinds):
        assert not torch.isnan(res.aggregate).any()


@pytest.mark.parametrize("auditor", AUDITORS.names())
@pytest.mark.parametrize("policy", ["flag", "exclude", "quarantine", "reputation"])
def test_every_auditor_survives_hostile_rows(auditor: str, policy: str) -> None:
    entry = AUDITORS.get(auditor)
    params = AuditSection(name=auditor, policy=policy).params(entry.params)
    aud = entry.obj(params, num_clients=20)
    for rnd, kinds in enumerate([["honest"] * 8 + ["huge", "-huge", "zero"], ["honest"] * 5 + ["nan", "inf"],
                                 ["zero"] * 4, ["huge"], ["honest"] * 2]):
        n = len(kinds)
        ctx = ctx_for(n, rnd)
        admitted = aud.admit(rnd, torch.arange(n))
        assert admitted.shape == (n,) and admitted.dtype == torch.bool
        dec = aud.screen(make_rows(kinds, rnd), torch.ones(n), ctx)
        for name in ("keep", "weight", "score", "flagged"):
            assert getattr(dec, name).shape == (n,), name
        assert torch.isfinite(dec.weight).all()
        keep = dec.keep & ~torch.isnan(make_rows(kinds, rnd)).any(1)
        if keep.any():
            kept = make_rows(kinds, rnd)[keep]
            res = build_defense(DefenseSection(name="median"), f=0)(kept, torch.ones(len(kept)), ctx_for(len(kept), rnd))
            aud.observe(ctx_for(len(kept), rnd), subset_decision(dec, keep), res)


def test_nan_attack_under_plain_fedavg_marks_the_run_diverged(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert fedpoison.cli.main(["run", "--quiet", "--set", "rounds=6", "--set", "attack.name=nonfinite",
                               "--set", "attack.count=2", "--set", "attack.start_round=2",
                               "--set", "defense.nonfinite=keep", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged"] is True and summary["diverged_round"] == 2
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3, "rounds 0-2 kept, the loop stopped cleanly after the diverged round"


def test_nan_attack_is_dropped_and_counted_by_default() -> None:
    r = fedpoison.run(overrides=["rounds=4", "attack.name=nonfinite", "attack.count=2"])
    assert not r.summary["diverged"]
    assert (r.history["nonfinite_rows"] == 2).all()
    assert r.summary["final_accuracy"] > 0.5
    assert r.config.defense.nonfinite == "drop"  # the policy is in the saved config


def test_rule_requirement_broken_at_call_time_skips_the_round_and_records_it() -> None:
    # median assumes f=3 of 10, so it needs 7 rows; a quarantining auditor leaves fewer in some rounds
    over = ["rounds=6", "clients.num=10", "attack.name=scaling", "attack.scale=10", "attack.count=3",
            "defense.name=median", "defense.f=3", "audit.name=norm_mad", "audit.policy=quarantine"]
    r = fedpoison.run(overrides=over)
    skipped = r.history["aggregation_skipped"].fillna("")
    assert r.summary["skipped_rounds"] == int((skipped != "").sum()) > 0
    assert skipped[skipped != ""].str.contains("median").all()
    assert len(r.history) == 6 and not r.summary["diverged"]
    with pytest.raises(AggregationError, match="median"):
        fedpoison.run(overrides=[*over, "defense.on_violation=raise"])


def test_defense_aware_probing_leaves_the_server_defense_untouched() -> None:
    """A defense-aware attacker probes a private copy of the defense: the server's
    stateful rule and the round's defense generator are exactly as before crafting.
    """
    from fedpoison.simulation.federation import build_federation
    from fedpoison.simulation.loop import LoopState, craft_updates

    cfg = fedpoison.load_config(overrides=["attack.name=fang_krum", "attack.count=4",
                                           "attack.knowledge=defense_aware", "defense.name=centered_clipping"])
    fed = build_federation(cfg)
    state = LoopState(params=fed.init_params.clone())
    ids = torch.arange(20)
    attacked = fed.is_malicious(ids)
    updates = torch.randn(20, fed.spec.dim) * 0.01
    warm = RoundContext(0, ids, torch.Generator().manual_seed(0), state.params, fed.spec.slices, None)
    fed.defense(updates, torch.ones(20), warm)  # give the rule some state (its centre)
    before = {k: {kk: vv.clone() if isinstance(vv, torch.Tensor) else vv for kk, vv in v.items()}
              for k, v in fed.defense.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    g_state = g.get_state()
    ctx = RoundContext(1, ids, g, state.params, fed.spec.slices, None)
    assert before["rule"], "centered clipping holds a centre to protect"
    crafted = craft_updates(fed, state, 1, ids, updates, torch.ones(20), attacked, ctx)
    assert not torch.equal(crafted[attacked], updates[attacked])
    after = fed.defense.state_dict()
    for key, value in before.items():
        for k2, v2 in value.items():
            if isinstance(v2, torch.Tensor):
                assert torch.equal(after[key][k2], v2), f"{key}.{k2} changed"
            else:
                assert after[key][k2] == v2
    assert torch.equal(g.get_state(), g_state), "the server's generator was not consumed"
