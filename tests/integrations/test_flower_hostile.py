"""Hostile Flower replies: claimed weights checked in float32, a cap on claims, and a fuzz suite.

Promises (LIMITS.md, "Hostile updates"): a node's claimed ``num-examples`` must
be finite in the float32 the defense aggregates in (1e39 passes as a float64
and overflowed to inf before); ``max_weight`` caps claims and
``claims="ignore"`` weighs replies equally. The fuzz suite sends 60 generated
rounds of hostile replies to strategies with several rules: the round never
raises, every bad reply is rejected naming its node, and the global model stays
finite.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from test_flower import NODE_IDS, StaticGrid, global_record, reply, task_identity, update_matrix  # noqa: F401

from fedpoison.integrations.flower import ArrayLayout, RobustStrategy
from fedpoison.integrations.flower.strategy import aggregation_weights

RULES = ["mean", "clip", "norm_bound", "geometric_median", "median", "trimmed_mean"]


def _strategy(rule: str, **kwargs: Any) -> RobustStrategy:
    defense = {"name": "mean", "pre": ["clip"]} if rule == "clip" else {"name": rule}
    return RobustStrategy(defense=defense, f=2, min_available_nodes=len(NODE_IDS), **kwargs)


@pytest.mark.parametrize("rule", ["mean", "clip", "norm_bound", "geometric_median"])
def test_a_claim_of_1e39_examples_is_rejected_and_the_model_stays_finite(rule: str) -> None:
    strategy = _strategy(rule)
    arrays = global_record()
    layout = ArrayLayout.of(arrays)
    g = layout.flatten(arrays)
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), StaticGrid(NODE_IDS)))
    u, w = update_matrix()
    replies = [reply(m, layout.unflatten(g + u[i], arrays), {"num-examples": 1e39 if i == 0 else int(w[i])})
               for i, m in enumerate(msgs)]
    new, _ = strategy.aggregate_train(1, replies)
    report = strategy.history[-1]
    bad = msgs[0].metadata.dst_node_id
    assert bad in report.rejected and "float32" in report.rejected[bad]
    assert new is not None and torch.isfinite(layout.flatten(new)).all()


def test_max_weight_caps_claims_and_ignore_weighs_equally() -> None:
    assert aggregation_weights([5.0, 1e9, 20.0], max_weight=10.0).tolist() == [5.0, 10.0, 10.0]
    assert aggregation_weights([5.0, 1e9], ignore=True).tolist() == [1.0, 1.0]
    arrays = global_record()
    layout = ArrayLayout.of(arrays)
    g = layout.flatten(arrays)
    u, w = update_matrix()
    results = {}
    for name, kwargs in {"capped": {"max_weight": 1.0}, "ignored": {"claims": "ignore"}}.items():
        strategy = _strategy("mean", **kwargs)
        msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), StaticGrid(NODE_IDS)))
        claims = [1e20 if i == 0 else int(w[i]) for i in range(len(msgs))]
        new, _ = strategy.aggregate_train(1, [reply(m, layout.unflatten(g + u[i], arrays), {"num-examples": claims[i]})
                                              for i, m in enumerate(msgs)])
        results[name] = layout.flatten(new)
    # every claim >= 1, so a cap of 1 is equal weights: both are the plain mean of the rows
    torch.testing.assert_close(results["capped"], g + u.mean(0))
    torch.testing.assert_close(results["ignored"], g + u.mean(0))


@pytest.mark.parametrize("kwargs", [{"max_weight": 0}, {"max_weight": float("inf")}, {"max_weight": True},
                                    {"claims": "trust"}])
def test_bad_claim_settings_fail_at_construction(kwargs: dict[str, Any]) -> None:
    from fedpoison.errors import ConfigError

    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        RobustStrategy(defense={"name": "mean"}, **kwargs)


BAD_CLAIMS: list[Any] = [1e39, 3.5e38, 1e300, float("inf"), float("nan"), -1, 0, -1e39, 2**200]


def _hostile_reply(rng: random.Random, msg: Message, arrays: ArrayRecord, good: ArrayRecord, w: int) -> tuple[Message, bool]:
    """A reply to ``msg`` and whether it must be rejected."""
    kind = rng.randrange(7)
    wb, bb = arrays["fc.weight"].numpy(), arrays["fc.bias"].numpy()
    if kind == 0:
        return reply(msg, good, {"num-examples": rng.choice(BAD_CLAIMS)}), True
    if kind == 1:
        shape = rng.choice([(3, 3), (4, 4), (12,), (4, 3, 1)])
        return reply(msg, ArrayRecord({"fc.weight": Array(np.zeros(shape, np.float32)), "fc.bias": Array(bb)}),
                     {"num-examples": w}), True
    if kind == 2:
        dtype = rng.choice([np.float64, np.float16, np.int32, np.int64])
        return reply(msg, ArrayRecord({"fc.weight": Array(wb.astype(dtype)), "fc.bias": Array(bb)}),
                     {"num-examples": w}), True
    if kind == 3:
        return reply(msg, None if rng.random() < 0.5 else ArrayRecord({"fc.bias": Array(bb)}),
                     {"num-examples": w}), True
    if kind == 4:
        return reply(msg, good, {"loss": 1.0} if rng.random() < 0.5 else {"num-examples": [5, 6]}), True
    if kind == 5:  # non-finite or huge values: accepted, then the defense's nonfinite policy or the rule
        value = rng.choice([float("nan"), float("inf"), 1e30])
        return reply(msg, ArrayRecord({"fc.weight": Array(np.full_like(wb, value)), "fc.bias": Array(bb)}),
                     {"num-examples": w}), False
    return reply(msg, good, {"num-examples": w}), False


@pytest.mark.parametrize("case", range(60))
def test_hostile_flower_replies_fuzz(case: int) -> None:
    rng = random.Random(case)
    rule = RULES[case % len(RULES)]
    strategy = _strategy(rule, **({"max_weight": 50.0} if case % 3 == 0 else {}))
    arrays = global_record(seed=case)
    layout = ArrayLayout.of(arrays)
    g = layout.flatten(arrays)
    u, w = update_matrix(seed=case)
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), StaticGrid(NODE_IDS)))
    replies, must_reject = [], set()
    hostile = set(rng.sample(range(len(msgs)), 4))  # a minority: rules with f = 2 still have enough rows
    for i, m in enumerate(msgs):
        good = layout.unflatten(g + u[i], arrays)
        if i in hostile:
            r, bad = _hostile_reply(rng, m, arrays, good, int(w[i]))
            if bad:
                must_reject.add(m.metadata.dst_node_id)
        else:
            r = reply(m, good, {"num-examples": int(w[i])})
        replies.append(r)
    if rng.random() < 0.5:  # a node replying twice
        replies.append(replies[0])
    rng.shuffle(replies)
    new, _ = strategy.aggregate_train(1, replies)  # never raises
    report = strategy.history[-1]
    assert must_reject <= set(report.rejected)
    for nid, reason in report.rejected.items():
        assert f"node {nid}" in reason and "\n" not in reason
    if new is not None:
        assert torch.isfinite(layout.flatten(new)).all(), f"{rule}: the global model is not finite"
