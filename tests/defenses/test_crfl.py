"""CRFL: the global model's norm clip and noise, the certified radius formula, and certification end to end."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm

import fedpoison
from fedpoison.core.draws import gaussian_like
from fedpoison.defenses import RoundContext
from fedpoison.defenses.crfl import (
    CRFL,
    CRFLParams,
    CRFLThreat,
    certified_radius,
    certify_votes,
    clip_model_norm,
    clip_threshold,
    contraction,
    hoeffding_bounds,
    smoothed_backdoor,
    smoothed_votes,
)
from fedpoison.errors import ConfigError


def _ctx(theta: torch.Tensor, seed: int = 3) -> RoundContext:
    return RoundContext(0, torch.arange(3), torch.Generator().manual_seed(seed), theta, (), None)


def test_new_global_model_is_clipped_to_rho_without_noise() -> None:
    theta = torch.tensor([3.0, 0.0, 0.0, 0.0])
    updates = torch.tensor([[0.0, 4.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0]])
    rule = CRFL(CRFLParams(crfl_clip=1.0, crfl_clip_start=None, crfl_sigma=0.0))
    res = rule(updates, torch.ones(3), _ctx(theta))
    new = theta + res.aggregate
    # theta + mean = (3, 4, 0, 0), norm 5, scaled to norm 1: (0.6, 0.8, 0, 0)
    torch.testing.assert_close(new, torch.tensor([0.6, 0.8, 0.0, 0.0]))
    assert res.info["crfl_model_norm"] == pytest.approx(5.0) and res.info["crfl_clipped"] == 1.0
    # under the bound nothing is clipped: plain FedAvg
    res = CRFL(CRFLParams(crfl_clip=10.0, crfl_clip_start=None, crfl_sigma=0.0))(updates, torch.ones(3), _ctx(theta))
    torch.testing.assert_close(theta + res.aggregate, torch.tensor([3.0, 4.0, 0.0, 0.0]))
    assert res.info["crfl_clipped"] == 0.0


def test_noise_is_sigma_times_the_generators_gaussian_after_the_clip() -> None:
    theta = torch.tensor([3.0, 0.0, 0.0, 0.0])
    updates = torch.tensor([[0.0, 4.0, 0.0, 0.0]] * 3)
    res = CRFL(CRFLParams(crfl_clip=1.0, crfl_clip_start=None, crfl_sigma=0.5))(updates, torch.ones(3), _ctx(theta, seed=11))
    expected_noise = gaussian_like((4,), generator=torch.Generator().manual_seed(11), like=theta, std=0.5)
    torch.testing.assert_close(theta + res.aggregate, torch.tensor([0.6, 0.8, 0.0, 0.0]) + expected_noise)


def test_clip_model_norm_handles_huge_entries() -> None:
    v = torch.full((10,), 1e38)
    out = clip_model_norm(v, 2.0)
    assert torch.isfinite(out).all() and float(out.double().norm()) == pytest.approx(2.0, rel=1e-5)
    assert clip_model_norm(torch.zeros(3), 1.0).tolist() == [0.0, 0.0, 0.0]


def test_certified_radius_matches_the_formula_on_a_known_case() -> None:
    # p_A = 0.9, p_B = 0.1: (sqrt 0.9 - sqrt 0.1)^2 = 0.9 + 0.1 - 2 * 0.3 = 0.4, so -ln(1 - 0.4) = ln(5/3)
    t = CRFLThreat(attackers=2, weight_sq_sum=0.02, scale=3.0, lr=0.1, local_steps=5.0, poison_ratio=0.5,
                   lipschitz=2.0, rounds_after_attack=4)
    sigma, clip = 0.5, 0.5  # rho / sigma = 1: each of the 4 rounds contracts by 2 Phi(1) - 1
    contr = (2 * norm.cdf(1.0) - 1) ** 4
    assert contraction(clip, sigma, 4) == pytest.approx(contr)
    denom = 2 * 2 * 5.0**2 * 2.0**2 * 0.02 * 3.0**2 * 0.1**2 * 0.5**2 * contr
    expected = math.sqrt(math.log(5 / 3) * sigma**2 / denom)
    r = certified_radius(np.array([0.9, 0.4, 0.5]), np.array([0.1, 0.6, 0.5]), sigma=sigma, clip=clip, threat=t)
    assert r[0] == pytest.approx(expected, rel=1e-12)
    assert r[1] == 0.0 and r[2] == 0.0  # p_A <= p_B: not certified
    # the radius grows with sigma and shrinks with the attack's strength
    assert certified_radius(np.array([0.9]), np.array([0.1]), sigma=2 * sigma, clip=2 * clip, threat=t)[0] == \
        pytest.approx(2 * expected)


def test_hoeffding_bounds_and_votes_certify() -> None:
    lo, hi = hoeffding_bounds(np.array([0.8]), np.array([0.2]), 200, 0.01)
    eps = math.sqrt(math.log(100) / 400)
    assert lo[0] == pytest.approx(0.8 - eps) and hi[0] == pytest.approx(0.2 + eps)
    votes = torch.tensor([[180, 20, 0], [0, 100, 100], [0, 10, 190]])
    t = CRFLThreat(attackers=1, weight_sq_sum=0.01, scale=1.0, lr=1.0, local_steps=1.0, poison_ratio=1.0,
                   lipschitz=1.0, rounds_after_attack=1)
    cert = certify_votes(votes, torch.tensor([0, 1, 1]), samples=200, alpha=0.01, sigma=0.01, clip=1e9, threat=t)
    assert cert.prediction.tolist() == [0, 1, 2] and cert.correct.tolist() == [True, True, False]
    assert cert.p_a[0] == pytest.approx(0.9 - eps) and cert.p_b[0] == pytest.approx(0.1 + eps)
    pa, pb = 0.9 - eps, 0.1 + eps
    want = math.sqrt(-math.log(1 - (math.sqrt(pa) - math.sqrt(pb)) ** 2) * 1e-4 / 0.02)
    assert cert.radius[0] == pytest.approx(want)
    assert cert.radius[1] == 0.0  # a tie is never certified
    # certified accuracy: input 0 only (1 is a tie, 2 is wrong)
    assert cert.accuracy_at(0.0) == pytest.approx(1 / 3) and cert.accuracy_at(want + 1e-9) == 0.0


def test_smoothed_votes_count_the_noisy_models_predictions() -> None:
    # a "model" that predicts class 1 where its single parameter is positive, else class 0
    x = torch.zeros(4)

    def predict(p: torch.Tensor) -> torch.Tensor:
        return (p[0] > 0).long().expand(len(x))

    votes = smoothed_votes(predict, torch.tensor([0.0]), sigma=1.0, samples=400,
                           generator=torch.Generator().manual_seed(0), num_classes=2)
    assert votes.shape == (4, 2) and (votes.sum(dim=1) == 400).all()
    assert 150 < int(votes[0, 1]) < 250  # about half the copies are positive
    far = smoothed_votes(predict, torch.tensor([50.0]), sigma=1.0, samples=50,
                         generator=torch.Generator().manual_seed(0), num_classes=2)
    assert far[:, 1].tolist() == [50] * 4


def test_smoothed_backdoor_of_a_linear_model_matches_the_gaussian_vote() -> None:
    # a linear two-class model: class 1 (the target) where x . theta > 0. A noisy copy theta + sigma eps gives
    # x . theta + N(0, sigma^2 |x|^2), so each copy votes for the target with probability Phi(margin), margin =
    # x . theta / (sigma |x|); the majority is the target exactly where the margin is positive
    sigma, samples = 0.1, 4000
    theta = torch.tensor([1.0, 0.0])
    margins = [3.0, 0.5, 0.25, -1.0]
    x = torch.tensor([[m * sigma, math.sqrt(1 - (m * sigma) ** 2)] for m in margins])  # |x| = 1, x . theta = m sigma

    def predict(p: torch.Tensor) -> torch.Tensor:
        return (x @ p > 0).long()

    votes = smoothed_votes(predict, theta, sigma=sigma, samples=samples, generator=torch.Generator().manual_seed(1),
                           num_classes=2)
    share = votes[:, 1].double() / samples
    assert share.tolist() == pytest.approx(norm.cdf(margins).tolist(), abs=0.03)
    b = smoothed_backdoor(votes, target=1)
    assert b.prediction.tolist() == [1, 1, 1, 0]
    assert b.attack_success_rate == 0.75
    assert b.copy_attack_success_rate == pytest.approx(float(np.mean(norm.cdf(margins))), abs=0.015)
    # no votes, no rate
    assert math.isnan(smoothed_backdoor(votes[:0], target=1).attack_success_rate)


def test_clean_and_backdoored_inputs_share_the_noisy_copies() -> None:
    # certification votes once over [clean; backdoored] inputs: the clean rows' votes are those of a vote over
    # the clean inputs alone with the same generator (the backdoor rows use up no draws of their own)
    gen = torch.Generator().manual_seed(0)
    x_clean = torch.randn(6, 3, generator=gen)
    x_both = torch.cat([x_clean, torch.randn(4, 3, generator=gen)])
    theta = torch.randn(3, generator=gen)

    def votes_on(x: torch.Tensor) -> torch.Tensor:
        return smoothed_votes(lambda p: (x @ p > 0).long(), theta, sigma=1.0, samples=50,
                              generator=torch.Generator().manual_seed(7), num_classes=2)

    assert torch.equal(votes_on(x_both)[:6], votes_on(x_clean))


def test_crfl_needs_server_lr_one() -> None:
    with pytest.raises(ConfigError, match=r"server\.lr"):
        fedpoison.load_config(overrides=["defense.name=crfl", "server.lr=0.5"])


def test_crfl_run_on_digits_certifies_and_writes_the_table(tmp_path: Path) -> None:
    r = fedpoison.run(overrides=["rounds=4", "clients.num=8", "dataset.limit=400", "attack.name=backdoor",
                                 "attack.fraction=0.25", "defense.name=crfl", "defense.crfl_clip=5",
                                 "defense.crfl_samples=40", "defense.crfl_certify_inputs=100"])
    s = r.summary
    assert s["crfl_certified_inputs"] == 100 and s["crfl_samples"] == 40
    assert 0.0 <= s["crfl_certified_accuracy"] <= s["crfl_smoothed_accuracy"] <= 1.0
    assert s["crfl_certified_accuracy_at_0.01"] <= s["crfl_certified_accuracy"]
    # every round's new model was clipped to rho = 5 before the noise
    assert (r.history["defense_crfl_model_norm"] > 0).all()
    final_norm = float(r.final_params.norm())
    assert final_norm <= 5.0 + 0.01 * math.sqrt(r.final_params.numel()) * 1.2
    out = r.save(tmp_path / "run")
    table = pd.read_csv(out / "certification.csv")
    assert len(table) == 100 and set(table.columns) >= {"label", "prediction", "p_a", "p_b", "radius"}
    assert ((table["radius"] > 0) == (table["p_a"] > table["p_b"])).all()
    assert s["crfl_certified_accuracy"] == pytest.approx(((table["radius"] > 0) & table["correct"]).mean())
    # the smoothed classifier on the backdoored versions of the certified inputs not of the target class (0)
    chosen = table["label"] != 0
    assert s["crfl_backdoor_inputs"] == int(chosen.sum()) and (table.loc[~chosen, "backdoor_prediction"] == -1).all()
    assert s["crfl_smoothed_attack_success_rate"] == pytest.approx((table.loc[chosen, "backdoor_prediction"] == 0).mean())
    assert s["crfl_base_attack_success_rate"] == pytest.approx(
        (table.loc[chosen, "backdoor_base_prediction"] == 0).mean())
    assert 0.0 <= s["crfl_copy_attack_success_rate"] <= 1.0 and 0.0 <= s["crfl_base_accuracy"] <= 1.0


def test_report_of_a_grid_shows_certified_accuracy(tmp_path: Path) -> None:
    from fedpoison.experiments.executor import InlineExecutor
    from fedpoison.experiments.grid import expand_grid
    from fedpoison.experiments.runner import run_grid
    from fedpoison.experiments.store import ResultStore
    from fedpoison.results import load
    from fedpoison.results.report import write_report

    grid = expand_grid({"name": "crfl", "base": {"rounds": 2, "clients": {"num": 5},
                                                  "dataset": {"name": "digits", "limit": 200}},
                        "axes": {"defense": [{"name": "mean"},
                                             {"name": "crfl", "crfl_samples": 20, "crfl_certify_inputs": 50}]}})
    out = tmp_path / "runs"
    assert run_grid(grid, ResultStore(out), InlineExecutor(warm_up=False)).done == 2
    report = write_report(out, tmp_path / "report", results=load(out))
    tables = {t.name: t for t in report.tables}
    frame = tables["crfl_certified_accuracy"].frame
    assert frame.loc["none", "mean"] == "–" and frame.loc["none", "crfl"][0].isdigit()
    assert "certified acc." in tables["summary"].frame.columns


def test_clip_threshold_grows_along_the_authors_line_and_stops_at_the_cap() -> None:
    # the authors' MNIST schedule: rho_t = min(2 + 0.1 t) over rounds t = 1, 2, ... (fedpoison's round 0 is t = 1)
    assert [clip_threshold(r, start=2.0, growth=0.1, cap=15.0) for r in (0, 1, 9)] == pytest.approx([2.1, 2.2, 3.0])
    assert clip_threshold(500, start=2.0, growth=0.1, cap=15.0) == 15.0
    assert clip_threshold(7, start=None, growth=0.1, cap=15.0) == 15.0  # no line: the constant rho
    assert CRFLParams().crfl_clip_start == 2.0 and CRFLParams().crfl_clip_growth == 0.1


def test_round_t_clips_the_new_model_to_its_own_threshold() -> None:
    # theta + mean = (3, 4), norm 5. Line rho_t = 1 + 1 * (t + 1): round 0 clips to 2, round 2 to 4, round 5 not at all
    theta = torch.tensor([3.0, 0.0])
    updates = torch.tensor([[0.0, 4.0]] * 3)
    rule = CRFL(CRFLParams(crfl_clip=100.0, crfl_clip_start=1.0, crfl_clip_growth=1.0, crfl_sigma=0.0))
    for rnd, rho in ((0, 2.0), (2, 4.0)):
        ctx = RoundContext(rnd, torch.arange(3), torch.Generator().manual_seed(0), theta, (), None)
        res = rule(updates, torch.ones(3), ctx)
        torch.testing.assert_close(theta + res.aggregate, torch.tensor([3.0, 4.0]) * rho / 5.0)
        assert res.info["crfl_clip"] == rho and res.info["crfl_clipped"] == 1.0
    ctx = RoundContext(5, torch.arange(3), torch.Generator().manual_seed(0), theta, (), None)
    res = rule(updates, torch.ones(3), ctx)
    torch.testing.assert_close(theta + res.aggregate, torch.tensor([3.0, 4.0]))
    assert res.info["crfl_clip"] == 7.0 and res.info["crfl_clipped"] == 0.0


def test_contraction_over_a_growing_schedule_is_the_product_of_its_rounds() -> None:
    sigma = 1.0
    clips = [0.5, 1.0, 2.0]
    want = np.prod([2 * norm.cdf(c / sigma) - 1 for c in clips])
    assert contraction(clips, sigma, 99) == pytest.approx(want)
    t = CRFLThreat(attackers=1, weight_sq_sum=0.04, scale=1.0, lr=1.0, local_steps=1.0, poison_ratio=1.0,
                   lipschitz=1.0, rounds_after_attack=3)
    r = certified_radius(np.array([0.9]), np.array([0.1]), sigma=sigma, clip=clips, threat=t)
    assert r[0] == pytest.approx(math.sqrt(math.log(5 / 3) * sigma**2 / (2 * 0.04 * want)))


def test_a_model_far_above_the_clip_line_gets_one_warning() -> None:
    """The MNIST line (rho_0 = 2) on a model of norm 8 shrinks it every round: say so, once."""
    from fedpoison.errors import FedPoisonWarning

    rule = CRFL(CRFLParams(crfl_sigma=0.0))
    updates = torch.zeros(3, 16)
    big = _ctx(torch.full((16,), 2.0))  # norm 8 against rho_0 = 2.1
    with pytest.warns(FedPoisonWarning, match=r"defense.crfl_clip_start: the global model's norm 8 is 3.8 times"):
        rule(updates, torch.ones(3), big)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rule(updates, torch.ones(3), big)  # only once per run
        CRFL(CRFLParams(crfl_sigma=0.0))(updates, torch.ones(3), _ctx(torch.full((16,), 0.5)))  # norm 2: none
