"""fedpoison.testing catches broken plug-ins, naming the contract each one breaks.

Each broken plug-in differs from a correct one in exactly one way, so a check
that passes them all, or fails the correct one, is caught here.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from fedpoison.defenses import AggregationResult, RoundContext
from fedpoison.testing import (
    ContractError,
    check_attack,
    check_model,
    check_partition,
    check_rule,
)


class WeightedMean:
    """A correct rule: the sample-weighted mean."""

    def __init__(self, params: object = None, *, f: int = 0) -> None:
        pass

    def result(self, updates: Tensor, weights: Tensor) -> AggregationResult:
        w = weights / weights.sum()
        return AggregationResult(w @ updates, w, torch.ones(len(updates), dtype=torch.bool))

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        return self.result(updates, weights)


class Mutates(WeightedMean):
    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        updates.clamp_(-1.0, 1.0)  # "clipping" in place: the caller's matrix changes
        return self.result(updates, weights)


class WrongShape(WeightedMean):
    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        res = self.result(updates, weights)
        return AggregationResult(res.aggregate[None, :], res.weights, res.selected)  # (1, d), not (d,)


class IgnoresGenerator(WeightedMean):
    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        res = self.result(updates, weights)
        noise = 0.01 * torch.randn(updates.shape[1])  # torch's global generator, not ctx.generator
        return AggregationResult(res.aggregate + noise, res.weights, res.selected)


class CrashesOnNaN(WeightedMean):
    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        if not torch.isfinite(updates).all():
            raise ValueError("cannot aggregate non-finite values")
        return self.result(updates, weights)


def test_a_correct_rule_passes() -> None:
    check_rule(WeightedMean)


@pytest.mark.parametrize(
    ("rule", "check", "words"),
    [
        (Mutates, "does_not_mutate_inputs", "changed its updates argument"),
        (WrongShape, "result_shape", "aggregate: expected float32 of shape (40,)"),
        (IgnoresGenerator, "deterministic_under_its_generator", "draw every random number from ctx.generator"),
        (CrashesOnNaN, "survives_hostile_rows", "a NaN row made it raise ValueError"),
    ],
)
def test_a_broken_rule_fails_naming_the_broken_contract(rule: type, check: str, words: str) -> None:
    with pytest.raises(ContractError) as err:
        check_rule(rule)
    assert str(err.value).startswith(f"check_rule({rule.__name__}): {check}: ")
    assert words in str(err.value)


def test_a_rule_that_ignores_its_declared_requirement_fails() -> None:
    from fedpoison.registry import Entry, Requirement

    entry = Entry("lax", WeightedMean, "", requires=Requirement("n >= 2f + 3", lambda n, f, p: n >= 2 * f + 3))
    with pytest.raises(ContractError, match="requirement_enforced: n=1, f=1 breaks 'n >= 2f \\+ 3'"):
        check_rule(entry)


def test_attack_that_uses_the_global_generator_fails() -> None:
    from fedpoison.attacks import Attack, AttackContext

    class GlobalNoise(Attack):
        def craft(self, ctx: AttackContext) -> Tensor:
            return ctx.own_updates + torch.randn(ctx.own_updates.shape)

    with pytest.raises(ContractError, match=r"craft_contract: same context and ctx\.generator, different rows"):
        check_attack(GlobalNoise)


def test_partition_that_hands_a_sample_to_two_clients_fails() -> None:
    def overlapping(labels: Tensor, num_clients: int, params: object, generator: torch.Generator) -> list[Tensor]:
        idx = torch.arange(len(labels))
        return [idx[k::num_clients] for k in range(num_clients - 1)] + [idx[:5]]

    with pytest.raises(ContractError, match="disjoint_index_sets: a sample was handed to more than one client"):
        check_partition(overlapping)


def test_model_with_batchnorm_buffers_fails() -> None:
    def bn_model(input_shape: tuple[int, ...], num_classes: int, params: object) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.BatchNorm1d(16),
                                   torch.nn.Linear(16, num_classes))

    with pytest.raises(ContractError, match="one_flat_vector: the model has buffers"):
        check_model(bn_model)
