"""The batched (vmap) engine against the sequential engine, its slow and obvious reference."""

from __future__ import annotations

import copy
import os
from functools import cache

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedpoison
from fedpoison.data import Dataset, load_dataset
from fedpoison.models import ParamSpec, build_model
from fedpoison.plugins import load_config
from fedpoison.simulation.federation import make_engine
from fedpoison.training import ClientJob, LocalPlan, SequentialEngine
from fedpoison.training.batched import (
    BatchedEngine,
    assign_lanes,
    choose_engine,
    client_loss,
    default_workers,
    sgd_step_,
    stack_batches,
)

# Float32 kernels sum in different orders in the two engines; several SGD steps
# amplify the last-bit differences a little.
TOL = {"rtol": 1e-4, "atol": 1e-5}


@cache
def digits() -> Dataset:
    return load_dataset(load_config(None).dataset, 0)


def _model(name: str, shape: tuple[int, ...] = (1, 8, 8)) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, shape, 10, load_config(None).model)


def _jobs(data: Dataset, sizes: list[int], seed: int = 0) -> list[ClientJob]:
    """Clients with disjoint random index sets of the given sizes, each with its own generator."""
    perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))
    jobs, start = [], 0
    for i, n in enumerate(sizes):
        idx = perm[start : start + n]
        start += n
        jobs.append(ClientJob(i, data.x_train, data.y_train, idx, torch.Generator().manual_seed(1000 * seed + i)))
    return jobs


def _both(model_name: str, plan: LocalPlan, sizes: list[int], data: Dataset | None = None,
          shape: tuple[int, ...] = (1, 8, 8), **kw: int | bool) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    data = data or digits()
    model = _model(model_name, shape)
    spec = ParamSpec.of(model)
    g0 = spec.flatten(model)
    seq = SequentialEngine(copy.deepcopy(model), spec, plan).train(g0, _jobs(data, sizes))
    bat = BatchedEngine(model, spec, plan, **kw).train(g0, _jobs(data, sizes))
    return seq, bat


PLANS = {
    "momentum+wd, 2 epochs": LocalPlan(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "plain SGD, partial last batch": LocalPlan(epochs=1, batch_size=24, lr=0.1),
    "fixed steps past an epoch": LocalPlan(steps=9, batch_size=32, lr=0.05, momentum=0.5),
    "FedSGD": LocalPlan(steps=1, batch_size=10_000, lr=0.1),
}


#: The engine's strategies: vmap in one lane, vmap in two lanes (threads), per-client loops in two lanes.
STRATEGIES = {
    "vmap": {"vectorize": True, "workers": 1},
    "vmap-2-lanes": {"vectorize": True, "workers": 2},
    "loop-2-lanes": {"vectorize": False, "workers": 2},
}


@pytest.mark.parametrize("strategy", STRATEGIES.values(), ids=STRATEGIES.keys())
@pytest.mark.parametrize("model_name", ["mlp", "cnn8"])
@pytest.mark.parametrize("plan", PLANS.values(), ids=PLANS.keys())
def test_matches_sequential_on_digits(model_name: str, plan: LocalPlan, strategy: dict[str, int | bool]) -> None:
    # unequal sizes: different step counts, different last-batch sizes, one client smaller than a batch
    sizes = [37, 64, 50, 5, 64, 100]
    (u_seq, l_seq), (u_bat, l_bat) = _both(model_name, plan, sizes, **strategy)
    if not strategy["vectorize"]:
        # lanes run the sequential engine's own code on one thread each, as this test does
        assert torch.equal(u_bat, u_seq) and torch.equal(l_bat, l_seq)
    assert u_bat.shape == (len(sizes), ParamSpec.of(_model(model_name)).dim)
    assert float(u_seq.abs().max()) > 1e-3  # the clients really trained
    torch.testing.assert_close(u_bat, u_seq, **TOL)
    torch.testing.assert_close(l_bat, l_seq, **TOL)


def test_matches_sequential_cnn28_equal_sizes() -> None:
    """The 28x28 CNN on random images, equal sizes (the IID case: no padding at all)."""
    g = torch.Generator().manual_seed(3)
    data = Dataset("noise", torch.rand(200, 1, 28, 28, generator=g), torch.randint(10, (200,), generator=g),
                   torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long), 10)
    plan = LocalPlan(epochs=1, batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-4)
    (u_seq, l_seq), (u_bat, l_bat) = _both("cnn28", plan, [40, 40, 40], data=data, shape=(1, 28, 28),
                                           vectorize=True)
    torch.testing.assert_close(u_bat, u_seq, **TOL)
    torch.testing.assert_close(l_bat, l_seq, **TOL)


