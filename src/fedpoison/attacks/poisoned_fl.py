"""``poisoned_fl``: one fixed poisoning direction across rounds, magnitudes adapted to what got through.

Reference: Xie et al. 2025, 'Model Poisoning Attacks to Federated Learning
via Multi-Round Consistency' (PoisonedFL, CVPR), and the authors' code. The
attacker (typically fake clients) fixes a random sign vector
:math:`s \\in \\{-1, 1\\}^d` once for the whole campaign and sends, in round
:math:`t`, the same row from every malicious client:

.. math::

    \\tilde u_t = \\lambda_t\\, \\frac{v_t \\odot s}{\\|v_t\\|_2}, \\qquad
    \\lambda_t = c_t\\, \\|g_{t-1}\\|_2, \\qquad
    v_t = \\Big| g_{t-1} - \\tilde u_{t-1} \\frac{\\|g_{t-1}\\|_2}{\\|\\tilde u_{t-1}\\|_2} \\Big|

with :math:`g_{t-1}` the last change of the global model the attacker saw
(the current global model minus the one it saw when it last crafted) and
:math:`\\tilde u_{t-1}` what it sent then. So the *signs* of every row stay
:math:`s` in every round (multi-round consistency: the pushes add up instead
of cancelling), while the per-coordinate magnitudes follow the part of the
global change that the attacker's own push does not explain, and the overall
size follows the global model's step.

**Adapting to what got through.** Every ``attack.check_every`` rounds
(:math:`e`, 50 in the paper), the attacker counts the coordinates where the
global model's change over those rounds has the sign of :math:`s`. Under no
effect that count is Binomial(:math:`d`, 1/2); below its 99% quantile
:math:`d/2 + 2.326\\sqrt{d}/2` the attack did not get through (the defense
dampened it), and the scaling factor shrinks, :math:`c \\leftarrow 0.7 c`, as
long as :math:`0.7 c \\ge 0.5` (the authors' rule).

Variant and deviations: :math:`s` is drawn from the run's attack seed (fixed
per run, also after a resume); the binomial quantile uses the normal
approximation instead of the authors' table for four model sizes; in its first
round the attacker has no global change to size its row by and sends zero rows
(the authors' code leaves the fake rows untouched in that round). The initial
scaling factor ``attack.scale`` (:math:`c_0`) defaults to 8. The attacker's
state (its last global model and row, the model at the last check, :math:`c`)
is saved in checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge, campaign_generator
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import repeat_row

#: The scaling factor never shrinks below this (the authors' floor).
MIN_SCALE = 0.5
#: Shrink factor when the direction did not get through.
SHRINK = 0.7


def sign_vector(d: int, generator: torch.Generator) -> Tensor:
    """``(d,)`` random signs in {-1, +1} (float32, CPU)."""
    return torch.randint(0, 2, (d,), generator=generator).to(torch.float32) * 2 - 1


def binomial_99(d: int) -> float:
    """The 99% quantile of Binomial(d, 1/2), normal approximation :math:`d/2 + 2.326 \\sqrt{d} / 2`.

    Example
    -------
    >>> round(binomial_99(139960))   # the authors' table: 70415
    70415
    """
    return d / 2 + 2.3263 * math.sqrt(d) / 2


def magnitude_vector(global_change: Tensor, last_sent: Tensor | None) -> Tensor:
    """``(d,)`` :math:`v_t = |g - \\tilde u \\|g\\| / \\|\\tilde u\\||`, or :math:`|g|` without a last row."""
    if last_sent is None or float(torch.linalg.vector_norm(last_sent)) == 0.0:
        return global_change.abs()
    scale = torch.linalg.vector_norm(global_change) / torch.linalg.vector_norm(last_sent)
    return (global_change - last_sent * scale).abs()


def poisoned_fl_update(global_change: Tensor, last_sent: Tensor | None, signs: Tensor, c: float) -> Tensor:
    """``(d,)`` :math:`c \\|g\\| \\, v \\odot s / \\|v\\|` (zeros when :math:`v = 0`).

    Example
    -------
    >>> poisoned_fl_update(torch.tensor([3.0, -4.0]), None, torch.tensor([1.0, 1.0]), 2.0)
    tensor([6., 8.])
    """
    v = magnitude_vector(global_change, last_sent)
    vn = torch.linalg.vector_norm(v)
    if float(vn) == 0.0:
        return torch.zeros_like(global_change)
    return c * torch.linalg.vector_norm(global_change) * v * signs / vn


def got_through(total_change: Tensor, signs: Tensor) -> bool:
    """Whether the global change agrees with ``signs`` on more coordinates than chance (99%)."""
    aligned = int((torch.sign(total_change) == signs).sum())
    return aligned >= binomial_99(int(total_change.numel()))


class PoisonedFLParams(AttackParams):
    """Parameters of ``poisoned_fl``."""

    #: c_0, the initial scaling factor on the global step's norm.
    scale: float = Field(8.0, gt=0.0, le=1e9)
    #: e, rounds between checks of whether the direction got through.
    check_every: int = Field(50, ge=1)


@register_attack(
    "poisoned_fl",
    description="Fixed random sign direction every round; size c * |global step|, c shrunk when it does not get through.",
    params=PoisonedFLParams,
    reference="Xie et al. 2025, Model Poisoning Attacks to Federated Learning via Multi-Round Consistency (PoisonedFL, CVPR).",
    variant="sign vector fixed per run; magnitudes from the unexplained global change; c *= 0.7 (>= 0.5) when the "
            "e-round sign test fails (normal-approximation 99% quantile)",
    tags=("fake_clients", "stateful"),
)
class PoisonedFL(Attack):
    """Multi-round consistent poisoning (stateful: the attacker remembers what it saw and sent)."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL
    trains = False

    def __init__(self, params: PoisonedFLParams, *, num_classes: int, input_shape: tuple[int, ...],
                 collude: bool = False) -> None:
        super().__init__(params, num_classes=num_classes, input_shape=input_shape, collude=collude)
        self.c = float(params.scale)
        self.last_global: Tensor | None = None
        self.last_sent: Tensor | None = None
        self.anchor: Tensor | None = None
        self.anchor_round = 0

    def signs(self, ctx: AttackContext) -> Tensor:
        """The campaign's sign vector :math:`s` (the same in every round of a run)."""
        return sign_vector(int(ctx.global_params.numel()), campaign_generator(ctx))

    def craft(self, ctx: AttackContext) -> Tensor:
        """One row with the campaign's signs, sent by every malicious client."""
        w = ctx.global_params.detach().to(ctx.own_updates)
        s = self.signs(ctx).to(w)
        if self.anchor is None:
            self.anchor, self.anchor_round = w.clone(), ctx.round
        elif ctx.round - self.anchor_round >= self.params.check_every:
            if not got_through(w - self.anchor, s) and SHRINK * self.c >= MIN_SCALE:
                self.c *= SHRINK
            self.anchor, self.anchor_round = w.clone(), ctx.round
        if self.last_global is None:
            row = torch.zeros_like(w)
        else:
            row = poisoned_fl_update(w - self.last_global.to(w), self.last_sent, s, self.c)
        self.last_global, self.last_sent = w.clone(), row.clone()
        return repeat_row(row, ctx.num_malicious)

    def state_dict(self) -> dict[str, Any]:
        """What the attacker remembers across rounds (saved in checkpoints)."""
        return {"c": self.c, "anchor_round": self.anchor_round, "last_global": self.last_global,
                "last_sent": self.last_sent, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.c = float(state["c"])
        self.anchor_round = int(state["anchor_round"])
        self.last_global, self.last_sent, self.anchor = state["last_global"], state["last_sent"], state["anchor"]
