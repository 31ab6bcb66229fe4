"""Free riders: skip local training and send a zero, random or stale update.

References: Lin et al. 2019, 'Free-riders in Federated Learning: Attacks and
Defenses' (plain free riders send no information: a zero or random update);
Fraboni et al. 2021, 'Free-rider Attacks on Model Aggregation in Federated
Learning' (AISTATS) (re-sending what is already known). Modes:

- ``zero``: :math:`\\tilde u_i = 0`;
- ``random``: :math:`\\tilde u_i \\sim \\mathcal N(0, \\sigma^2 I)`,
  :math:`\\sigma` = ``attack.std`` (one shared draw with ``attack.collude``);
- ``stale``: what the client sent the last time it took part (zero the first
  time), from the round loop's ``previous_updates``.

Free riders never train (``trains = False``): their own updates are zeros.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import repeat_row
from fedpoison.core.draws import gaussian_like


class FreeRiderParams(AttackParams):
    """Parameters of ``free_rider``."""

    #: ``zero``, ``random`` (N(0, std^2)) or ``stale`` (re-send the last update).
    mode: Literal["zero", "random", "stale"] = "zero"
    #: ``random``: standard deviation per coordinate.
    std: float = Field(0.01, gt=0.0)


@register_attack(
    "free_rider",
    description="Skip training; send a zero, random (N(0, std^2)) or stale (last sent) update.",
    params=FreeRiderParams,
    reference=(
        "Lin et al. 2019, Free-riders in Federated Learning (zero / random updates); Fraboni et al. 2021, "
        "Free-rider Attacks on Model Aggregation in FL (stale re-sent updates)."
    ),
)
class FreeRider(Attack):
    """Send an update without training."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL
    trains = False


    def craft(self, ctx: AttackContext) -> Tensor:
        """Zero, random or stale rows."""
        own = ctx.own_updates
        m, d = own.shape
        if self.params.mode == "zero":
            return own.new_zeros(m, d)
        if self.params.mode == "stale":
            prev = ctx.previous_updates
            return own.new_zeros(m, d) if prev is None else prev.to(own).clone()
        if self.collude:
            return repeat_row(gaussian_like((1, d), std=self.params.std, generator=ctx.generator, like=own), m)
        return gaussian_like((m, d), std=self.params.std, generator=ctx.generator, like=own)
