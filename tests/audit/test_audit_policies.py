"""Policies: pure functions by hand, and quarantine/reputation driving a real auditor round by round."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from fedpoison.audit.policies import (
    PolicyState,
    admit,
    decide,
    quarantine_length,
    sentence,
    update_reputation,
)
from fedpoison.defenses import AggregationResult, RoundContext

HONEST = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02]


def test_quarantine_length_grows_and_caps() -> None:
    k = torch.tensor([1, 2, 3, 4, 5])
    assert quarantine_length(k, base=2, growth=1.0).tolist() == [2, 2, 2, 2, 2]
    assert quarantine_length(k, base=2, growth=2.0).tolist() == [2, 4, 8, 16, 32]
    assert quarantine_length(k, base=3, growth=1.5, cap=5).tolist() == [3, 5, 5, 5, 5]  # ceil(4.5) = 5
    assert int(quarantine_length(torch.tensor([10_000]), base=2, growth=2.0)[0]) > 10**15  # no overflow


def test_admit_counts_only_rounds_the_client_was_sampled() -> None:
    left = torch.tensor([0, 2, 0, 1])
    mask, new = admit(left, torch.tensor([0, 1]))
    assert mask.tolist() == [True, False]
    assert new.tolist() == [0, 1, 0, 1]  # client 3 was not sampled: its count stands
    assert left.tolist() == [0, 2, 0, 1], "admit must not mutate its input"


def test_sentence_and_reputation_by_hand() -> None:
    state = PolicyState.fresh(4)
    left, off = sentence(state.quarantine_left, state.offences, torch.tensor([1, 2, 3]),
                         torch.tensor([True, False, True]), base=2, growth=2.0)
    assert left.tolist() == [0, 2, 0, 2] and off.tolist() == [0, 1, 0, 1]
    left, off = sentence(left, off, torch.tensor([1]), torch.tensor([True]), base=2, growth=2.0)
    assert left.tolist() == [0, 4, 0, 2] and off.tolist() == [0, 2, 0, 1]
    rep = update_reputation(torch.tensor([1.0, 0.2, 0.6, 1.0]), torch.tensor([0, 1, 2]),
                            torch.tensor([True, False, True]), recovery=0.5, penalty=0.5)
    torch.testing.assert_close(rep, torch.tensor([0.5, 0.6, 0.4, 1.0]))


def test_decide_per_policy() -> None:
    flagged = torch.tensor([False, True, False])
    keep, w = decide("flag", flagged)
    assert keep.all() and torch.equal(w, torch.ones(3))
    for policy in ("exclude", "quarantine"):
        keep, w = decide(policy, flagged)
        assert keep.tolist() == [True, False, True]
    rep = torch.tensor([0.9, 0.2, 0.5])
    keep, w = decide("reputation", flagged, reputation=rep, floor=0.5, mode="weight")
    assert keep.tolist() == [True, False, True]
    torch.testing.assert_close(w, torch.tensor([0.9, 0.0, 0.5]))
    keep, w = decide("reputation", flagged, reputation=rep, floor=0.5, mode="exclude")
    assert w.tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="needs the participants' reputation"):
        decide("reputation", flagged)
    with pytest.raises(ValueError, match="unknown policy 'ban'"):
        decide("ban", flagged)


def test_policy_state_round_trip_and_size_check() -> None:
    with pytest.raises(ValueError, match="num_clients >= 1, got 0"):
        PolicyState.fresh(0)
    s = PolicyState.fresh(3)
    s.offences[1] = 2
    back = PolicyState.from_state_dict(s.state_dict())
    assert torch.equal(back.offences, s.offences) and back.offences is not s.offences


# ---- quarantine, driving the auditor directly ---------------------------------------------
class Driver:
    """Runs an auditor the way the round loop does: admit, screen the admitted rows, observe."""

    def __init__(self, auditor: Any, rows: Callable[..., torch.Tensor]) -> None:
        self.auditor, self.rows, self.round = auditor, rows, 0

    def step(self, sampled: list[int], bad: tuple[int, ...] = ()) -> dict[str, Any]:
        ids = torch.tensor(sampled)
        admitted = self.auditor.admit(self.round, ids)
        kept_ids = ids[admitted]
        norms = [100.0 if c in bad else HONEST[c % len(HONEST)] for c in kept_ids.tolist()]
        x = self.rows(norms, seed=self.round)
        ctx = RoundContext(self.round, kept_ids, torch.Generator().manual_seed(0), torch.zeros(x.shape[1]))
        dec = self.auditor.screen(x, torch.ones(len(kept_ids)), ctx)
        sub = RoundContext(self.round, kept_ids[dec.keep], ctx.generator, ctx.global_params)
        n_kept = int(dec.keep.sum())
        res = AggregationResult(x[dec.keep].mean(0), torch.full((n_kept,), 1.0 / max(n_kept, 1)),
                                torch.ones(n_kept, dtype=torch.bool))
        self.auditor.observe(sub, dec, res)
        self.round += 1
        return {"refused": ids[~admitted].tolist(), "flagged": kept_ids[dec.flagged].tolist(),
                "dropped": kept_ids[~dec.keep].tolist()}


def test_quarantine_keeps_a_flagged_client_out_for_exactly_q_rounds(build_auditor, rows) -> None:
    aud = build_auditor("norm_mad", num_clients=6, policy="quarantine", quarantine_rounds=2,
                        quarantine_growth=2.0)
    drive = Driver(aud, rows)
    everyone = list(range(6))
    r0 = drive.step(everyone, bad=(3,))
    assert r0 == {"refused": [], "flagged": [3], "dropped": [3]}
    assert drive.step(everyone)["refused"] == [3]           # round 1: quarantined (1 of 2)
    assert drive.step(everyone)["refused"] == [3]           # round 2: quarantined (2 of 2)
    r3 = drive.step(everyone)                               # round 3: readmitted, behaves
    assert r3 == {"refused": [], "flagged": [], "dropped": []}
    # a repeat offence doubles the sentence: 4 rounds out, then back
    assert drive.step(everyone, bad=(3,))["flagged"] == [3]
    assert [drive.step(everyone)["refused"] for _ in range(4)] == [[3]] * 4
    assert drive.step(everyone)["refused"] == []
    assert aud.state_dict()["offences"].tolist() == [0, 0, 0, 2, 0, 0]


def test_quarantine_counts_the_rounds_the_client_would_have_joined(build_auditor, rows) -> None:
    aud = build_auditor("norm_mad", num_clients=6, policy="quarantine", quarantine_rounds=2)
    drive = Driver(aud, rows)
    assert drive.step(list(range(6)), bad=(3,))["flagged"] == [3]
    assert drive.step([0, 1, 2])["refused"] == []           # 3 not sampled: does not count
    assert drive.step([3, 4, 5])["refused"] == [3]          # 1 of 2
    assert drive.step([0, 1, 5])["refused"] == []
    assert drive.step([2, 3, 4])["refused"] == [3]          # 2 of 2
    assert drive.step([3, 4, 5])["refused"] == []           # readmitted


def test_exclude_and_flag_policies_never_refuse(build_auditor, rows) -> None:
    for policy, dropped in (("exclude", [3]), ("flag", [])):
        drive = Driver(build_auditor("norm_mad", num_clients=6, policy=policy), rows)
        assert drive.step(list(range(6)), bad=(3,)) == {"refused": [], "flagged": [3], "dropped": dropped}
        assert drive.step(list(range(6)))["refused"] == []


def test_reputation_excludes_then_forgives(build_auditor, rows) -> None:
    aud = build_auditor("norm_mad", num_clients=6, policy="reputation", reputation_penalty=0.25,
                        reputation_recovery=0.5, reputation_floor=0.5, reputation_mode="weight")
    drive = Driver(aud, rows)
    assert drive.step(list(range(6)), bad=(3,))["dropped"] == [3]     # r = 0.25 < 0.5
    assert float(aud.state_dict()["reputation"][3]) == pytest.approx(0.25)
    assert drive.step(list(range(6)))["dropped"] == []                # r = 1 - 0.75 * 0.5 = 0.625
    assert float(aud.state_dict()["reputation"][3]) == pytest.approx(0.625)
    ids = torch.arange(6)
    x = rows([HONEST[c] for c in range(6)], seed=9)
    dec = aud.screen(x, torch.ones(6), RoundContext(2, ids, torch.Generator(), torch.zeros(8)))
    assert float(dec.weight[3]) == pytest.approx(1 - 0.375 * 0.5)     # weighted by the recovered reputation
    assert float(dec.weight[0]) == 1.0
    assert "reputation" in dec.signals


def test_rule_flags_feed_the_quarantine(build_auditor, rows) -> None:
    aud = build_auditor("norm_mad", num_clients=6, policy="quarantine", quarantine_rounds=1, rule_flags=True)
    ids = torch.arange(6)
    x = rows(HONEST)
    ctx = RoundContext(0, ids, torch.Generator(), torch.zeros(8))
    dec = aud.screen(x, torch.ones(6), ctx)
    assert not dec.flagged.any()
    selected = torch.tensor([True, True, False, True, True, True])     # the rule dropped client 2
    aud.observe(ctx, dec, AggregationResult(x.mean(0), selected.float() / 5, selected))
    assert aud.admit(1, ids).tolist() == [True, True, False, True, True, True]
    assert aud.admit(2, ids).all()