def test_chunks_give_the_same_result() -> None:
    plan = PLANS["momentum+wd, 2 epochs"]
    sizes = [37, 64, 50, 5, 64, 100, 20]
    (_, _), (u_all, l_all) = _both("mlp", plan, sizes, workers=1)
    (_, _), (u_chunk, l_chunk) = _both("mlp", plan, sizes, max_clients=2, workers=1)
    torch.testing.assert_close(u_chunk, u_all, **TOL)
    torch.testing.assert_close(l_chunk, l_all, **TOL)


def test_clients_with_their_own_tensors() -> None:
    """Attacking clients train on poisoned copies: jobs may point into different tensors."""
    data = digits()
    model = _model("mlp")
    spec = ParamSpec.of(model)
    g0 = spec.flatten(model)
    plan = LocalPlan(epochs=2, batch_size=16, lr=0.05, momentum=0.9)

    def jobs() -> list[ClientJob]:
        out = _jobs(data, [40, 30, 50, 25])
        for k in (1, 3):  # label-flipped private copies
            own = out[k].index
            x, y = data.x_train[own].clone(), 9 - data.y_train[own]
            out[k] = ClientJob(k, x, y, torch.arange(len(y)), torch.Generator().manual_seed(77 + k))
        return out

    u_seq, l_seq = SequentialEngine(copy.deepcopy(model), spec, plan).train(g0, jobs())
    u_bat, l_bat = BatchedEngine(model, spec, plan).train(g0, jobs())
    torch.testing.assert_close(u_bat, u_seq, **TOL)
    torch.testing.assert_close(l_bat, l_seq, **TOL)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=6),
    batch_size=st.integers(1, 40),
    epochs=st.integers(1, 2),
    steps=st.none() | st.integers(1, 5),
    momentum=st.sampled_from([0.0, 0.9]),
    weight_decay=st.sampled_from([0.0, 1e-2]),
)
def test_matches_sequential_on_drawn_shapes(sizes: list[int], batch_size: int, epochs: int, steps: int | None,
                                            momentum: float, weight_decay: float) -> None:
    plan = LocalPlan(epochs=epochs, steps=steps, batch_size=batch_size, lr=0.05, momentum=momentum,
                     weight_decay=weight_decay)
    (u_seq, l_seq), (u_bat, l_bat) = _both("logreg", plan, sizes)
    torch.testing.assert_close(u_bat, u_seq, **TOL)
    torch.testing.assert_close(l_bat, l_seq, **TOL)


def test_fedsgd_update_is_minus_lr_times_the_gradient() -> None:
    """FedSGD: one full-batch step, so the update is -lr * the client's gradient at the global model."""
    data = digits()
    model = _model("mlp")
    spec = ParamSpec.of(model)
    g0 = spec.flatten(model)
    plan = LocalPlan(steps=1, batch_size=10_000, lr=0.5)
    jobs = _jobs(data, [30, 70, 11])
    updates, _ = BatchedEngine(model, spec, plan).train(g0, jobs)
    for row, job in zip(updates, jobs, strict=True):
        ref = copy.deepcopy(model)
        torch.nn.functional.cross_entropy(ref(data.x_train[job.index]), data.y_train[job.index]).backward()
        grad = torch.cat([p.grad.reshape(-1) for p in ref.parameters()])
        torch.testing.assert_close(row, -0.5 * grad, **TOL)


