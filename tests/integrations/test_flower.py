"""fedpoison inside Flower: the strategy on real Flower messages, the malicious client, the run config.

The unit tests build real ``flwr.app.Message`` objects (instructions from the
strategy's own ``configure_train``, replies made with ``reply_to``) and compare
the strategy's aggregate with fedpoison's own :class:`~fedpoison.defenses.Defense`
called on the same update matrix. The ``flower``-marked test at the end runs
the example app in Flower's simulation engine (Ray processes, no mocks).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

flwr = pytest.importorskip("flwr")

from flwr.app import (  # noqa: E402
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

import fedpoison  # noqa: E402
from fedpoison.attacks import ATTACKS  # noqa: E402
from fedpoison.audit import AUDITORS  # noqa: E402
from fedpoison.config import DefenseSection  # noqa: E402
from fedpoison.defenses import RULES, RoundContext, build_defense  # noqa: E402
from fedpoison.errors import ConfigError  # noqa: E402
from fedpoison.integrations.flower import (  # noqa: E402
    ArrayLayout,
    MaliciousClient,
    RobustStrategy,
    check_deployable,
    experiment_config,
)
from fedpoison.integrations.flower.malicious import SIMULATION_ONLY_LOCAL  # noqa: E402
from fedpoison.plugins import load_config  # noqa: E402
from fedpoison.seeding import generator  # noqa: E402

N, F, SEED = 11, 2, 3  # n >= 4f + 3: every registered rule's requirement holds
SHAPES = {"fc.weight": (4, 3), "fc.bias": (3,)}
D = 15


# ---- helpers ---------------------------------------------------------------------
class StaticGrid(Grid):
    """The one part of a Grid that ``configure_train`` reads: the connected node ids."""

    def __init__(self, node_ids: list[int]) -> None:
        self._ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._ids)

    def set_run(self, run: Any) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Any:
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def push_messages(self, messages: Any) -> Any:
        raise NotImplementedError

    def pull_messages(self, message_ids: Any) -> Any:
        raise NotImplementedError

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        raise NotImplementedError


@pytest.fixture(autouse=True)
def task_identity() -> Iterator[None]:
    """Messages need a run and task identity, which a ServerApp process has; set a dummy one."""
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 0
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


NODE_IDS = [9_000_000_000 + 97 * i for i in range(N)]  # Flower node ids are large and arbitrary


def global_record(seed: int = 0, extra: dict[str, np.ndarray] | None = None) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    arrays = {k: Array(rng.standard_normal(s).astype(np.float32)) for k, s in SHAPES.items()}
    for k, v in (extra or {}).items():
        arrays[k] = Array(v)
    return ArrayRecord(arrays)


def update_matrix(n: int = N, d: int = D, *, seed: int = 0, outliers: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g) * 0.1 + 0.3 * torch.randn(n, d, generator=g)
    for i in outliers:
        u[i] = -20.0 * u[i]
    w = torch.randint(5, 50, (n,), generator=g).to(torch.float32)
    return u, w


def record_from_flat(layout: ArrayLayout, flat: torch.Tensor, template: ArrayRecord) -> ArrayRecord:
    return layout.unflatten(flat, template)


def reply(msg: Message, arrays: ArrayRecord | None, metrics: dict[str, Any] | None = None) -> Message:
    content = RecordDict()
    if arrays is not None:
        content["arrays"] = arrays
    if metrics is not None:
        content["metrics"] = MetricRecord(metrics)
    return Message(content=content, reply_to=msg)


def train_round(
    strategy: Any, arrays: ArrayRecord, updates: torch.Tensor, weights: torch.Tensor, *, rnd: int = 1,
    grid: Grid | None = None, send: str = "params",
) -> tuple[list[Message], list[Message], Any, Any]:
    """configure_train, one honest-looking reply per message (row i for the i-th message), aggregate_train."""
    msgs = list(strategy.configure_train(rnd, arrays, ConfigRecord(), grid or StaticGrid(NODE_IDS)))
    layout = ArrayLayout.of(arrays)
    g = layout.flatten(arrays)
    replies = []
    for i, m in enumerate(msgs):
        flat = g + updates[i] if send == "params" else updates[i]
        replies.append(reply(m, record_from_flat(layout, flat, arrays), {"num-examples": int(weights[i]), "loss": 0.5}))
    new, metrics = strategy.aggregate_train(rnd, list(reversed(replies)))
    return msgs, replies, new, metrics


def matrix_seen(strategy: Any, arrays: ArrayRecord, replies: list[Message]) -> tuple[torch.Tensor, torch.Tensor]:
    """The update matrix and ids, in reply order, exactly as the strategy computes them."""
    layout = ArrayLayout.of(arrays)
    g = layout.flatten(arrays)
    rows = [layout.flatten(r.content["arrays"]) - g for r in replies]
    ids = [strategy.node_index[r.metadata.src_node_id] for r in replies]
    return torch.stack(rows), torch.tensor(ids)


def root_fn(global_params: torch.Tensor) -> torch.Tensor:
    return torch.full_like(global_params, 0.05)


# ---- (a) the strategy's aggregation equals fedpoison's Defense on the same matrix ------------
DEFENSES = [(name, ()) for name in RULES.names()] + [("median", ("clip",)), ("mean", ("bucketing",)), ("krum", ("nnm",))]


@pytest.mark.parametrize(("rule", "pre"), DEFENSES, ids=[f"{'+'.join(p)}{'+' if p else ''}{r}" for r, p in DEFENSES])
def test_strategy_matches_defense_on_same_update_matrix(rule: str, pre: tuple[str, ...]) -> None:
    section = DefenseSection(name=rule, pre=list(pre))
    strategy = RobustStrategy(defense=section, f=F, seed=SEED, root_update=root_fn, min_available_nodes=N)
    arrays = global_record()
    u, w = update_matrix(outliers=(1, 6))
    _, replies, new, metrics = train_round(strategy, arrays, u, w)

    received = list(reversed(replies))  # the order the strategy got them in
    updates, ids = matrix_seen(strategy, arrays, received)
    weights = torch.tensor([float(r.content["metrics"]["num-examples"]) for r in received])
    layout = ArrayLayout.of(arrays)
    g = layout.flatten(arrays)
    ctx = RoundContext(0, ids, generator(SEED, "defense", 0), g.clone(), layout.slices, root_fn)
    expected = build_defense(section, f=F)(updates, weights, ctx)

    assert new is not None
    torch.testing.assert_close(layout.flatten(new), g + expected.aggregate, rtol=1e-6, atol=1e-6)
    node_of = {strategy.node_index[n]: n for n in NODE_IDS}
    want_selected = sorted(node_of[int(i)] for i in ids[expected.selected])
    assert sorted(metrics["fedpoison.selected-nodes"]) == want_selected
    assert metrics["fedpoison.clipped"] == expected.clipped
    assert metrics["fedpoison.accepted"] == N
    report = strategy.history[-1]
    torch.testing.assert_close(
        torch.tensor([next(n.weight for n in report.nodes if n.node_id == node_of[int(i)]) for i in ids]),
        expected.weights.float(), rtol=1e-6, atol=1e-6,
    )


def test_update_replies_give_the_same_model_as_parameter_replies() -> None:
    arrays = global_record()
    u, w = update_matrix(seed=4)
    outs = []
    for send in ("params", "update"):
        strategy = RobustStrategy(defense={"name": "median"}, f=F, reply=send, min_available_nodes=N)
        outs.append(ArrayLayout.of(arrays).flatten(train_round(strategy, arrays, u, w, send=send)[2]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_mean_defense_reproduces_flowers_fedavg() -> None:
    arrays = global_record(seed=1)
    u, w = update_matrix(seed=2)
    strategy = RobustStrategy(defense={"name": "mean"}, min_available_nodes=N)
    _, replies, new, metrics = train_round(strategy, arrays, u, w)
    flower_new, flower_metrics = FedAvg().aggregate_train(1, replies)
    layout = ArrayLayout.of(arrays)
    torch.testing.assert_close(layout.flatten(new), layout.flatten(flower_new), rtol=1e-5, atol=1e-6)
    assert metrics["loss"] == pytest.approx(flower_metrics["loss"])  # the clients' own metrics, aggregated


def test_server_lr_scales_the_step() -> None:
    arrays = global_record()
    u, w = update_matrix(seed=5)
    layout = ArrayLayout.of(arrays)
    g = layout.flatten(arrays)
    steps = []
    for lr in (1.0, 0.5):
        s = RobustStrategy(defense={"name": "mean"}, server_lr=lr, min_available_nodes=N)
        steps.append(layout.flatten(train_round(s, arrays, u, w)[2]) - g)
    torch.testing.assert_close(steps[1], 0.5 * steps[0], rtol=1e-5, atol=1e-6)


# ---- auditing and quarantine ----------------------------------------------------------------
def test_auditor_screens_then_defense_aggregates_like_the_round_loop() -> None:
    audit = {"name": "norm_mad", "policy": "exclude"}
    strategy = RobustStrategy(defense={"name": "median"}, audit=audit, f=F, seed=SEED, min_available_nodes=N)
    arrays = global_record()
    u, w = update_matrix(outliers=(2, 8))
    msgs, replies, new, metrics = train_round(strategy, arrays, u, w)
    attackers = sorted(msgs[i].metadata.dst_node_id for i in (2, 8))
    assert sorted(metrics["fedpoison.flagged-nodes"]) == attackers
    assert not set(attackers) & set(metrics["fedpoison.selected-nodes"])

    # reference: the same steps by hand with a fresh auditor and defense
    received = list(reversed(replies))
    updates, ids = matrix_seen(strategy, arrays, received)
    weights = torch.tensor([float(r.content["metrics"]["num-examples"]) for r in received])
    layout = ArrayLayout.of(arrays)
    g = layout.flatten(arrays)
    ctx = RoundContext(0, ids, generator(SEED, "defense", 0), g.clone(), layout.slices, None)
    entry = AUDITORS.get("norm_mad")
    auditor = entry.obj(entry.params(policy="exclude"), num_clients=N)
    decision = auditor.screen(updates, weights, ctx)
    keep = decision.keep
    sub = RoundContext(0, ids[keep], ctx.generator, ctx.global_params, ctx.slices, None)
    expected = build_defense(DefenseSection(name="median"), f=F)(updates[keep], (weights * decision.weight)[keep], sub)
    torch.testing.assert_close(layout.flatten(new), g + expected.aggregate, rtol=1e-6, atol=1e-6)


def test_quarantined_node_is_not_sent_a_train_message() -> None:
    audit = {"name": "norm_mad", "policy": "quarantine", "quarantine_rounds": 2}
    strategy = RobustStrategy(defense={"name": "mean"}, audit=audit, seed=SEED, min_available_nodes=N)
    arrays = global_record()
    u, w = update_matrix(outliers=(4,))
    msgs, _, arrays2, metrics = train_round(strategy, arrays, u, w, rnd=1)
    attacker = msgs[4].metadata.dst_node_id
    assert metrics["fedpoison.flagged-nodes"] == [attacker]
    for rnd in (2, 3):
        u2, w2 = update_matrix(n=N - 1, seed=rnd)
        msgs2, _, arrays2, metrics2 = train_round(strategy, arrays2, u2, w2, rnd=rnd)
        assert attacker not in {m.metadata.dst_node_id for m in msgs2}
        assert metrics2["fedpoison.quarantined-nodes"] == [attacker]
        assert strategy.history[-1].quarantined == (attacker,)
    msgs4 = list(strategy.configure_train(4, arrays2, ConfigRecord(), StaticGrid(NODE_IDS)))
    assert attacker in {m.metadata.dst_node_id for m in msgs4}  # sentence served


def test_sampling_is_seeded_and_respects_fraction_train() -> None:
    def sampled(seed: int, rnd: int) -> list[int]:
        s = RobustStrategy(defense={"name": "mean"}, seed=seed, fraction_train=0.5, min_available_nodes=N)
        return sorted(m.metadata.dst_node_id for m in s.configure_train(rnd, global_record(), ConfigRecord(),
                                                                         StaticGrid(NODE_IDS)))

    assert len(sampled(0, 1)) == N // 2
    assert sampled(0, 1) == sampled(0, 1)
    assert sampled(0, 1) != sampled(0, 2) or sampled(0, 1) != sampled(0, 3)


# ---- validation: a bad reply is rejected with its node named, never a crash -------------------
def test_bad_replies_are_rejected_by_node_and_the_rest_aggregated() -> None:
    strategy = RobustStrategy(defense={"name": "mean"}, min_available_nodes=N)
    arrays = global_record()
    layout = ArrayLayout.of(arrays)
    g = layout.flatten(arrays)
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), StaticGrid(NODE_IDS)))
    u, w = update_matrix()
    good = {m.metadata.dst_node_id: reply(m, layout.unflatten(g + u[i], arrays), {"num-examples": int(w[i])})
            for i, m in enumerate(msgs)}
    nid = [m.metadata.dst_node_id for m in msgs]
    wb = arrays["fc.weight"].numpy()
    bb = arrays["fc.bias"].numpy()
    bad = {
        nid[0]: reply(msgs[0], ArrayRecord({"fc.weight": Array(wb[:3]), "fc.bias": Array(bb)}), {"num-examples": 5}),
        nid[1]: reply(msgs[1], ArrayRecord({"fc.weight": Array(wb.astype(np.float64)), "fc.bias": Array(bb)}),
                      {"num-examples": 5}),
        nid[2]: reply(msgs[2], ArrayRecord({"fc.weight": Array(wb)}), {"num-examples": 5}),
        nid[3]: reply(msgs[3], ArrayRecord({"fc.weight": Array(dtype="float32", shape=(4, 3), stype="numpy.ndarray",
                                                               data=b"not numpy"), "fc.bias": Array(bb)}),
                      {"num-examples": 5}),
        nid[4]: reply(msgs[4], ArrayRecord({"fc.bias": Array(bb), "fc.weight": Array(wb)}), {"num-examples": 5}),
        nid[5]: reply(msgs[5], arrays, {"num-examples": -3}),
        nid[6]: reply(msgs[6], arrays, {"loss": 1.0}),
        nid[7]: reply(msgs[7], None, {"num-examples": 5}),
        nid[8]: Message(Error(code=0, reason="client crashed"), reply_to=msgs[8]),
    }
    lying = Array(wb.astype(np.float64))
    lying.dtype = "float32"  # declares float32, carries float64: the decoded data decides
    bad[nid[9]] = reply(msgs[9], ArrayRecord({"fc.weight": lying, "fc.bias": Array(bb)}), {"num-examples": 5})
    replies = [bad.get(n, good[n]) for n in nid] + [good[nid[10]]]  # the last one replies twice
    new, metrics = strategy.aggregate_train(1, replies)

    report = strategy.history[-1]
    assert report.accepted == (nid[10],)
    assert set(report.rejected) == set(nid[:8]) | {nid[9], nid[10]}
    for n, reason in report.rejected.items():
        assert f"node {n}" in reason
    assert "fc.weight" in report.rejected[nid[0]] and "(3, 3)" in report.rejected[nid[0]]
    assert "float64" in report.rejected[nid[1]] and "float64" in report.rejected[nid[9]]
    assert "missing ['fc.bias']" in report.rejected[nid[2]]
    assert "cannot be decoded" in report.rejected[nid[3]]
    assert "in that order" in report.rejected[nid[4]]
    assert "-3" in report.rejected[nid[5]] and "num-examples" in report.rejected[nid[6]]
    assert "ArrayRecord" in report.rejected[nid[7]]
    assert report.failed == {nid[8]: "error reply (code 0): client crashed"}
    assert "second reply" in report.rejected[nid[10]]  # its first reply was aggregated, alone
    assert metrics["fedpoison.accepted"] == 1
    assert sorted(metrics["fedpoison.rejected-nodes"]) == sorted(set(nid[:8]) | {nid[9]} | {nid[10]})
    torch.testing.assert_close(layout.flatten(new), g + u[10], rtol=1e-6, atol=1e-6)


def test_no_usable_reply_keeps_the_model_and_reports() -> None:
    strategy = RobustStrategy(defense={"name": "median"}, min_available_nodes=N)
    arrays = global_record()
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), StaticGrid(NODE_IDS)))
    new, metrics = strategy.aggregate_train(1, [reply(m, arrays, {"num-examples": 0}) for m in msgs])
    assert new is None
    assert metrics["fedpoison.accepted"] == 0 and len(metrics["fedpoison.rejected-nodes"]) == N


def test_too_few_rows_for_the_rule_skips_the_round_and_says_why() -> None:
    strategy = RobustStrategy(defense={"name": "median"}, f=6, min_available_nodes=N)  # median needs n >= 13
    new, metrics = train_round(strategy, global_record(), *update_matrix())[2:]
    assert new is None
    assert "median" in strategy.history[-1].error and metrics["fedpoison.aggregated"] == 0


def test_nonfinite_rows_follow_the_defense_policy() -> None:
    arrays = global_record()
    u, w = update_matrix()
    u[3, 0] = float("nan")
    strategy = RobustStrategy(defense={"name": "mean", "nonfinite": "drop"}, min_available_nodes=N)
    new, metrics = train_round(strategy, arrays, u, w)[2:]
    assert np.isfinite(ArrayLayout.of(arrays).flatten(new).numpy()).all()
    assert metrics["fedpoison.nonfinite_rows"] == 1.0 and metrics["fedpoison.accepted"] == N


def test_integer_arrays_are_not_aggregated_and_keep_the_servers_copy() -> None:
    arrays = global_record(extra={"steps": np.array([41], dtype=np.int64)})
    strategy = RobustStrategy(defense={"name": "mean"}, min_available_nodes=N)
    layout = ArrayLayout.of(arrays)
    assert layout.dim == D
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), StaticGrid(NODE_IDS)))
    replies = []
    for m in msgs:
        rec = ArrayRecord({k: Array(arrays[k].numpy() + (1 if k == "steps" else 0.5)) for k in layout.keys})
        replies.append(reply(m, rec, {"num-examples": 3}))
    new, _ = strategy.aggregate_train(1, replies)
    assert new["steps"].numpy().tolist() == [41]
    np.testing.assert_allclose(new["fc.bias"].numpy(), arrays["fc.bias"].numpy() + 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"f": -1}, "f: expected a non-negative integer"),
        ({"reply": "weights"}, "reply: expected 'params' or 'update'"),
        ({"server_lr": 0.0}, "server_lr: expected a positive finite number"),
        ({"defense": {"name": "medain"}}, "did you mean 'median'"),
        ({"defense": {"name": "median", "bogus": 1}}, "unknown key 'defense.bogus'"),
        ({"audit": {"name": "norm_mda"}}, "did you mean 'norm_mad'"),
        ({"audit": object()}, "lacks ['admit', 'screen', 'observe']"),
        ({"max_nodes": 0}, "max_nodes: expected a positive integer"),
    ],
)
def test_bad_settings_fail_at_construction_naming_the_value(kwargs: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"defense": {"name": "mean"}, **kwargs}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        RobustStrategy(**settings)


# ---- the malicious client ---------------------------------------------------------------------
SIM_ONLY = sorted({e.name for e in ATTACKS if e.meta["knowledge"] != "local" or e.meta.get("owns_training", False)}
                  | set(SIMULATION_ONLY_LOCAL))
DEPLOYABLE = sorted(set(ATTACKS.names()) - set(SIM_ONLY))


@pytest.mark.parametrize("name", SIM_ONLY)
def test_attacks_that_need_other_clients_are_refused_as_simulation_only(name: str) -> None:
    with pytest.raises(ConfigError, match=f"'{name}' is simulation-only.*fedpoison run"):
        check_deployable({"name": name})


@pytest.mark.parametrize(
    ("section", "key"),
    [({"name": "sign_flip", "collude": True}, "attack.collude"),
     ({"name": "sign_flip", "knowledge": "omniscient"}, "attack.knowledge"),
     ({"name": "scaling", "always_participate": True}, "attack.always_participate")],
)
def test_threat_models_a_flower_node_cannot_have_are_refused(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        check_deployable(section)


def _context(pid: int, n: int = 4) -> Context:
    return Context(run_id=7, node_id=100 + pid, node_config={"partition-id": pid, "num-partitions": n},
                   state=RecordDict(), run_config={})


def _train_message(arrays: ArrayRecord, rnd: int = 1, node: int = 100) -> Message:
    return Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": rnd})}),
                   dst_node_id=node, message_type=MessageType.TRAIN)


def _client_app(update: torch.Tensor, attacker: MaliciousClient) -> ClientApp:
    app = ClientApp()

    @app.train(mods=[attacker])
    def train(msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"]
        layout = ArrayLayout.of(arrays)
        new = layout.unflatten(layout.flatten(arrays) + update, arrays)
        return Message(RecordDict({"arrays": new, "metrics": MetricRecord({"num-examples": 20})}), reply_to=msg)

    return app


def test_sign_flip_mod_rewrites_only_the_malicious_nodes_reply() -> None:
    attacker = MaliciousClient({"name": "sign_flip", "scale": 3.0}, num_classes=10, input_shape=(1, 8, 8),
                               partitions=[1])
    arrays = global_record()
    layout = ArrayLayout.of(arrays)
    g = layout.flatten(arrays)
    u = torch.linspace(-1, 1, D)
    app = _client_app(u, attacker)
    honest = app(_train_message(arrays), _context(0))
    evil = app(_train_message(arrays), _context(1))
    torch.testing.assert_close(layout.flatten(honest.content["arrays"]) - g, u, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layout.flatten(evil.content["arrays"]) - g, -3.0 * u, rtol=1e-5, atol=1e-5)
    assert evil.content["metrics"]["num-examples"] == 20


def test_attack_schedule_and_choice_of_attackers_match_fedpoisons_simulator() -> None:
    from fedpoison.attacks.threat import attack_active
    from fedpoison.simulation.federation import build_federation

    cfg = load_config(None, {"clients.num": 10, "rounds": 1, "attack.name": "scaling", "attack.count": 3,
                             "attack.start_round": 2, "attack.every": 2, "attack.probability": 0.7, "seed": 5})
    attacker = MaliciousClient(cfg.attack, num_classes=10, input_shape=(1, 8, 8), seed=5)
    assert attacker.malicious_partitions(10) == tuple(build_federation(cfg).malicious.tolist())
    assert [attacker.active(r + 1) for r in range(30)] == [attack_active(cfg.attack, 5, r) for r in range(30)]


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_every_deployable_attack_runs_as_a_mod(name: str) -> None:
    attacker = MaliciousClient({"name": name}, num_classes=10, input_shape=(1, 8, 8), partitions=[0])
    arrays = ArrayRecord({"w": Array(np.zeros((1, 8, 8), np.float32)), "b": Array(np.zeros(3, np.float32))})
    app = _client_app(torch.full((67,), 0.1), attacker)
    context = _context(0)
    for rnd in (1, 2):  # the second round reads what the first stored (stale free riders)
        out = app(_train_message(arrays, rnd), context)
        assert not out.has_error()
        assert ArrayLayout.of(arrays).check(out.content["arrays"])  # same names, dtypes and shapes


def test_data_attack_poisons_only_malicious_nodes_and_never_its_input() -> None:
    attacker = MaliciousClient({"name": "label_flip", "count": 1}, num_classes=10, input_shape=(1, 8, 8),
                               partitions=[2])
    x = torch.rand(30, 1, 8, 8)
    y = torch.arange(30) % 10
    x0, y0 = x.clone(), y.clone()
    xh, yh = attacker.poison(x, y, context=_context(0), server_round=1)
    _, ym = attacker.poison(x, y, context=_context(2), server_round=1)
    assert xh is x and yh is y
    assert not torch.equal(ym, y0)
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_attacker_needs_a_partition_id_and_says_how_to_set_it() -> None:
    attacker = MaliciousClient({"name": "sign_flip", "count": 1}, num_classes=10, input_shape=(1, 8, 8))
    ctx = Context(run_id=1, node_id=3, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(ConfigError, match="partition-id"):
        attacker.is_malicious(ctx)


# ---- the run config -----------------------------------------------------------------------------
def test_experiment_config_reads_the_fedpoison_keys_of_a_flower_run_config() -> None:
    cfg = experiment_config({"num-server-rounds": 3, "fedpoison.defense.name": "median",
                             "fedpoison.defense.pre": "[clip]", "fedpoison.attack.name": "sign_flip",
                             "fedpoison.attack.scale": 4.0})
    assert (cfg.defense.name, cfg.defense.pre, cfg.attack.params(ATTACKS.get("sign_flip").params).scale) == (
        "median", ["clip"], 4.0)
    with pytest.raises(ConfigError, match=r"unknown key 'defense\.nmae'"):
        experiment_config({"fedpoison.defense.nmae": "median"})


def test_fedpoison_set_adds_keys_the_app_does_not_declare() -> None:
    run_config = {"fedpoison.attack.name": "scaling", "fedpoison.attack.count": 3,
                  "fedpoison-set": "attack.name=sign_flip attack.scale=4.0 defense.pre='[clip]'"}
    cfg = experiment_config(run_config)
    assert (cfg.attack.name, cfg.attack.count, cfg.defense.pre) == ("sign_flip", 3, ["clip"])
    assert cfg.attack.params(ATTACKS.get("sign_flip").params).scale == 4.0
    with pytest.raises(ConfigError, match=r"attack\.scale"):
        experiment_config({"fedpoison.attack.name": "label_flip", "fedpoison-set": "attack.scale=2"})
    with pytest.raises(ConfigError, match="fedpoison-set: expected key=value"):
        experiment_config({"fedpoison-set": "attack.scale"})


# ---- (b) a real Flower simulation of the example -------------------------------------------------
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower"


#: The example's run config, changed to a few rounds of 3 sign-flipping nodes (x4) among 10.
OVERRIDES: dict[str, Any] = {"num-server-rounds": 4, "min-nodes": 10, "fedpoison.attack.count": 3,
                             "fedpoison-set": "attack.name=sign_flip attack.scale=4.0"}


def _simulate(strategies: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run examples/flower in Flower's simulation engine with 10 Ray-backed nodes."""
    from flwr.simulation import run_simulation

    monkeypatch.syspath_prepend(str(EXAMPLE))
    # Ray's worker processes import the example's modules too.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(EXAMPLE), *sys.path]))
    from flower_digits import client_app, server_app

    overrides = {**OVERRIDES, "strategy": strategies}
    out: dict[str, Any] = {}
    run_simulation(
        server_app=server_app.make_app(overrides, out.update),
        client_app=client_app.make_app(overrides),
        num_supernodes=10,
        backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
    )
    assert out, "the ServerApp did not finish"
    return out


