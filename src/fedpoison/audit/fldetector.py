"""``fldetector``: flag clients whose updates are inconsistent with their history (Zhang et al., KDD 2022).

Reference: Zaixi Zhang, Xiaoyu Cao, Jinyuan Jia and Neil Zhenqiang Gong,
"FLDetector: Defending Federated Learning Against Model Poisoning Attacks via
Detecting Malicious Clients", KDD 2022, Algorithm 1.

The server keeps the last :math:`N` (``audit.fld_window``) differences of the
global model, :math:`\\Delta w_k = w^{k} - w^{k-1}`, and of the global update
(the aggregate), :math:`\\Delta g_k = \\bar g^{k} - \\bar g^{k-1}`. In round
:math:`t` it predicts each client's update from the one it sent in round
:math:`t-1`, by the Cauchy mean value theorem with an L-BFGS estimate
:math:`\\hat H^t` of the Hessian built from those pairs
(:func:`lbfgs_hvp`, the compact form of Byrd, Nocedal & Schnabel 1994):

.. math:: \\hat g_i^t = g_i^{t-1} + \\hat H^t (w^t - w^{t-1})

scores the prediction error, normalised over the round's scored clients,
:math:`d_i^t = \\|\\hat g_i^t - g_i^t\\| / \\operatorname{mean}_j \\|\\hat g_j^t - g_j^t\\|`,
and averages each client's last :math:`N` values into its suspicion score
:math:`s_i^t`. When the gap statistic
(:func:`fedpoison.core.clustering.gap_statistic`) finds more than one cluster
among the participants' scores, k-means with :math:`k = 2` splits them and the
cluster with the larger mean score is flagged. What happens to flagged rows is
the policy's (``audit.policy``; the paper removes flagged clients for good:
``quarantine`` with a long ``quarantine_rounds``).

Variant and deviations, with why:

- fedpoison's rows are updates (new minus old parameters), the paper's are
  gradients; the two differ by the factor :math:`-\\eta`, which the L-BFGS
  estimate absorbs (its secant pairs are built from the same rows), so the
  prediction is the same.
- The paper normalises :math:`d^t` by its L1 norm over all clients, which
  assumes that every client takes part in every round; fedpoison divides by
  the mean over the clients it could score this round (the same up to the
  constant factor :math:`n` under full participation, and comparable across
  rounds under partial participation). A client is scored only in rounds that
  follow one it took part in; its window holds its last :math:`N` scores.
- Flags are raised from the round in which a participant's window is full
  (``audit.fld_warmup`` scores, :math:`N` by default, as the paper starts
  detecting after :math:`N` rounds), and only participants with a full window
  enter the clustering. The paper stops training and restarts after the
  first detection; fedpoison keeps flagging every round and leaves the
  sanction to the policy.
- Gap statistic as in the authors' code: scores min-max scaled to [0, 1],
  20 uniform reference sets, :math:`k \\le 10`; its draws come from a
  generator keyed by the round's defense seed, so the auditor leaves the
  defense's own draws untouched.

The decision's ``score`` is :math:`s_i^t` (0 for a client not yet scored);
the audit log also records ``fld_distance`` (this round's :math:`d_i^t`, NaN
when the client could not be predicted). State: each client's last update
(an ``N_clients x d`` buffer), its round, the score windows, the last global
model and aggregate, and the :math:`2N` difference vectors.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.audit.base import AuditDecision
from fedpoison.audit.params import PolicyParams
from fedpoison.audit.policies import PolicyAdmission, PolicyState
from fedpoison.audit.registry import AUDITORS
from fedpoison.core.clustering import gap_statistic, kmeans
from fedpoison.core.rows import finite_rows
from fedpoison.defenses.base import AggregationResult, RoundContext


def lbfgs_hvp(s: Tensor, y: Tensor, v: Tensor) -> Tensor:
    """L-BFGS estimate :math:`\\hat H v` of a Hessian-vector product from ``m`` secant pairs.

    ``s`` and ``y`` are ``(m, d)`` (oldest first), ``v`` is ``(d,)``. With
    :math:`S, Y` the pairs as columns, :math:`S^\\top Y = L + D + U` (strictly
    lower, diagonal, strictly upper) and :math:`\\sigma = y_m^\\top s_m / s_m^\\top s_m`,

    .. math::

       \\hat H v = \\sigma v - [\\sigma S \\;\\; Y]
       \\begin{bmatrix} \\sigma S^\\top S & L \\\\ L^\\top & -D \\end{bmatrix}^{-1}
       \\begin{bmatrix} \\sigma S^\\top v \\\\ Y^\\top v \\end{bmatrix}

    the compact representation of the BFGS matrix started from
    :math:`\\sigma I` (Byrd, Nocedal & Schnabel 1994, Theorem 2.3). The small
    ``2m x 2m`` system is solved in float64 by pseudo-inverse; where the pairs
    carry no curvature (:math:`s_m = 0`) or the result is not finite, the
    estimate is zero.
    """
    m = s.shape[0]
    if m == 0:
        return torch.zeros_like(v)
    s64, y64, v64 = s.to(torch.float64), y.to(torch.float64), v.to(torch.float64)
    ss_last = float(s64[-1] @ s64[-1])
    if not ss_last > 0:
        return torch.zeros_like(v)
    sigma = float(y64[-1] @ s64[-1]) / ss_last
    sty = s64 @ y64.T
    sts = s64 @ s64.T
    lower = torch.tril(sty, diagonal=-1)
    mid = torch.cat([torch.cat([sigma * sts, lower], dim=1),
                     torch.cat([lower.T, -torch.diag(torch.diagonal(sty))], dim=1)], dim=0)
    rhs = torch.cat([sigma * (s64 @ v64), y64 @ v64])
    coef = torch.linalg.pinv(mid) @ rhs
    out = sigma * v64 - (sigma * coef[:m]) @ s64 - coef[m:] @ y64
    if not bool(torch.isfinite(out).all()):
        return torch.zeros_like(v)
    return out.to(v.dtype)


def prediction_errors(updates: Tensor, previous: Tensor, hvp: Tensor, *, chunk: int = 32) -> Tensor:
    """``(n,)`` float64 :math:`\\|g_i - (g_i^{prev} + \\hat H v)\\|`, ``chunk`` rows at a time (bounded memory)."""
    out = []
    for start in range(0, updates.shape[0], chunk):
        a = updates[start:start + chunk].to(torch.float64)
        b = previous[start:start + chunk].to(torch.float64) + hvp.to(torch.float64)
        out.append(torch.linalg.vector_norm(a - b, dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def flag_high_cluster(scores: Tensor, *, generator: torch.Generator, k_max: int = 10, refs: int = 20) -> Tensor:
    """``(m,)`` bool: the high-score cluster of k-means (k = 2) if the gap statistic finds k >= 2, else none."""
    m = scores.shape[0]
    x = scores.to(torch.float64)[:, None]
    if m < 3 or gap_statistic(x, generator=generator, k_max=k_max, refs=refs) < 2:
        return torch.zeros(m, dtype=torch.bool)
    labels = kmeans(x, 2, generator=generator)[0]
    means = torch.stack([x[labels == c, 0].mean() if bool((labels == c).any()) else x.new_tensor(float("-inf"))
                         for c in (0, 1)])
    return labels == int(torch.argmax(means))


class FLDetectorParams(PolicyParams):
    """Parameters of ``fldetector`` (``threshold`` is not used: the gap statistic decides)."""

    #: N: rounds of history, both for the L-BFGS pairs and for the averaged suspicion score.
    fld_window: int = Field(10, ge=1)
    #: Scores a participant needs before it can be flagged; by default the window N.
    fld_warmup: int | None = Field(None, ge=1)
    #: Uniform reference sets of the gap statistic.
    fld_refs: int = Field(20, ge=1)
    #: Largest number of clusters the gap statistic considers.
    fld_k_max: int = Field(10, ge=2)


@AUDITORS.register(
    "fldetector",
    tags=("stateful", "per_client_state", "needs_history"),
    description="FLDetector: predict each update from the client's last one with an L-BFGS Hessian estimate; "
    "flag the high cluster of the windowed prediction errors when the gap statistic finds k >= 2.",
    params=FLDetectorParams,
    reference="Zhang, Cao, Jia & Gong 2022, FLDetector: Defending Federated Learning Against Model Poisoning "
    "Attacks via Detecting Malicious Clients (KDD).",
    variant="window N = 10 for pairs and scores; errors normalised by their mean over scored clients; gap "
    "statistic (20 references, k <= 10) then 2-means; flags every round from a full window; policy decides",
    signals="fld_distance",
)
class FLDetector(PolicyAdmission):
    """FLDetector's consistency check as an auditor (see the module docstring)."""

    def __init__(self, params: FLDetectorParams, *, num_clients: int) -> None:
        if num_clients < 1:
            raise ValueError(f"num_clients: expected at least 1, got {num_clients}")
        self.params = params
        self.num_clients = num_clients
        self.window = params.fld_window
        self.warmup = params.fld_warmup if params.fld_warmup is not None else params.fld_window
        self.policy = PolicyState.fresh(num_clients)
        self.last_update: Tensor | None = None  # (N, d), each client's last sent update
        self.last_round = torch.full((num_clients,), -1, dtype=torch.int64)
        self.dist_hist = torch.zeros(num_clients, params.fld_window, dtype=torch.float64)
        self.dist_count = torch.zeros(num_clients, dtype=torch.int64)
        self.prev_global: Tensor | None = None
        self.prev_aggregate: Tensor | None = None
        self.pairs_s: list[Tensor] = []
        self.pairs_y: list[Tensor] = []
        self._screened: Tensor | None = None  # this round's global model, for observe

    # ---- hooks -------------------------------------------------------------------
    def screen(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AuditDecision:
        """Predict, score and cluster this round's rows; record each row as its client's last update."""
        n, d = updates.shape
        dev = updates.device
        ids = ctx.client_ids.cpu().long()
        if ids.shape[0] != n:
            raise ValueError(f"screen: expected {n} client ids for {n} rows, got {ids.shape[0]}")
        self._check_ids(ids)
        w_now = ctx.global_params.detach()
        if self.last_update is None or self.last_update.shape[1] != d:
            self.last_update = torch.zeros(self.num_clients, d, dtype=updates.dtype, device=dev)
        distance = torch.full((n,), float("nan"), dtype=torch.float64)
        predictable = (self.last_round[ids] == ctx.round - 1) & (ctx.round > 0)
        if self.pairs_s and self.prev_global is not None and bool(predictable.any()):
            v = (w_now.to(dev) - self.prev_global.to(dev)).to(updates.dtype)
            hvp = lbfgs_hvp(torch.stack(self.pairs_s).to(dev), torch.stack(self.pairs_y).to(dev), v)
            rows = torch.nonzero(predictable)[:, 0]
            err = prediction_errors(updates[rows.to(dev)], self.last_update[ids[rows].to(dev)], hvp).cpu()
            err = torch.nan_to_num(err, nan=float("inf"))
            finite = torch.isfinite(err)
            scale = err[finite].mean() if bool(finite.any()) else torch.tensor(0.0, dtype=torch.float64)
            norm_err = torch.where(finite, err / scale if bool(scale > 0) else torch.zeros_like(err),
                                   torch.full_like(err, float(rows.numel())))
            distance[rows] = norm_err
            cid = ids[rows]
            self.dist_hist[cid] = torch.cat([self.dist_hist[cid, 1:], norm_err[:, None]], dim=1)
            self.dist_count[cid] += 1
        self.last_update[ids.to(dev)] = updates.detach()
        self.last_round[ids] = ctx.round
        self._screened = w_now.clone()

        counts = self.dist_count[ids].clamp_max(self.window)
        recent = torch.arange(self.window)[None, :] >= (self.window - counts)[:, None]  # newest entries last
        window_sum = (self.dist_hist[ids] * recent).sum(dim=1)
        score = torch.where(counts > 0, window_sum / counts.clamp_min(1), torch.zeros_like(window_sum))
        eligible = self.dist_count[ids] >= self.warmup
        flagged = torch.zeros(n, dtype=torch.bool)
        if int(eligible.sum()) >= max(3, self.params.min_rows):
            g = torch.Generator().manual_seed((int(ctx.generator.initial_seed()) * 1_000_003 + 0xF1D) % (2**63))
            flagged[eligible] = flag_high_cluster(score[eligible], generator=g, k_max=self.params.fld_k_max,
                                                  refs=self.params.fld_refs)
        flagged |= ~finite_rows(updates).cpu()  # a NaN or Inf row (defense.nonfinite: keep) is always flagged
        keep, weight, _ = self.apply_policy(ids, flagged)
        return AuditDecision(keep=keep.to(dev), weight=weight.to(dev), score=score.to(dev, torch.float32),
                             flagged=flagged.to(dev), signals={"fld_distance": distance.to(dev, torch.float32)})

    def observe(self, ctx: RoundContext, decision: AuditDecision, result: AggregationResult) -> None:
        """Record this round's secant pair: the global model's and the aggregate's differences."""
        agg = result.aggregate.detach()
        w_now = self._screened if self._screened is not None else ctx.global_params.detach()
        if not bool(torch.isfinite(agg).all()):
            return
        if self.prev_global is not None and self.prev_aggregate is not None \
                and self.prev_global.shape == w_now.shape and self.prev_aggregate.shape == agg.shape:
            s = (w_now - self.prev_global.to(w_now.device)).to(agg.dtype)
            y = agg - self.prev_aggregate.to(agg.device)
            if bool(torch.isfinite(s).all()) and bool(torch.isfinite(y).all()):
                self.pairs_s.append(s.clone())
                self.pairs_y.append(y.clone())
                del self.pairs_s[:-self.window], self.pairs_y[:-self.window]
        self.prev_global = w_now.clone()
        self.prev_aggregate = agg.clone()

    def state_dict(self) -> dict[str, Any]:
        """Everything the next rounds read (plain tensors)."""
        return {
            **self.policy.state_dict(),
            "last_update": None if self.last_update is None else self.last_update.clone(),
            "last_round": self.last_round.clone(),
            "dist_hist": self.dist_hist.clone(),
            "dist_count": self.dist_count.clone(),
            "prev_global": None if self.prev_global is None else self.prev_global.clone(),
            "prev_aggregate": None if self.prev_aggregate is None else self.prev_aggregate.clone(),
            "pairs_s": [t.clone() for t in self.pairs_s],
            "pairs_y": [t.clone() for t in self.pairs_y],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the federation size must match."""
        self._load_policy(state)

        def opt(key: str) -> Tensor | None:
            value = state.get(key)
            return None if value is None else torch.as_tensor(value).clone()

        self.last_update = opt("last_update")
        self.last_round = torch.as_tensor(state["last_round"]).to(torch.int64).clone()
        self.dist_hist = torch.as_tensor(state["dist_hist"]).to(torch.float64).clone()
        self.dist_count = torch.as_tensor(state["dist_count"]).to(torch.int64).clone()
        self.prev_global = opt("prev_global")
        self.prev_aggregate = opt("prev_aggregate")
        self.pairs_s = [torch.as_tensor(t).clone() for t in state["pairs_s"]]
        self.pairs_y = [torch.as_tensor(t).clone() for t in state["pairs_y"]]
