"""One contract for every registered auditor and every policy.

Built from a config as the round loop builds it; bad keys and values are
refused naming the key; the hooks return the documented shapes and dtypes;
inputs are never mutated; decisions are deterministic; ``state_dict`` holds
only plain tensors, lists, dicts and scalars and resumes to identical decisions.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import fedpoison
from fedpoison.audit import AUDITORS
from fedpoison.defenses import AggregationResult, RoundContext
from fedpoison.errors import ConfigError

POLICIES = ["flag", "exclude", "quarantine", "reputation"]
N, D = 12, 10
CASES = [(a, p) for a in AUDITORS.names() for p in POLICIES]


def build(name: str, policy: str, **extra: Any) -> Any:
    entry = AUDITORS.get(name)
    return entry.obj(entry.params(policy=policy, **extra), num_clients=N)


def round_rows(rnd: int, n: int = 8, bad: tuple[int, ...] = (0,)) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + rnd)
    x = 0.5 + 0.1 * torch.randn(n, D, generator=g)
    for i in bad:
        x[i] = -10.0 * x[i]
    return x


def drive(aud: Any, rounds: range) -> list[dict[str, torch.Tensor]]:
    """Admit, screen and observe, as the loop does; sampled ids rotate so some clients skip rounds."""
    out = []
    for rnd in rounds:
        sampled = torch.sort(torch.randperm(N, generator=torch.Generator().manual_seed(rnd))[:8]).values
        admitted = aud.admit(rnd, sampled)
        ids = sampled[admitted]
        x = round_rows(rnd, len(ids), bad=(0,) if len(ids) else ())
        ctx = RoundContext(rnd, ids, torch.Generator().manual_seed(rnd), torch.zeros(D))
        dec = aud.screen(x, torch.ones(len(ids)), ctx)
        k = int(dec.keep.sum())
        sel = torch.ones(k, dtype=torch.bool)
        if k > 1:
            sel[-1] = False
        aud.observe(RoundContext(rnd, ids[dec.keep], ctx.generator, ctx.global_params), dec,
                    AggregationResult(x[dec.keep].mean(0) if k else torch.zeros(D), sel.float() / max(k, 1), sel))
        out.append({"admitted": admitted, "keep": dec.keep, "weight": dec.weight, "score": dec.score,
                    "flagged": dec.flagged})
    return out


def plain(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor | int | float | bool | str) or obj is None:
        return True
    if isinstance(obj, list | tuple):
        return all(plain(v) for v in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, str) and plain(v) for k, v in obj.items())
    return False


@pytest.mark.parametrize(("name", "policy"), CASES)
def test_hooks_return_documented_shapes_and_leave_inputs_alone(name: str, policy: str) -> None:
    aud = build(name, policy, rule_flags=True)
    ids = torch.tensor([0, 2, 3, 5, 7, 8, 9, 11])
    admitted = aud.admit(0, ids)
    assert admitted.shape == (8,) and admitted.dtype == torch.bool
    x, w = round_rows(0), torch.arange(1.0, 9.0)
    x0, w0, ids0 = x.clone(), w.clone(), ids.clone()
    dec = aud.screen(x, w, RoundContext(0, ids, torch.Generator(), torch.zeros(D)))
    assert torch.equal(x, x0) and torch.equal(w, w0) and torch.equal(ids, ids0)
    for field, dtype in (("keep", torch.bool), ("flagged", torch.bool), ("weight", torch.float32),
                         ("score", torch.float32)):
        t = getattr(dec, field)
        assert t.shape == (8,) and t.dtype == dtype, field
    assert all(v.shape == (8,) for v in dec.signals.values())
    entry = AUDITORS.get(name)
    # fldetector has nothing to compare with in round 0; auditors that probe models need the server's side
    if not (entry.has("needs_history") or entry.has("needs_root_data")):
        assert bool(dec.flagged[0]), "a row ten times as long, pointing the other way, is flagged"
        assert bool(dec.keep[0]) == (policy == "flag")
        assert not dec.flagged[1:].any()
    assert (dec.weight >= 0).all() and torch.isfinite(dec.weight).all()


@pytest.mark.parametrize(("name", "policy"), CASES)
def test_deterministic_and_resumable_from_state_dict(name: str, policy: str) -> None:
    a, b = build(name, policy, rule_flags=True), build(name, policy, rule_flags=True)
    first = drive(a, range(6))
    assert all(torch.equal(u[k], v[k]) for u, v in zip(first, drive(b, range(6)), strict=True) for k in u)
    state = a.state_dict()
    assert plain(state), "state_dict must hold only plain tensors, lists, dicts and scalars"
    resumed = build(name, policy, rule_flags=True)
    resumed.load_state_dict(state)
    state["quarantine_left"].fill_(99)  # the auditor must have copied, not aliased, the state
    rest_a, rest_r = drive(a, range(6, 12)), drive(resumed, range(6, 12))
    for u, v in zip(rest_a, rest_r, strict=True):
        for k in u:
            assert torch.equal(u[k], v[k]), k


@pytest.mark.parametrize("name", AUDITORS.names())
def test_call_time_errors_name_the_problem(name: str) -> None:
    aud = build(name, "quarantine")
    with pytest.raises(ValueError, match=r"client ids: expected values in \[0, 11\], got 3..12"):
        aud.admit(0, torch.tensor([3, 12]))
    with pytest.raises(ValueError, match="expected 8 client ids for 8 rows, got 2"):
        aud.screen(round_rows(0), torch.ones(8), RoundContext(0, torch.tensor([0, 1]), torch.Generator(),
                                                              torch.zeros(D)))
    other = AUDITORS.get(name).obj(AUDITORS.get(name).params(), num_clients=N + 1)
    with pytest.raises(ValueError, match=f"state for {N + 1} clients, got {N}"):
        other.load_state_dict(aud.state_dict())
    with pytest.raises(ValueError, match="num_clients: expected at least 1, got 0"):
        AUDITORS.get(name).obj(AUDITORS.get(name).params(), num_clients=0)


@pytest.mark.parametrize("name", AUDITORS.names())
def test_few_rows_are_not_flagged_but_nonfinite_rows_always_are(name: str) -> None:
    aud = build(name, "exclude", min_rows=4)
    ids = torch.tensor([0, 1, 2])
    x = torch.tensor([[1.0] * D, [1.1] * D, [50.0] * D])
    dec = aud.screen(x, torch.ones(3), RoundContext(0, ids, torch.Generator(), torch.zeros(D)))
    assert not dec.flagged.any()
    x[1, 0] = float("nan")
    dec = aud.screen(x, torch.ones(3), RoundContext(1, ids, torch.Generator(), torch.zeros(D)))
    assert dec.flagged.tolist() == [False, True, False]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["audit.name=norm_mad", "audit.threshold=-1"], "audit.threshold"),
        (["audit.name=norm_mad", "audit.policy=ban"], "audit.policy"),
        (["audit.name=norm_mad", "audit.quarantine_rounds=0"], "audit.quarantine_rounds"),
        (["audit.name=norm_mad", "audit.quarantine_growth=0.5"], "audit.quarantine_growth"),
        (["audit.name=norm_mad", "audit.reputation_floor=2"], "audit.reputation_floor"),
        (["audit.name=norm_mad", "audit.signals=[norm]"], "unknown key 'audit.signals'"),
        (["audit.name=norm_mad", "audit.treshold=2"], "did you mean 'audit.threshold'"),
        (["audit.name=multi_signal", "audit.signals=[norm, entropy]"], "audit.signals"),
        (["audit.name=multi_signal", "audit.signals=[norm, norm]"], "'norm' repeats"),
        (["audit.name=multi_signal", "audit.signals=[]"], "audit.signals"),
        (["audit.name=multi_signal", "audit.history_weight=1"], "audit.history_weight"),
        (["audit.name=multi_signal", "audit.centre=mean"], "audit.centre"),
        (["audit.name=normmad"], "did you mean 'norm_mad'"),
    ],
)
def test_bad_config_names_the_key(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        fedpoison.load_config(overrides=overrides)


def test_registry_entries_carry_description_reference_and_params() -> None:
    assert {"norm_mad", "multi_signal"} <= set(AUDITORS.names())
    for entry in AUDITORS:
        assert entry.description and entry.reference
        assert entry.params.model_config.get("extra") == "forbid"
        assert "policy" in entry.params.model_fields and "threshold" in entry.params.model_fields