def test_deterministic_and_inputs_untouched() -> None:
    data = digits()
    model = _model("mlp")
    spec = ParamSpec.of(model)
    g0 = spec.flatten(model)
    before = g0.clone()
    x_before = data.x_train.clone()
    engine = BatchedEngine(model, spec, PLANS["momentum+wd, 2 epochs"])
    a = engine.train(g0, _jobs(data, [20, 33]))
    b = engine.train(g0, _jobs(data, [20, 33]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(g0, before) and torch.equal(data.x_train, x_before)
    assert torch.equal(spec.flatten(model), before)  # the module's own parameters are never written


def test_no_jobs() -> None:
    model = _model("mlp")
    spec = ParamSpec.of(model)
    u, lo = BatchedEngine(model, spec, LocalPlan()).train(spec.flatten(model), [])
    assert u.shape == (0, spec.dim) and lo.shape == (0,)


def test_bad_settings_are_rejected() -> None:
    model = _model("mlp")
    with pytest.raises(ValueError, match="max_clients: expected a positive integer or None, got 0"):
        BatchedEngine(model, ParamSpec.of(model), LocalPlan(), max_clients=0)
    with pytest.raises(ValueError, match="workers: expected a positive integer or None, got -1"):
        BatchedEngine(model, ParamSpec.of(model), LocalPlan(), workers=-1)


def test_lanes_are_balanced_and_deterministic() -> None:
    assert assign_lanes([5, 1, 4, 2], 2) == [[0, 1], [2, 3]]
    assert assign_lanes([3, 3, 3], 2) == [[0, 2], [1]]
    assert assign_lanes([1.0] * 4, 1) == [[0, 1, 2, 3]]
    assert assign_lanes([], 2) == [[], []]


def test_lanes_restore_the_thread_count() -> None:
    torch.set_num_threads(2)
    try:
        (_, _), _ = _both("cnn8", PLANS["plain SGD, partial last batch"], [10, 10], workers=2, vectorize=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@settings(max_examples=20, deadline=None)
@given(
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    weight_decay=st.sampled_from([0.0, 1e-3, 0.1]),
    lr=st.floats(1e-3, 1.0),
    steps=st.integers(1, 4),
)
def test_sgd_step_is_torch_sgd(momentum: float, weight_decay: float, lr: float, steps: int) -> None:
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(3, 5, generator=g)
    grads = [torch.randn(3, 5, generator=g) for _ in range(steps)]
    ref = p0.clone().requires_grad_(True)
    opt = torch.optim.SGD([ref], lr=lr, momentum=momentum, weight_decay=weight_decay)
    ours, buf = p0.clone(), None
    for gr in grads:
        ref.grad = gr.clone()
        opt.step()
        buf = sgd_step_(ours, gr.clone(), buf, lr=lr, momentum=momentum, weight_decay=weight_decay)
    assert torch.equal(ours, ref.detach())  # same ops in the same order: bit for bit


def test_client_loss_is_cross_entropy_over_real_samples() -> None:
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(7, 10, generator=g), torch.randint(10, (7,), generator=g)
    torch.testing.assert_close(client_loss(logits, y), torch.nn.functional.cross_entropy(logits, y))
    mask = torch.tensor([1.0, 1, 1, 1, 0, 0, 0])
    torch.testing.assert_close(client_loss(logits, y, mask), torch.nn.functional.cross_entropy(logits[:4], y[:4]))


def test_stack_batches_pads_and_masks() -> None:
    x = torch.arange(10.0)[:, None]
    y = torch.arange(10)
    xb, yb, mask = stack_batches([(x, y)], [0, 0], [torch.tensor([3, 4, 5]), torch.tensor([7])])
    assert xb.shape == (2, 3, 1)
    assert yb.tolist() == [[3, 4, 5], [7, 0, 0]]
    assert mask is not None and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    _, _, none = stack_batches([(x, y)], [0, 0], [torch.tensor([1, 2]), torch.tensor([8, 9])])
    assert none is None
    x2, y2 = x + 100, y + 100
    xb, yb, _ = stack_batches([(x, y), (x2, y2)], [1, 0], [torch.tensor([1, 2]), torch.tensor([8, 9])])
    assert yb.tolist() == [[101, 102], [8, 9]]


def test_choose_engine_rule() -> None:
    mlp, cnn = _model("mlp"), _model("cnn28", (1, 28, 28))
    plan = LocalPlan()
    assert choose_engine(mlp, ParamSpec.of(mlp), plan, "cpu") == "batched"
    assert choose_engine(cnn, ParamSpec.of(cnn), plan, "cuda") == "batched"
    # one usable thread (this module's fixture): convolutions train one by one
    assert choose_engine(cnn, ParamSpec.of(cnn), plan, "cpu") == "sequential"
    if default_workers("cpu") >= 2 or len(os.sched_getaffinity(0)) >= 2:
        torch.set_num_threads(2)
        try:
            assert choose_engine(cnn, ParamSpec.of(cnn), plan, "cpu") == "batched"
        finally:
            torch.set_num_threads(1)


def test_make_engine_builds_the_batched_engine() -> None:
    cfg = load_config(None, ["local.engine=batched"])
    model = _model("mlp")
    engine = make_engine(cfg, model, ParamSpec.of(model), LocalPlan(), torch.device("cpu"))
    assert isinstance(engine, BatchedEngine)


def test_round_loop_with_the_batched_engine() -> None:
    """A short run end to end: the batched engine gives the sequential engine's history, to rounding."""
    common = ["rounds=3", "clients.num=8", "partition.name=dirichlet", "partition.alpha=0.5",
              "local.epochs=1", "local.momentum=0.9", "local.weight_decay=0.001"]
    bat = fedpoison.run(overrides=[*common, "local.engine=batched"])
    seq = fedpoison.run(overrides=[*common, "local.engine=sequential"])
    assert bat.config.local.engine == "batched"
    for col in ["test_accuracy", "train_loss", "update_norm_mean"]:
        torch.testing.assert_close(torch.tensor(bat.history[col].to_numpy()),
                                   torch.tensor(seq.history[col].to_numpy()), rtol=1e-3, atol=1e-3)
    assert bat.summary["final_accuracy"] > 0.5