@pytest.mark.flower
@pytest.mark.timeout(400)
def test_flower_simulation_fedavg_degrades_and_fedpoison_keeps_learning(monkeypatch: pytest.MonkeyPatch) -> None:
    rounds = OVERRIDES["num-server-rounds"]
    out = _simulate("fedavg,fedpoison", monkeypatch)  # both strategies, one after the other, same nodes
    fedavg, robust = out["results"]["fedavg"], out["results"]["fedpoison"]
    acc_avg = [fedavg["accuracy"][str(r)] for r in range(rounds + 1)]
    acc_rob = [robust["accuracy"][str(r)] for r in range(rounds + 1)]
    malicious = set(out["malicious_partitions"])
    assert len(malicious) == 3 and out["num_nodes"] == 10
    assert robust["defense"] == "median" and robust["audit"] == "norm_mad"

    # Under FedAvg the three sign-flipping nodes win: the model ends no better than chance.
    assert acc_avg[-1] < 0.3, acc_avg
    # With median + norm auditing the federation learns, every round...
    assert acc_rob[-1] > 0.8 and acc_rob[-1] > acc_avg[-1] + 0.5, acc_rob
    assert all(b >= a for a, b in itertools.pairwise(acc_rob)), acc_rob
    # ...and exactly the attackers are flagged and left out, in every round.
    for r in robust["rounds"]:
        assert set(r["flagged"]) == malicious, r
        assert set(r["left_out"]) >= malicious and not r["skipped"], r

    # The Flower deployment path reproduces fedpoison's own simulator on the same settings:
    # same initial model, partitions, attackers, batches, defense and auditor.
    from flower_digits.task import app_defaults

    cfg = experiment_config({**app_defaults(), **OVERRIDES})
    # (For Flower's FedAvg the auditor only records: policy "flag" changes no row.)
    arms = (("fedavg", {"defense.name": "mean", "audit.policy": "flag"}), ("fedpoison", {"defense.f": 3}))
    for arm, defense in arms:
        sim = fedpoison.run(cfg, overrides={"clients.num": 10, "rounds": rounds, "local.engine": "sequential",
                                            **defense})
        got = [out["results"][arm]["accuracy"][str(r)] for r in range(1, rounds + 1)]
        want = sim.history["test_accuracy"].tolist()
        assert got == pytest.approx(want, abs=2e-3), (arm, got, want)
