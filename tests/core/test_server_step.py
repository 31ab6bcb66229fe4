"""The server's step (simulation/server.py), shared by the round loop and the Flower strategy."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import fedpoison
from fedpoison.audit.base import AuditDecision
from fedpoison.defenses import AggregationResult, RoundContext, build_defense
from fedpoison.errors import AggregationError
from fedpoison.simulation.server import audit_and_defend


class RecordingAuditor:
    """Keeps every row but the ones listed, and records what it observed."""

    def __init__(self, drop: tuple[int, ...] = ()) -> None:
        self.drop = drop
        self.observed: list[AggregationResult] = []
        self.screened: list[torch.Tensor] = []

    def screen(self, updates: torch.Tensor, weights: torch.Tensor, ctx: RoundContext) -> AuditDecision:
        self.screened.append(ctx.client_ids.clone())
        keep = ~torch.isin(ctx.client_ids, torch.tensor(self.drop, dtype=ctx.client_ids.dtype))
        n = len(updates)
        return AuditDecision(keep, torch.ones(n), torch.zeros(n), ~keep, {})

    def observe(self, ctx: RoundContext, decision: AuditDecision, result: AggregationResult) -> None:
        self.observed.append(result)


def _ctx(n: int, d: int) -> RoundContext:
    return RoundContext(0, torch.arange(n), torch.Generator().manual_seed(0), torch.zeros(d), (), None)


def _defense(name: str, **params: Any) -> Any:
    cfg = fedpoison.load_config(overrides=[f"defense.name={name}", *(f"defense.{k}={v}" for k, v in params.items())])
    return build_defense(cfg.defense, f=params.get("f", 0))


def test_nonfinite_rows_are_dropped_before_the_auditor_sees_them_and_the_rest_aggregated() -> None:
    x = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    x[2, 1] = float("nan")
    auditor = RecordingAuditor(drop=(5,))
    out = audit_and_defend(x, torch.ones(6), _ctx(6, 4), _defense("mean"), auditor)
    assert out.nonfinite == 1 and out.error == ""
    assert auditor.screened[0].tolist() == [0, 1, 3, 4, 5], "the NaN row never reaches the auditor"
    assert out.keep.tolist() == [True, True, False, True, True, False]
    torch.testing.assert_close(out.aggregate, x[[0, 1, 3, 4]].mean(0))
    assert out.weights[[2, 5]].tolist() == [0.0, 0.0] and len(auditor.observed) == 1


def test_zero_policy_returns_the_zeroed_matrix() -> None:
    x = torch.ones(4, 3)
    x[1, 0] = float("inf")
    out = audit_and_defend(x, torch.ones(4), _ctx(4, 3), _defense("mean"), nonfinite="zero")
    assert out.updates[1].tolist() == [0.0, 0.0, 0.0] and torch.isinf(x[1, 0]), "the input is not modified"
    torch.testing.assert_close(out.aggregate, torch.full((3,), 0.75))


def test_a_violated_requirement_skips_the_round_without_observing_or_raises_on_request() -> None:
    x = torch.randn(5, 3)
    defense = _defense("median", f=3)  # the median assuming f = 3 needs at least 7 rows
    auditor = RecordingAuditor()
    out = audit_and_defend(x, torch.ones(5), _ctx(5, 3), defense, auditor)
    assert "median" in out.error and torch.equal(out.aggregate, torch.zeros(3))
    assert not out.selected.any() and auditor.observed == [], "a skipped round tells the auditor nothing"
    with pytest.raises(AggregationError, match="median"):
        audit_and_defend(x, torch.ones(5), _ctx(5, 3), defense, auditor, on_violation="raise")


def test_no_row_left_is_a_skipped_round() -> None:
    x = torch.full((3, 2), float("nan"))
    auditor = RecordingAuditor()
    out = audit_and_defend(x, torch.ones(3), _ctx(3, 2), _defense("mean"), auditor)
    assert out.error == "no rows left to aggregate" and out.nonfinite == 3
    assert auditor.screened == [] and auditor.observed == []


def test_round_context_subset_keeps_the_round_and_filters_the_ids() -> None:
    ctx = _ctx(4, 3)
    assert ctx.subset(torch.ones(4, dtype=torch.bool)) is ctx
    sub = ctx.subset(torch.tensor([True, False, True, False]))
    assert sub.client_ids.tolist() == [0, 2]
    assert sub.generator is ctx.generator and sub.global_params is ctx.global_params and sub.round == ctx.round
    assert ctx.client_ids.tolist() == [0, 1, 2, 3]


def test_build_auditor_is_the_one_factory() -> None:
    from fedpoison.audit import build_auditor
    from fedpoison.config import AuditSection

    assert build_auditor(AuditSection(name="none"), num_clients=5) is None
    aud = build_auditor(AuditSection(name="norm_mad", threshold=2.5), num_clients=5)
    assert aud is not None and aud.params.threshold == 2.5 and aud.num_clients == 5  # type: ignore[attr-defined]


def test_server_step_adds_seeded_gaussian_noise_to_the_aggregate() -> None:
    from fedpoison.core.draws import gaussian_like
    from fedpoison.simulation.server import server_step

    params, agg = torch.zeros(5), torch.ones(5)
    out = server_step(params, agg, lr=0.5, noise_std=0.1, generator=torch.Generator().manual_seed(4))
    noise = gaussian_like((5,), generator=torch.Generator().manual_seed(4), like=agg, std=0.1)
    torch.testing.assert_close(out, 0.5 * (agg + noise))
    assert server_step(params, agg, lr=0.5).tolist() == [0.5] * 5  # no noise: no draw, no generator needed
    with pytest.raises(ValueError, match="generator"):
        server_step(params, agg, noise_std=0.1)


def test_server_noise_in_a_run_is_reproducible_and_recorded() -> None:
    base = ["rounds=2", "clients.num=5", "dataset.limit=200"]
    quiet = fedpoison.run(overrides=base)
    noisy = fedpoison.run(overrides=[*base, "server.noise_std=0.05"])
    again = fedpoison.run(overrides=[*base, "server.noise_std=0.05"])
    torch.testing.assert_close(noisy.final_params, again.final_params, rtol=0, atol=0)
    assert not torch.allclose(noisy.final_params, quiet.final_params)
    assert noisy.history["server_noise_std"].tolist() == [0.05, 0.05]
    assert "server_noise_std" not in quiet.history
