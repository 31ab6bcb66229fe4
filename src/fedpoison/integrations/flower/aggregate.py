"""One round of server-side aggregation: the auditor screens, the defense aggregates.

This is the order of fedpoison's own round loop
(:func:`fedpoison.simulation.loop.run_round`): non-finite rows are handled at
the server's door, the auditor scores every remaining row and decides which
are kept and with what reputation weight, the defense (pre-aggregators, rule)
aggregates the kept rows, and the auditor then observes what the defense did.
Without an auditor and without non-finite rows, the result is the defense
called on the whole matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from fedpoison.audit import AuditDecision
from fedpoison.defenses import AggregationResult, RoundContext
from fedpoison.errors import AggregationError
from fedpoison.simulation.loop import expand_decision, sanitize_rows, subset_decision


@dataclass(frozen=True)
class AuditedAggregation:
    """The defense's result plus what the auditor decided, all indexed by input row.

    Attributes
    ----------
    result:
        The defense's result over the kept rows (its ``weights``, ``selected``
        and ``scores`` refer to those rows only).
    keep:
        ``(n,)`` bool, rows passed on to the defense (finite, and kept by the auditor).
    decision:
        The auditor's decision, or ``None`` without an auditor.
    selected:
        ``(n,)`` bool, rows the defense kept, over all input rows.
    weights:
        ``(n,)`` effective weight of each input row in the aggregate.
    error:
        Why the defense could not aggregate this round (its
        :class:`~fedpoison.errors.AggregationError`, e.g. fewer kept rows than
        its requirement on ``f`` allows); empty when it did. The aggregate is
        then zero and the auditor does not observe the round.
    """

    result: AggregationResult
    keep: Tensor
    decision: AuditDecision | None
    selected: Tensor
    weights: Tensor
    error: str = ""

    @property
    def aggregate(self) -> Tensor:
        """``(d,)`` the aggregate update."""
        return self.result.aggregate


def audit_and_defend(
    updates: Tensor, weights: Tensor, ctx: RoundContext, defense: Any, auditor: Any | None = None
) -> AuditedAggregation:
    """Sanitize, screen with ``auditor`` (optional), then aggregate the kept rows with ``defense``.

    The steps and their order are those of fedpoison's round loop, built from
    its own pieces (:func:`~fedpoison.simulation.loop.sanitize_rows`,
    :func:`~fedpoison.simulation.loop.expand_decision`,
    :func:`~fedpoison.simulation.loop.subset_decision`):

    1. rows with NaN or Inf are dropped, zeroed or kept by the defense's
       ``nonfinite`` policy (``drop`` for a callable without one), before
       anything reads them; their count is ``info["nonfinite_rows"]``;
    2. the auditor screens the remaining rows; its ``keep`` and reputation
       ``weight`` apply;
    3. the defense aggregates the kept rows; if it raises
       :class:`~fedpoison.errors.AggregationError` the round is recorded as
       skipped (``error``) rather than raised;
    4. the auditor observes the result.

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
    """
    n, d = updates.shape
    device = updates.device
    x, keep, n_bad = sanitize_rows(updates, getattr(defense, "nonfinite", "drop"))
    decision: AuditDecision | None = None
    agg_weights = weights
    if auditor is not None and keep.any():
        audit_ctx = _subset(ctx, keep)
        decision = expand_decision(auditor.screen(x[keep], weights[keep], audit_ctx), keep)
        keep = keep & decision.keep.to(device=device, dtype=torch.bool)
        agg_weights = weights * decision.weight.to(weights)
    sub_ctx = _subset(ctx, keep)
    error = ""
    if keep.any():
        try:
            res = defense(x[keep], agg_weights[keep], sub_ctx)
        except AggregationError as exc:  # a data-dependent limit (too few rows for f): skip, say why
            error = str(exc)
            k = int(keep.sum())
            res = AggregationResult(torch.zeros(d, dtype=updates.dtype, device=device),
                                    torch.zeros(k, device=device), torch.zeros(k, dtype=torch.bool, device=device),
                                    None, 0, {"skipped": 1.0})
    else:
        empty = torch.zeros(0, device=device)
        res = AggregationResult(torch.zeros(d, dtype=updates.dtype, device=device), empty, empty.bool(),
                                None, 0, {"empty": 1.0})
    if auditor is not None and decision is not None and not error:
        auditor.observe(sub_ctx, subset_decision(decision, keep), res)
    res = replace(res, info={**res.info, "nonfinite_rows": float(n_bad)})
    selected = torch.zeros(n, dtype=torch.bool, device=device)
    eff = torch.zeros(n, dtype=torch.float32, device=device)
    if keep.any() and res.selected.numel():
        selected[keep] = res.selected.to(device=device, dtype=torch.bool)
        eff[keep] = res.weights.to(device=device, dtype=torch.float32)
    return AuditedAggregation(res, keep, decision, selected, eff, error)


def _subset(ctx: RoundContext, mask: Tensor) -> RoundContext:
    if bool(mask.all()):
        return ctx
    return RoundContext(ctx.round, ctx.client_ids[mask], ctx.generator, ctx.global_params, ctx.slices,
                        ctx.root_update)
