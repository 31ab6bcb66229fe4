"""Hostile update matrices, weights and contexts for every registered rule and pre-aggregator.

Promises (LIMITS.md, "Hostile updates"): every shape, dtype and weight problem
is an :class:`UpdateError` naming the step and what it expected, never a raw
torch error; no step mutates its input, a non-contiguous (transposed) one
included, and such an input gives the same result as its contiguous copy;
all-zero weights weigh the rows equally (a finite aggregate); NaN, negative
and float32-overflowing weights are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from fedpoison.defenses.base import RoundContext
from fedpoison.defenses.registry import PRE_AGGREGATORS, RULES
from fedpoison.errors import UpdateError
from fedpoison.testing.build import build_defense_step
from fedpoison.testing.fakes import make_round_context, make_updates

N, D, F = 9, 12, 1
Case = Callable[[torch.Tensor, torch.Tensor, RoundContext], tuple[Any, Any, Any]]

BAD: dict[str, Case] = {
    "1-d updates": lambda x, w, c: (x[0], w, c),
    "3-d updates": lambda x, w, c: (x[None], w, c),
    "no rows": lambda x, w, c: (x[:0], w[:0], c),
    "no columns": lambda x, w, c: (x[:, :0], w, c),
    "scalar": lambda x, w, c: (torch.tensor(1.0), w, c),
    "list": lambda x, w, c: (x.tolist(), w, c),
    "numpy": lambda x, w, c: (x.numpy(), w, c),
    "float64": lambda x, w, c: (x.double(), w, c),
    "float16": lambda x, w, c: (x.half(), w, c),
    "int64": lambda x, w, c: (x.long(), w, c),
    "bool": lambda x, w, c: (x > 0, w, c),
    "complex": lambda x, w, c: (x.to(torch.complex64), w, c),
    "weights short": lambda x, w, c: (x, w[:-1], c),
    "weights long": lambda x, w, c: (x, torch.cat([w, w[:1]]), c),
    "weights 2-d": lambda x, w, c: (x, w[None], c),
    "weights bool": lambda x, w, c: (x, w > 0, c),
    "weights list": lambda x, w, c: (x, w.tolist(), c),
    "weights nan": lambda x, w, c: (x, torch.where(torch.arange(len(w)) == 2, float("nan"), w), c),
    "weights negative": lambda x, w, c: (x, torch.where(torch.arange(len(w)) == 0, -1.0, w), c),
    "weights inf": lambda x, w, c: (x, torch.full_like(w, float("inf")), c),
    "weights 1e39 (float64)": lambda x, w, c: (x, w.double() * 1e39, c),
    "ctx None": lambda x, w, c: (x, w, None),
    "ctx global_params wrong": lambda x, w, c: (x, w, RoundContext(0, c.client_ids, c.generator, torch.zeros(D + 1))),
}


def _steps() -> list[tuple[str, bool]]:
    return [(n, False) for n in RULES.names()] + [(n, True) for n in PRE_AGGREGATORS.names()]


@pytest.mark.parametrize(("name", "pre"), _steps())
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_raise_update_error(name: str, pre: bool, case: str) -> None:
    step = build_defense_step(name, F, pre=pre)
    x, w = make_updates(N, D)
    ctx = make_round_context(N, D)
    u, ww, c = BAD[case](x, w, ctx)
    with pytest.raises(UpdateError) as info:
        step(u, ww, c)
    msg = str(info.value)
    assert name in msg and "expected" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_composed_defense_checks_the_same_contract(case: str) -> None:
    from fedpoison.config import DefenseSection
    from fedpoison.defenses import build_defense

    defense = build_defense(DefenseSection(name="median", pre=["clip"]), f=F)
    x, w = make_updates(N, D)
    u, ww, c = BAD[case](x, w, make_round_context(N, D))
    with pytest.raises(UpdateError, match=r"^defense: expected"):
        defense(u, ww, c)


@pytest.mark.parametrize(("name", "pre"), _steps())
def test_transposed_input_is_not_mutated_and_matches_its_copy(name: str, pre: bool) -> None:
    x, w = make_updates(N, D, seed=3)
    strided = x.T.contiguous().T  # same values, column-major: not contiguous
    assert not strided.is_contiguous()
    before = strided.clone()
    out_strided = build_defense_step(name, F, pre=pre)(strided, w.clone(), make_round_context(N, D))
    out_plain = build_defense_step(name, F, pre=pre)(x.clone(), w.clone(), make_round_context(N, D))
    assert torch.equal(strided, before), "the step wrote into its (non-contiguous) input"
    a = out_strided.updates if pre else out_strided.aggregate
    b = out_plain.updates if pre else out_plain.aggregate
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", RULES.names())
def test_all_zero_weights_weigh_rows_equally(name: str) -> None:
    x, _ = make_updates(N, D, seed=4)
    zero = build_defense_step(name, F)(x, torch.zeros(N), make_round_context(N, D))
    equal = build_defense_step(name, F)(x, torch.ones(N), make_round_context(N, D))
    assert torch.isfinite(zero.aggregate).all()
    torch.testing.assert_close(zero.aggregate, equal.aggregate)


def test_mean_and_norm_bound_hand_case_with_zero_weights() -> None:
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    ctx = make_round_context(2, 2, root=None)
    assert torch.equal(build_defense_step("mean", 0)(x, torch.zeros(2), ctx).aggregate, torch.tensor([2.0, 1.0]))
    out = build_defense_step("norm_bound", 0)(x, torch.tensor([0.0, 0.0]), ctx).aggregate
    assert torch.isfinite(out).all()


def test_the_fuzz_covers_enough_cases() -> None:
    assert len(_steps()) * len(BAD) >= 50
