"""The auditor behind ``norm_mad`` and ``multi_signal``: signals, z-scores, history, policy.

Each round :meth:`SignalAuditor.screen`

1. computes the configured signals of every row (:mod:`fedpoison.audit.signals`);
2. turns each into a robust z-score over the round's participants, oriented so
   that positive is suspicious, and combines them into one score;
3. blends in the client's history (an EWMA of its past scores; off for
   ``norm_mad``) and flags rows whose suspicion exceeds ``audit.threshold``;
4. lets the policy (:mod:`fedpoison.audit.policies`) decide which rows are
   kept and with what weight, and sentences flagged clients.

:meth:`admit` refuses quarantined clients before they train;
:meth:`observe` remembers the round's aggregate (for ``centre:
previous_aggregate``) and, with ``audit.rule_flags``, treats the rows the
defense's rule did not select as flags too. The maths lives in pure functions;
this class only holds per-client state, all of it in :meth:`state_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from fedpoison.audit.base import AuditDecision
from fedpoison.audit.params import PolicyParams
from fedpoison.audit.policies import PolicyAdmission, PolicyState, update_reputation
from fedpoison.audit.signals import (
    Tail,
    blend_history,
    combine_scores,
    compute_signals,
    ewma_update,
    finite_median,
    oriented_z,
)
from fedpoison.core.rows import finite_rows
from fedpoison.defenses.base import AggregationResult, RoundContext

#: History stores scores capped at this multiple of the threshold.
HISTORY_CAP = 2.0


class SignalAuditor(PolicyAdmission):
    """Score rows by robust z-scores of signals, flag above a threshold, apply a policy.

    Parameters
    ----------
    params:
        The validated ``audit.*`` keys (a :class:`PolicyParams` subclass).
    num_clients:
        N, the federation size (client ids are ``0..N-1``).
    tails:
        Signal name to the tail in which it is suspicious, in order.
    centre:
        ``median`` or ``previous_aggregate``.
    combine:
        ``mean`` or ``max`` (see :func:`~fedpoison.audit.signals.combine_scores`).
    history_weight, history_decay:
        EWMA history blended into the suspicion score (0 turns it off).
    krum_f:
        f of the Krum signal.
    """

    def __init__(
        self,
        params: PolicyParams,
        *,
        num_clients: int,
        tails: Mapping[str, Tail],
        centre: str = "median",
        combine: str = "mean",
        history_weight: float = 0.0,
        history_decay: float = 0.5,
        krum_f: int | None = None,
    ) -> None:
        if num_clients < 1:
            raise ValueError(f"num_clients: expected at least 1, got {num_clients}")
        if not tails:
            raise ValueError("tails: expected at least one signal, got none")
        if centre not in ("median", "previous_aggregate"):
            raise ValueError(f"centre: expected 'median' or 'previous_aggregate', got {centre!r}")
        self.params = params
        self.num_clients = num_clients
        self.tails = dict(tails)
        self.centre = centre
        self.combine = combine
        self.history_weight = history_weight
        self.history_decay = history_decay
        self.krum_f = krum_f
        self.policy = PolicyState.fresh(num_clients)
        self.history = torch.zeros(num_clients, dtype=torch.float32)
        self.seen = torch.zeros(num_clients, dtype=torch.bool)
        self.last_aggregate: Tensor | None = None

    # ---- hooks -------------------------------------------------------------------
    def screen(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AuditDecision:
        """Signals, score, flags and the policy's keep/weight for this round's rows."""
        n = updates.shape[0]
        ids = ctx.client_ids
        if ids.shape[0] != n:
            raise ValueError(f"screen: expected {n} client ids for {n} rows, got {ids.shape[0]}")
        self._check_ids(ids)
        p = self.params
        signals = compute_signals(updates, self.tails, centre=self._centre(updates), krum_f=self.krum_f)
        z = {name: oriented_z(sig, self.tails[name]) for name, sig in signals.items()}
        current = combine_scores(z, self.combine).cpu()  # type: ignore[arg-type]
        cpu_ids = ids.cpu().long()
        score = blend_history(current, self.history[cpu_ids], self.seen[cpu_ids], self.history_weight)
        nonfinite = ~finite_rows(updates).cpu()
        flagged = (score > p.threshold) if n >= p.min_rows else torch.zeros(n, dtype=torch.bool)
        flagged = flagged | nonfinite
        if self.history_weight > 0.0:
            cap = HISTORY_CAP * p.threshold
            self.history[cpu_ids] = ewma_update(self.history[cpu_ids], self.seen[cpu_ids], current,
                                                self.history_decay, cap)
        self.seen[cpu_ids] = True
        extra: dict[str, Tensor] = {}
        if self.history_weight > 0.0:
            extra["history"] = self.history[cpu_ids].clone()
        return self.decide_rows(cpu_ids, flagged, score, {**signals, **extra}, updates.device)

    def decide_rows(self, cpu_ids: Tensor, flagged: Tensor, score: Tensor, signals: Mapping[str, Tensor],
                    device: torch.device) -> AuditDecision:
        """Apply the policy to this round's flags: reputation, quarantine sentences, keep and weight.

        Shared by every auditor built on this class, whatever computes its
        score and flags; ``signals`` are logged with the reputation added.
        """
        extra: dict[str, Tensor] = {}
        keep, weight, rep = self.apply_policy(cpu_ids, flagged)
        if rep is not None:
            extra["reputation"] = rep.clone()
        logged = {name: sig.detach().to(device) for name, sig in signals.items()}
        logged.update({name: t.to(device) for name, t in extra.items()})
        return AuditDecision(keep=keep.to(device), weight=weight.to(device), score=score.to(device),
                             flagged=flagged.to(device), signals=logged)

    def observe(self, ctx: RoundContext, decision: AuditDecision, result: AggregationResult) -> None:
        """Remember the aggregate; with ``rule_flags``, unselected rows count as flags from now on."""
        agg = result.aggregate.detach()
        if bool(torch.isfinite(agg).all()) and bool(agg.abs().sum() > 0):
            self.last_aggregate = agg.cpu().clone()
        if not self.params.rule_flags or result.selected.numel() == 0:
            return
        ids = ctx.client_ids.cpu().long()
        if ids.shape[0] != result.selected.shape[0]:
            raise ValueError(f"observe: expected {ids.shape[0]} selection flags for the kept rows, "
                             f"got {result.selected.shape[0]}")
        dropped = ~result.selected.cpu()
        if not bool(dropped.any()):
            return
        p = self.params
        if p.policy == "quarantine":
            self._sentence(ids, dropped)
        elif p.policy == "reputation":
            self.policy.reputation = update_reputation(self.policy.reputation, ids, dropped,
                                                       recovery=0.0, penalty=p.reputation_penalty)

    def state_dict(self) -> dict[str, Any]:
        """Quarantine counters, offences, reputation, history and the last aggregate (plain tensors)."""
        return {
            **self.policy.state_dict(),
            "history": self.history.clone(),
            "seen": self.seen.clone(),
            "last_aggregate": None if self.last_aggregate is None else self.last_aggregate.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the federation size must match."""
        self._load_policy(state)
        self.history = torch.as_tensor(state["history"]).to("cpu", torch.float32).clone()
        self.seen = torch.as_tensor(state["seen"]).to("cpu", torch.bool).clone()
        last = state.get("last_aggregate")
        self.last_aggregate = None if last is None else torch.as_tensor(last).to("cpu").clone()

    # ---- internals -----------------------------------------------------------------
    def _centre(self, updates: Tensor) -> Tensor | None:
        needs = {"cosine", "distance", "sign_agreement"} & set(self.tails)
        if not needs:
            return None
        if self.centre == "previous_aggregate" and self.last_aggregate is not None \
                and self.last_aggregate.shape[0] == updates.shape[1]:
            return self.last_aggregate.to(updates.device, updates.dtype)
        return finite_median(updates)


def signal_tails(names: Sequence[str], norm_tail: Tail = "upper") -> dict[str, Tail]:
    """The tail of each named signal, with the norm's tail configurable."""
    from fedpoison.audit.signals import SIGNAL_TAILS

    return {name: (norm_tail if name == "norm" else SIGNAL_TAILS[name]) for name in names}
