"""Attacks that run their own local training: neurotoxin, pgd_backdoor, cerberus.

Each mechanism is checked on one malicious client's real training on digits
(the MLP), built with :func:`fedpoison.testing.make_malicious_training`, and
each attack once through the round loop.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

import fedpoison
from fedpoison.attacks.backdoor import stamp
from fedpoison.attacks.cerberus import mean_cosine
from fedpoison.attacks.neurotoxin import clean_gradient, neurotoxin_mask
from fedpoison.attacks.pgd_backdoor import tail_mask
from fedpoison.config import DatasetSection
from fedpoison.core.rows import bottom_k_mask, project_to_ball, row_norms
from fedpoison.data import load_dataset
from fedpoison.errors import ConfigError
from fedpoison.models import ParamSpec, build_model
from fedpoison.plugins import load_config
from fedpoison.testing import build_attack, make_malicious_training
from fedpoison.training.local import LocalPlan


@pytest.fixture(scope="module")
def digits():
    data = load_dataset(DatasetSection(name="digits"))
    return data.x_train[:120], data.y_train[:120]


def mlp(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("mlp", (1, 8, 8), 10)


PLAN = LocalPlan(2, None, 16, 0.1, 0.9, 5e-4)  # momentum and weight decay: the mask must still hold


# ---- shared maths ---------------------------------------------------------------------------
def test_bottom_k_mask_drops_exactly_the_largest_magnitudes() -> None:
    v = torch.tensor([0.5, -3.0, 0.1, 2.0, -0.2, 1.0, 0.0, -0.7, 0.3, 4.0])
    mask = bottom_k_mask(v, 0.3)  # ceil(0.3 * 10) = 3 dropped: |4|, |-3|, |2|
    assert (~mask).nonzero().flatten().tolist() == [1, 3, 9]
    assert bottom_k_mask(v, 0.0).all()
    assert not bottom_k_mask(v, 1.0).any()


def test_project_to_ball_is_identity_inside_and_lands_on_the_sphere_outside() -> None:
    c = torch.tensor([1.0, 1.0])
    inside = torch.tensor([1.3, 0.8])
    assert torch.equal(project_to_ball(inside, c, 1.0), inside)
    out = project_to_ball(torch.tensor([4.0, 5.0]), c, 2.5)  # direction (3, 4) / 5
    torch.testing.assert_close(out, torch.tensor([1.0 + 1.5, 1.0 + 2.0]))


# ---- neurotoxin -----------------------------------------------------------------------------
def test_neurotoxin_update_is_zero_outside_the_bottom_k_of_the_last_global_update(digits) -> None:
    x, y = digits
    model = mlp()
    spec = ParamSpec.of(model)
    g = spec.flatten(model)
    previous = g - 0.01 * torch.randn(spec.dim, generator=torch.Generator().manual_seed(3))
    attack = build_attack("neurotoxin", top_k_percent=10.0)
    job = make_malicious_training(attack, x, y, model=model, plan=PLAN, previous_params=previous)
    update, loss = attack.train(job)
    mask = neurotoxin_mask(g, previous, 10.0)
    # the mask is the bottom 90% of |G_t - G_{t-1}|: every dropped coordinate beats every kept one
    delta = (g - previous).abs()
    assert int((~mask).sum()) == -(-spec.dim // 10)
    assert float(delta[~mask].min()) >= float(delta[mask].max())
    assert torch.equal(update[~mask], torch.zeros(int((~mask).sum())))
    assert float(update[mask].abs().max()) > 0  # it did train, inside the mask
    # plain backdoor training on the same data moves the masked coordinates
    free = build_attack("neurotoxin", top_k_percent=0.0)
    unmasked, _ = free.train(make_malicious_training(free, x, y, model=model, plan=PLAN, previous_params=previous))
    assert float(unmasked[~mask].abs().max()) > 0
    assert torch.isfinite(torch.tensor(loss))


def test_clean_gradient_is_the_cross_entropy_gradient_on_a_hand_built_linear_model() -> None:
    # W = 0: softmax is (1/2, 1/2), so dL/dW = mean_i (p - onehot(y_i)) x_i^T
    #   x_1 = (1, 0, 0), y_1 = 0 -> [[-1/2, 0, 0], [1/2, 0, 0]];  x_2 = (0, 2, 0), y_2 = 0 -> [[0, -1, 0], [0, 1, 0]]
    model = torch.nn.Linear(3, 2, bias=False)
    spec = ParamSpec.of(model)
    x, y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), torch.tensor([0, 0])
    grad = clean_gradient(model, spec, torch.zeros(6), x, y)
    torch.testing.assert_close(grad, torch.tensor([-0.25, -0.5, 0.0, 0.25, 0.5, 0.0]))
    # the top third by magnitude (coordinates 1 and 4) is what the mask drops
    assert bottom_k_mask(grad, 1 / 3).tolist() == [True, False, True, True, False, True]


def test_neurotoxin_clean_gradient_mask_comes_from_the_attackers_clean_data_not_the_last_update(digits) -> None:
    x, y = digits
    model = mlp()
    spec = ParamSpec.of(model)
    g = spec.flatten(model)
    previous = g - 0.01 * torch.randn(spec.dim, generator=torch.Generator().manual_seed(3))
    attack = build_attack("neurotoxin", top_k_percent=10.0, mask_source="clean_gradient")
    job = make_malicious_training(attack, x, y, model=model, plan=PLAN, previous_params=previous)
    update, _ = attack.train(job)
    mask = bottom_k_mask(clean_gradient(mlp(), spec, g, x, y), 0.10)
    assert int((~mask).sum()) == -(-spec.dim // 10)
    assert torch.equal(update[~mask], torch.zeros(int((~mask).sum())))
    assert float(update[mask].abs().max()) > 0
    # a different set than the last global update's top 10%: the source matters
    assert not torch.equal(mask, neurotoxin_mask(g, previous, 10.0))
    # the attacker's clean data decides it: other samples give another mask
    assert not torch.equal(mask, bottom_k_mask(clean_gradient(mlp(), spec, g, x[60:], y[60:]), 0.10))


def test_neurotoxin_without_a_mask_is_the_plain_backdoor_on_the_same_poisoned_data(digits) -> None:
    # the lifespan comparison's premise: same poisoned data, trigger and SGD; only the mask differs
    x, y = digits
    model = mlp()
    g = ParamSpec.of(model).flatten(model)
    previous = g - 0.01 * torch.randn(g.numel(), generator=torch.Generator().manual_seed(5))
    keys = {"trigger": "patch", "trigger_size": 3, "poison_mode": "append"}
    plain = build_attack("backdoor", **keys)
    bd = make_malicious_training(plain, x, y, model=model, plan=PLAN, previous_params=previous)
    free = build_attack("neurotoxin", top_k_percent=0.0, **keys)
    nt = make_malicious_training(free, x, y, model=model, plan=PLAN, previous_params=previous)
    assert torch.equal(bd.x, nt.x) and torch.equal(bd.y, nt.y)
    torch.testing.assert_close(free.train(nt)[0], bd.train(bd.x, bd.y, None)[0])


def test_neurotoxin_keeps_every_coordinate_without_a_previous_global_model() -> None:
    g = torch.arange(6.0)
    assert neurotoxin_mask(g, None, 50.0).all()


def test_neurotoxin_norm_bound_projects_and_keeps_the_mask(digits) -> None:
    x, y = digits
    model = mlp()
    g = ParamSpec.of(model).flatten(model)
    previous = g - 0.01 * torch.randn(g.numel(), generator=torch.Generator().manual_seed(4))
    attack = build_attack("neurotoxin", top_k_percent=20.0, norm_bound=0.05)
    update, _ = attack.train(make_malicious_training(attack, x, y, model=model, plan=PLAN, previous_params=previous))
    assert float(row_norms(update[None])[0]) <= 0.05 * (1 + 1e-5)
    assert torch.equal(update[~neurotoxin_mask(g, previous, 20.0)], torch.zeros_like(update[~neurotoxin_mask(g, previous, 20.0)]))


# ---- pgd_backdoor ---------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_pgd_update_norm_is_at_most_the_bound(digits, scale: float) -> None:
    x, y = digits
    model = mlp()
    free = build_attack("pgd_backdoor", radius=1e6)
    unconstrained, _ = free.train(make_malicious_training(free, x, y, model=model, plan=PLAN))
    bound = 0.25 * float(row_norms(unconstrained[None])[0])  # the projection must act
    attack = build_attack("pgd_backdoor", radius=bound, scale=scale, project_every=3)
    update, _ = attack.train(make_malicious_training(attack, x, y, model=model, plan=PLAN))
    norm = float(row_norms(update[None])[0])
    assert norm <= bound * (1 + 1e-5)
    assert norm >= 0.5 * bound  # a backdoor that wants to move sits near the sphere


def test_pgd_default_radius_is_the_clean_update_norm(digits) -> None:
    x, y = digits
    model = mlp()
    attack = build_attack("pgd_backdoor")
    job = make_malicious_training(attack, x, y, model=model, plan=PLAN)
    clean, _ = job.train(job.clean_x, job.clean_y, None)
    update, _ = attack.train(job)
    assert float(row_norms(update[None])[0]) <= float(row_norms(clean[None])[0]) * (1 + 1e-5)


def test_edge_case_tail_is_the_class_samples_farthest_from_their_mean() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [6.0, 6.0], [-4.0, 0.0], [9.0, 9.0]])
    y = torch.tensor([2, 2, 2, 2, 2, 5])
    # class 2's mean is (0.6, 1.4): the farthest are (6, 6), then (-4, 0)
    assert tail_mask(x, y, 2, 0.4).tolist() == [False, False, False, True, True, False]
    assert not tail_mask(x, y, 7, 0.5).any()


def test_edge_case_mode_relabels_only_the_tail_and_measures_on_the_test_tail(digits) -> None:
    x, y = digits
    attack = build_attack("pgd_backdoor", data_mode="edge_case", source_class=3, target_class=8,
                          edge_fraction=0.25, poison_mode="replace")
    xp, yp = attack.poison(x, y, client_id=0, slot=0, generator=torch.Generator())
    tail = tail_mask(x, y, 3, 0.25)
    assert torch.equal(xp, x)
    assert torch.equal(yp[tail], torch.full((int(tail.sum()),), 8))
    assert torch.equal(yp[~tail], y[~tail])
    inputs, chosen = attack.backdoor_inputs(x, y)
    assert torch.equal(chosen, tail) and torch.equal(inputs, x[tail])
    with pytest.raises(ConfigError, match=r"attack\.source_class: expected a class other than"):
        load_config(None, ["attack.name=pgd_backdoor", "attack.data_mode=edge_case", "attack.source_class=0",
                           "attack.target_class=0"])


# ---- cerberus -------------------------------------------------------------------------------
def test_cerberus_trigger_tuning_lowers_the_global_models_backdoor_loss(digits) -> None:
    x, y = digits
    model = mlp()
    attack = build_attack("cerberus", trigger="patch", trigger_epochs=3, trigger_lr=1.0, trigger_bound=0.8)
    start = attack.trigger
    attack.train(make_malicious_training(attack, x, y, model=model, plan=PLAN))
    tuned = attack.trigger
    keep = y != 0
    model.eval()
    with torch.no_grad():
        before = F.cross_entropy(model(stamp(x[keep], start)), torch.zeros(int(keep.sum()), dtype=torch.int64))
        after = F.cross_entropy(model(stamp(x[keep], tuned)), torch.zeros(int(keep.sum()), dtype=torch.int64))
    assert float(after) < float(before)
    moved = tuned.pattern - start.pattern
    assert float(torch.linalg.vector_norm(moved)) <= 0.8 + 1e-5 and float(moved[~start.mask].abs().max()) == 0.0
    assert float(tuned.pattern.min()) >= 0.0 and float(tuned.pattern.max()) <= 1.0


def _linear_two_class() -> torch.nn.Module:
    # logits (x0, 0): for target 0 at x0 = 0, dCE/dx0 = softmax_0 - 1 = -0.5, and x1 has no effect
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    return model


def test_cerberus_trigger_step_is_a_gradient_step_projected_onto_the_l2_ball_and_into_the_box() -> None:
    from fedpoison.attacks.backdoor import Trigger
    from fedpoison.attacks.cerberus import tune_trigger

    start = Trigger(torch.tensor([True, False]), torch.tensor([0.0, 0.0]), 1.0)
    x = torch.tensor([[0.9, 0.7]])
    one = dict(target=0, epochs=1, batch_size=8)
    # inside the ball: p0 = 0 - 0.1 * (-0.5) = 0.05; the unmasked entry stays 0
    small = tune_trigger(_linear_two_class(), x, start, lr=0.1, bound=10.0, **one)
    torch.testing.assert_close(small.pattern, torch.tensor([0.05, 0.0]))
    # step 1.0 -> 0.5, projected onto the ball of radius 0.3 around the start
    torch.testing.assert_close(tune_trigger(_linear_two_class(), x, start, lr=1.0, bound=0.3, **one).pattern,
                               torch.tensor([0.3, 0.0]))
    # step 4.0 -> 2.0, inside the ball of radius 10, then clipped to the box
    torch.testing.assert_close(tune_trigger(_linear_two_class(), x, start, lr=4.0, bound=10.0, **one).pattern,
                               torch.tensor([1.0, 0.0]))
    # one step per batch: two batches of one sample, the second from 0.05 (softmax_0 = e^.05 / (e^.05 + 1))
    two = tune_trigger(_linear_two_class(), torch.cat([x, x]), start, lr=0.1, bound=10.0, target=0, epochs=1,
                       batch_size=1)
    s0 = math.exp(0.05) / (math.exp(0.05) + 1.0)
    torch.testing.assert_close(two.pattern, torch.tensor([0.05 + 0.1 * (1.0 - s0), 0.0]))
    # starting from a given pattern instead of the start (the ball stays centred on the start)
    cont = tune_trigger(_linear_two_class(), x, start, pattern=torch.tensor([0.25, 0.0]), lr=1.0, bound=0.3, **one)
    torch.testing.assert_close(cont.pattern, torch.tensor([0.3, 0.0]))


def test_cerberus_tuning_continues_from_the_last_rounds_trigger(digits) -> None:
    from fedpoison.attacks.cerberus import tune_trigger

    x, y = digits
    model = mlp()
    attack = build_attack("cerberus", trigger="patch", trigger_lr=1.0, trigger_bound=2.0)
    attack.train(make_malicious_training(attack, x, y, model=model, plan=PLAN, round=1))
    first = attack.trigger
    attack.train(make_malicious_training(attack, x, y, model=model, plan=PLAN, round=2))
    keep = y != 0
    expected = tune_trigger(model, x[keep], attack.start, pattern=first.pattern, target=0, epochs=1, lr=1.0,
                            bound=2.0, batch_size=PLAN.batch_size)
    torch.testing.assert_close(attack.trigger.pattern, expected.pattern)
    assert not torch.equal(first.pattern, attack.start.pattern)


def test_cerberus_bias_term_is_the_l2_distance_with_a_unit_gradient() -> None:
    from fedpoison.attacks.cerberus import model_distance

    w = torch.tensor([3.0, 4.0], requires_grad=True)
    d = model_distance(w, torch.zeros(2))
    d.backward()
    assert float(d.detach()) == 5.0
    assert w.grad is not None
    torch.testing.assert_close(w.grad, torch.tensor([0.6, 0.8]))
    same = torch.tensor([1.0, 1.0], requires_grad=True)
    model_distance(same, torch.ones(2)).backward()
    assert same.grad is not None and torch.equal(same.grad, torch.zeros(2))


def _two_colluders(x, y, **params):
    model = mlp()
    attack = build_attack("cerberus", trigger_epochs=0, **params)
    first, _ = attack.train(make_malicious_training(attack, x[:60], y[:60], model=model, plan=PLAN, client_id=1))
    job = make_malicious_training(attack, x[60:], y[60:], model=model, plan=PLAN, client_id=2, slot=1)
    second, _ = attack.train(job)
    clean, _ = job.train(job.clean_x, job.clean_y, None)
    return first, second, clean


def test_cerberus_diversity_term_lowers_the_colluders_cosine(digits) -> None:
    x, y = digits
    a1, a2, _ = _two_colluders(x, y, alpha=0.0, beta=0.0)
    b1, b2, _ = _two_colluders(x, y, alpha=0.0, beta=2.0)
    torch.testing.assert_close(a1, b1)  # the first attacker has no colluder yet
    cos = lambda u, v: float(F.cosine_similarity(u[None], v[None]))  # noqa: E731
    assert cos(b2, b1) < cos(a2, a1) - 0.05
    assert float(mean_cosine(b2, [b1])) < float(mean_cosine(a2, [a1]))


def test_cerberus_bias_term_keeps_the_model_near_its_poison_free_model(digits) -> None:
    x, y = digits
    _, free, clean = _two_colluders(x, y, alpha=0.0, beta=0.0)
    _, tied, clean2 = _two_colluders(x, y, alpha=5.0, beta=0.0)
    torch.testing.assert_close(clean, clean2)
    assert float(row_norms((tied - clean)[None])[0]) < 0.8 * float(row_norms((free - clean)[None])[0])


def test_cerberus_state_dict_carries_the_tuned_trigger(digits) -> None:
    x, y = digits
    a = build_attack("cerberus")
    a.train(make_malicious_training(a, x, y, model=mlp()))
    b = build_attack("cerberus")
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.backdoor(x), b.backdoor(x))


# ---- through the round loop -----------------------------------------------------------------
TINY = ["dataset.name=digits", "model.name=mlp", "clients.num=8", "clients.fraction=1.0", "rounds=2",
        "local.epochs=1", "local.batch_size=16", "defense.name=mean", "attack.fraction=0.25",
        "attack.always_participate=true"]


@pytest.mark.parametrize("name", ["neurotoxin", "neurotoxin clean_gradient", "pgd_backdoor", "cerberus"])
def test_self_training_attacks_run_end_to_end_and_record_asr(name: str) -> None:
    attack, *source = name.split()
    result = fedpoison.run(overrides=[*TINY, f"attack.name={attack}", *(f"attack.mask_source={s}" for s in source)])
    asr = result.history["attack_success_rate"].dropna()
    assert len(asr) == 2 and asr.between(0.0, 1.0).all()
    attacked = result.clients[result.clients["attacked"]]
    assert len(attacked) == 4 and (attacked["norm"] > 0).all()


def test_edge_case_asr_is_measured_on_the_test_tail() -> None:
    result = fedpoison.run(overrides=[*TINY, "attack.name=pgd_backdoor", "attack.data_mode=edge_case",
                                      "attack.source_class=3", "attack.target_class=8"])
    assert result.history["attack_success_rate"].notna().all()


def test_neurotoxin_resumed_from_a_checkpoint_matches_the_uninterrupted_run(tmp_path) -> None:
    """The last global update (the mask's source) is checkpointed with the model."""
    from fedpoison.simulation.checkpoint import run_with_checkpoints

    cfg = load_config(None, [*TINY, "rounds=4", "attack.name=neurotoxin", "attack.top_k_percent=30"])
    whole = fedpoison.run(cfg)

    class Crash(Exception):
        pass

    def crash_after_round_2(record) -> None:
        if record["round"] == 2:
            raise Crash

    with pytest.raises(Crash):
        run_with_checkpoints(cfg, out=tmp_path, every=1, progress=crash_after_round_2)
    resumed = run_with_checkpoints(cfg, out=tmp_path, every=1, resume=True)
    assert torch.equal(resumed.final_params, whole.final_params)


@pytest.mark.parametrize("name", ["neurotoxin", "pgd_backdoor", "cerberus"])
def test_attacks_that_train_themselves_are_refused_inside_a_flower_client(name: str) -> None:
    pytest.importorskip("flwr")
    from fedpoison.integrations.flower.malicious import check_deployable

    with pytest.raises(ConfigError, match=f"attack.name: '{name}' is simulation-only: it runs its clients' local"):
        check_deployable({"name": name})
