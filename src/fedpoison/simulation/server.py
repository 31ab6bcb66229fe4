"""The server's step of a round: sanitize, audit, defend, observe.

One implementation serves fedpoison's round loop
(:func:`fedpoison.simulation.loop.run_round`) and the Flower strategy
(:class:`fedpoison.integrations.flower.RobustStrategy`), so the two cannot
drift apart. The order:

1. rows holding NaN or Inf are dropped, zeroed or kept by the ``nonfinite``
   policy (``defense.nonfinite``) before anything reads them;
2. the auditor, if any, screens the remaining rows; its ``keep`` and
   reputation ``weight`` apply;
3. the defense (pre-aggregators, then the rule) aggregates the kept rows; a
   data-dependent limit it cannot meet (:class:`~fedpoison.errors.AggregationError`,
   such as too few rows for its ``f``) skips the round, or raises with
   ``on_violation="raise"``;
4. the auditor observes what the defense did, unless the round was skipped
   (a skipped round says nothing about the clients);
5. the step (:func:`server_step`): the global model moves by the server
   learning rate times the aggregate plus, with ``server.noise_std`` > 0,
   Gaussian noise (weak differential privacy, as in Sun et al., "Can You
   Really Backdoor Federated Learning?", 2019).

Without an auditor and without non-finite rows, the result is the defense
called on the whole matrix.

This is the only place that handles non-finite rows: defenses and auditors
get finite rows (unless the policy is ``keep``), and the results are spread
back over every input row here, so that ``selected`` and ``weights`` refer to
the clients the server received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from fedpoison.audit.base import AuditDecision, Auditor
from fedpoison.core.draws import gaussian_like
from fedpoison.core.rows import finite_rows
from fedpoison.defenses import AggregationResult, RoundContext
from fedpoison.defenses.base import AggregationRule
from fedpoison.errors import AggregationError

__all__ = ["AuditedAggregation", "audit_and_defend", "expand_decision", "sanitize_rows", "subset_decision"]


def sanitize_rows(updates: Tensor, policy: str) -> tuple[Tensor, Tensor, int]:
    """Apply the non-finite policy (``defense.nonfinite``) before anything reads the rows.

    Returns the (possibly zeroed) updates, the rows still in play, and how many
    rows held NaN or Inf. ``drop`` takes such rows out, ``zero`` replaces them
    by zero rows, ``keep`` passes them on unchanged (plain FedAvg then diverges,
    which the loop records).
    """
    bad = ~finite_rows(updates)
    n_bad = int(bad.sum())
    keep = torch.ones(len(updates), dtype=torch.bool, device=updates.device)
    if n_bad and policy == "drop":
        keep = ~bad
    elif n_bad and policy == "zero":
        updates = torch.where(bad[:, None], torch.zeros((), dtype=updates.dtype, device=updates.device), updates)
    return updates, keep, n_bad


def expand_decision(dec: AuditDecision, mask: Tensor) -> AuditDecision:
    """An auditor's decision over ``mask``'s rows, spread over all rows.

    Rows outside ``mask`` (dropped before the audit) are not kept, not flagged,
    weight 0 and score NaN.
    """
    n = len(mask)

    def spread(values: Tensor, fill: float | bool) -> Tensor:
        out = torch.full((n,), fill, dtype=values.dtype, device=values.device)
        out[mask] = values
        return out

    return AuditDecision(
        keep=spread(dec.keep, False), weight=spread(dec.weight, 0.0), score=spread(dec.score, float("nan")),
        flagged=spread(dec.flagged, False), signals={k: spread(v, float("nan")) for k, v in dec.signals.items()},
    )


def subset_decision(dec: AuditDecision, mask: Tensor) -> AuditDecision:
    """The rows of ``dec`` selected by ``mask``."""
    return AuditDecision(dec.keep[mask], dec.weight[mask], dec.score[mask], dec.flagged[mask],
                         {k: v[mask] for k, v in dec.signals.items()})


@dataclass(frozen=True)
class AuditedAggregation:
    """The defense's result plus what the auditor decided, all indexed by input row.

    Attributes
    ----------
    result:
        The defense's result over the kept rows (its ``weights``, ``selected``
        and ``scores`` refer to those rows only).
    updates:
        The ``(n, d)`` matrix after the non-finite policy: the input itself
        unless ``zero`` replaced rows.
    keep:
        ``(n,)`` bool, rows passed on to the defense (finite, and kept by the auditor).
    decision:
        The auditor's decision, or ``None`` without an auditor.
    selected:
        ``(n,)`` bool, rows the defense kept, over all input rows.
    weights:
        ``(n,)`` effective weight of each input row in the aggregate.
    nonfinite:
        How many rows held NaN or Inf.
    error:
        Why this round was skipped: the defense's
        :class:`~fedpoison.errors.AggregationError` (e.g. fewer kept rows than
        its requirement on ``f`` allows), or no rows left after sanitizing and
        auditing; empty when it aggregated. The aggregate is then zero and the
        auditor does not observe the round.
    """

    result: AggregationResult
    updates: Tensor
    keep: Tensor
    decision: AuditDecision | None
    selected: Tensor
    weights: Tensor
    nonfinite: int = 0
    error: str = ""

    @property
    def aggregate(self) -> Tensor:
        """``(d,)`` the aggregate update."""
        return self.result.aggregate


def audit_and_defend(
    updates: Tensor,
    weights: Tensor,
    ctx: RoundContext,
    defense: AggregationRule,
    auditor: Auditor | None = None,
    *,
    nonfinite: str | None = None,
    on_violation: Literal["skip", "raise"] = "skip",
) -> AuditedAggregation:
    """The server's step (see the module docstring): sanitize, screen, aggregate, observe.

    Parameters
    ----------
    updates:
        ``(n, d)`` float32 update matrix. Not modified.
    weights:
        ``(n,)`` sample counts.
    ctx:
        The round's context; ``ctx.client_ids`` holds one id per row.
    defense:
        A callable ``(updates, weights, ctx) -> AggregationResult``
        (:class:`fedpoison.defenses.Defense`).
    auditor:
        An object with the :class:`fedpoison.audit.Auditor` hooks, or ``None``.
    nonfinite:
        ``drop``, ``zero`` or ``keep`` (``None``: the defense's own ``nonfinite``
        attribute, ``drop`` for a callable without one).
    on_violation:
        ``skip`` records the defense's :class:`~fedpoison.errors.AggregationError`
        in ``error`` and returns a zero aggregate; ``raise`` re-raises it.
        A round with no rows left is skipped either way.
    """
    n, d = updates.shape
    device = updates.device
    policy = nonfinite if nonfinite is not None else getattr(defense, "nonfinite", "drop")
    x, keep, n_bad = sanitize_rows(updates, policy)
    decision: AuditDecision | None = None
    agg_weights = weights
    if auditor is not None and keep.any():
        decision = expand_decision(auditor.screen(_rows(x, keep), _rows(weights, keep), ctx.subset(keep)), keep)
        keep = keep & decision.keep.to(device=device, dtype=torch.bool)
        agg_weights = weights * decision.weight.to(weights)
    sub_ctx = ctx.subset(keep)
    error = "" if keep.any() else "no rows left to aggregate"
    res: AggregationResult | None = None
    if not error:
        try:
            res = defense(_rows(x, keep), _rows(agg_weights, keep), sub_ctx)
        except AggregationError as exc:  # a data-dependent limit (too few rows for f)
            if on_violation == "raise":
                raise
            error = str(exc)
    if res is None:
        k = int(keep.sum())
        res = AggregationResult(torch.zeros(d, dtype=updates.dtype, device=device), torch.zeros(k, device=device),
                                torch.zeros(k, dtype=torch.bool, device=device), None, 0, {})
    elif auditor is not None and decision is not None:
        auditor.observe(sub_ctx, subset_decision(decision, keep), res)
    selected = torch.zeros(n, dtype=torch.bool, device=device)
    eff = torch.zeros(n, dtype=torch.float32, device=device)
    if keep.any() and res.selected.numel():
        selected[keep] = res.selected.to(device=device, dtype=torch.bool)
        eff[keep] = res.weights.to(device=device, dtype=torch.float32)
    return AuditedAggregation(res, x, keep, decision, selected, eff, n_bad, error)


def _rows(t: Tensor, mask: Tensor) -> Tensor:
    """``t[mask]``, without copying ``t`` when every row is kept (the usual round)."""
    return t if bool(mask.all()) else t[mask]


def server_step(params: Tensor, aggregate: Tensor, *, lr: float = 1.0, noise_std: float = 0.0,
                generator: torch.Generator | None = None) -> Tensor:
    """The next global model: :math:`\\theta + \\eta\\,(g + \\sigma\\,\\varepsilon)`, :math:`\\varepsilon \\sim N(0, I)`.

    ``noise_std`` is :math:`\\sigma` (0: no noise, no draw), drawn from
    ``generator`` (the run's ``server`` stream for the round, so a resumed run
    draws the same noise). Returns a new tensor; the inputs are not changed.

    Example
    -------
    >>> server_step(torch.zeros(2), torch.ones(2), lr=0.5).tolist()
    [0.5, 0.5]
    """
    if noise_std > 0.0:
        if generator is None:
            raise ValueError("server_step: noise_std > 0 needs a generator")
        aggregate = aggregate + gaussian_like(aggregate.shape, generator=generator, like=aggregate, std=noise_std)
    return params + lr * aggregate
