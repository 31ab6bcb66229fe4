"""FLDetector: the L-BFGS Hessian-vector estimate and the predicted updates on quadratic losses."""

from __future__ import annotations

import torch
from torch import Tensor

from fedpoison.audit.fldetector import FLDetector, FLDetectorParams, lbfgs_hvp
from fedpoison.defenses.base import AggregationResult, RoundContext


def dense_bfgs(s: Tensor, y: Tensor) -> Tensor:
    """The BFGS matrix from B0 = sigma I (sigma from the last pair), updated pair by pair: the slow reference."""
    sigma = float(y[-1] @ s[-1]) / float(s[-1] @ s[-1])
    b = sigma * torch.eye(s.shape[1], dtype=torch.float64)
    for sk, yk in zip(s, y, strict=True):
        bs = b @ sk
        b = b - torch.outer(bs, bs) / (sk @ bs) + torch.outer(yk, yk) / (yk @ sk)
    return b


def spd(d: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    return q @ torch.diag(torch.linspace(0.5, 3.0, d, dtype=torch.float64)) @ q.T


def test_lbfgs_hvp_is_the_compact_form_of_the_bfgs_matrix() -> None:
    d, m = 7, 4
    a = spd(d, 0)
    s = torch.randn(m, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = s @ a  # secant pairs of the quadratic with Hessian A
    v = torch.randn(d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(lbfgs_hvp(s, y, v), dense_bfgs(s, y) @ v)
    torch.testing.assert_close(lbfgs_hvp(s, y, s[-1]), y[-1])  # the last secant equation holds exactly
    torch.testing.assert_close(lbfgs_hvp(-0.1 * s, -0.1 * y, v), dense_bfgs(s, y) @ v)  # scale-free in the pairs
    assert torch.equal(lbfgs_hvp(torch.zeros(1, d), torch.zeros(1, d), torch.ones(d)), torch.zeros(d))


def drive_quadratic(hessian: Tensor, rounds: int, *, attacker: bool, window: int = 3) -> tuple[list, list, FLDetector]:
    """Clients minimise f_i(w) = w^T A w / 2 - b_i^T w; each sends one gradient step, -lr (A w - b_i)."""
    d, n, lr = hessian.shape[0], 5, 0.1
    g = torch.Generator().manual_seed(3)
    targets = torch.randn(n, d, generator=g, dtype=torch.float64)
    aud = FLDetector(FLDetectorParams(fld_window=window, policy="flag"), num_clients=n)
    w = torch.zeros(d, dtype=torch.float64)
    decisions, history = [], []
    for rnd in range(rounds):
        updates = -lr * (w @ hessian - targets)
        if attacker:
            updates[4] = torch.randn(d, generator=g, dtype=torch.float64)
        ctx = RoundContext(rnd, torch.arange(n), torch.Generator().manual_seed(rnd), w.clone())
        dec = aud.screen(updates, torch.ones(n), ctx)
        agg = updates[:4].mean(0)  # the rule after the auditor keeps the honest rows (a robust rule would)
        aud.observe(ctx, dec, AggregationResult(agg, torch.full((n,), 1 / n), torch.ones(n, dtype=torch.bool)))
        decisions.append(dec)
        history.append((w.clone(), updates.clone(), agg.clone()))
        w = w + agg
    return decisions, history, aud


def test_predicted_update_equals_the_lbfgs_estimate_on_a_quadratic_loss() -> None:
    hessian = spd(6, 5)
    decisions, history, _ = drive_quadratic(hessian, 7, attacker=True, window=3)
    for t in range(2, 7):
        pairs = [(history[k][0] - history[k - 1][0], history[k][2] - history[k - 1][2]) for k in range(1, t)][-3:]
        s = torch.stack([p[0] for p in pairs])
        y = torch.stack([p[1] for p in pairs])
        w_t, upd_t, _ = history[t]
        hv = dense_bfgs(s, y) @ (w_t - history[t - 1][0])
        predicted = history[t - 1][1] + hv
        err = (upd_t - predicted).norm(dim=1)
        expected = (err / err.mean()).float()
        torch.testing.assert_close(decisions[t].signals["fld_distance"], expected, rtol=1e-4, atol=1e-5)
    assert torch.isnan(decisions[0].signals["fld_distance"]).all()  # nothing to predict from yet
    assert torch.isnan(decisions[1].signals["fld_distance"]).all()  # no secant pair yet


def test_isotropic_quadratic_predicts_honest_updates_exactly_and_flags_the_inconsistent_client() -> None:
    hessian = 2.0 * torch.eye(6, dtype=torch.float64)
    decisions, _, aud = drive_quadratic(hessian, 8, attacker=True, window=3)
    dist = decisions[4].signals["fld_distance"]
    assert float(dist[:4].abs().max()) < 1e-5  # the L-BFGS estimate is the true Hessian: exact prediction
    assert abs(float(dist[4]) - 5.0) < 1e-4  # all the error is the attacker's: n times the mean
    assert not decisions[3].flagged.any()  # windows not full yet (3 scores needed, scored from round 2)
    assert decisions[4].flagged.tolist() == [False] * 4 + [True]
    assert decisions[7].flagged.tolist() == [False] * 4 + [True]
    assert float(decisions[7].score[4]) > float(decisions[7].score[:4].max())
    assert aud.state_dict()["dist_count"].tolist() == [6] * 5


def test_honest_only_rounds_raise_no_flag() -> None:
    decisions, _, _ = drive_quadratic(spd(6, 9), 8, attacker=False, window=3)
    assert not any(bool(d.flagged.any()) for d in decisions)


def test_huge_rows_do_not_break_the_auditor() -> None:
    n, d = 6, 8
    aud = FLDetector(FLDetectorParams(fld_window=2, fld_warmup=1), num_clients=n)
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(d)
    for rnd in range(5):
        x = 0.1 * torch.randn(n, d, generator=g)
        x[2] = 1e38
        ctx = RoundContext(rnd, torch.arange(n), torch.Generator().manual_seed(rnd), w.clone())
        dec = aud.screen(x, torch.ones(n), ctx)
        assert torch.isfinite(dec.score).all() and torch.isfinite(dec.weight).all()
        keep = dec.keep
        agg = x[keep].mean(0)
        aud.observe(ctx, dec, AggregationResult(agg, keep.float() / keep.sum(), torch.ones(int(keep.sum()), dtype=torch.bool)))
        w = w + agg
    # a row that repeats 1e38 every round is *consistent*: FLDetector scores inconsistency, not size
    assert torch.isfinite(dec.signals["fld_distance"]).all()
