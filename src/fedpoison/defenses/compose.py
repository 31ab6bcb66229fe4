"""The server's defense: pre-aggregators, then a rule.

:class:`Defense` composes them and traces what each step did back to the input
rows, so the result's ``selected`` and ``weights`` always refer to the clients
the server received, whatever bucketing or mixing happened in between.

Rows holding NaN or Inf never reach a defense: the server's step
(:func:`fedpoison.simulation.server.audit_and_defend`) applies the
``defense.nonfinite`` policy first, and spreads the defense's result back over
the rows it dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from fedpoison.defenses.base import AggregationResult, AggregationRule, PreAggregator, RoundContext
from fedpoison.defenses.inputs import checked_call
from fedpoison.defenses.registry import PRE_AGGREGATORS, RULES

if TYPE_CHECKING:
    from fedpoison.config import DefenseSection

NonFinitePolicy = Literal["drop", "zero", "keep"]


class Defense:
    """Pre-aggregate and aggregate one round's (finite) update matrix.

    Parameters
    ----------
    rule:
        The aggregation rule.
    pre:
        Pre-aggregators applied in order before the rule.
    nonfinite:
        What the server's step does with rows holding NaN or Inf before it
        calls the defense: ``drop`` removes them, ``zero`` replaces them by
        zero rows, ``keep`` passes them on (to study what happens to
        undefended FedAvg). The defense itself does not read it.
    name:
        For messages and records.
    """

    def __init__(
        self,
        rule: AggregationRule,
        pre: Sequence[PreAggregator] = (),
        *,
        nonfinite: NonFinitePolicy = "drop",
        name: str = "mean",
        f: int = 0,
    ) -> None:
        self.rule = rule
        self.pre = tuple(pre)
        self.nonfinite = nonfinite
        self.name = name
        self.f = f

    def state_dict(self) -> dict[str, object]:
        """State of stateful steps (``state_dict`` of the rule and pre-aggregators), for checkpoints."""
        steps = {"rule": self.rule, **{f"pre{i}": p for i, p in enumerate(self.pre)}}
        return {k: s.state_dict() for k, s in steps.items() if hasattr(s, "state_dict")}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned."""
        steps = {"rule": self.rule, **{f"pre{i}": p for i, p in enumerate(self.pre)}}
        for key, value in state.items():
            steps[key].load_state_dict(value)  # type: ignore[attr-defined]

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Pre-aggregate and aggregate one round's rows; trace the result back to them."""
        x, w = updates, weights
        info: dict[str, float] = {}
        mix = torch.eye(x.shape[0], device=updates.device)  # rows of x as mixtures of input rows
        clipped = 0
        for step in self.pre:
            out = step(x, w, ctx)
            x, w = out.updates, out.weights
            clipped += out.clipped
            info.update(out.info)
            if out.groups is not None:
                mix = out.groups.to(mix.dtype) @ mix
        res = self.rule(x, w, ctx)
        info.update(res.info)
        if not self.pre:
            return AggregationResult(res.aggregate, res.weights, res.selected, res.scores, res.clipped, info)
        # Trace back through the pre-aggregators' mixing to the input rows.
        weights_in = res.weights.to(mix.dtype) @ mix
        selected_in = (res.selected.to(mix.dtype) @ (mix > 0).to(mix.dtype)) > 0
        scores_in = res.scores if res.scores is not None and res.scores.shape[0] == mix.shape[1] else None
        return AggregationResult(res.aggregate, weights_in, selected_in, scores_in, clipped + res.clipped, info)


checked_call(Defense, "defense")  # the same input contract as every rule (fedpoison.defenses.inputs)


def build_defense(cfg: DefenseSection, *, f: int) -> Defense:
    """Build the configured defense; ``f`` is the assumed number of Byzantine rows."""
    f = cfg.f if cfg.f is not None else f
    rule_entry = RULES.get(cfg.name, key="defense.name")
    rule = rule_entry.obj(cfg.params(rule_entry.params), f=f)
    pres = []
    for i, name in enumerate(cfg.pre):
        entry = PRE_AGGREGATORS.get(name, key=f"defense.pre[{i}]")
        pres.append(entry.obj(cfg.params(entry.params), f=f))
    return Defense(rule, pres, nonfinite=cfg.nonfinite, name=cfg.name, f=f)
