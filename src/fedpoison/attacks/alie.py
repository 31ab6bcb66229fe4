"""A Little Is Enough (ALIE): shift every coordinate by z standard deviations.

Reference: Baruch, Baruch & Goldberg 2019, 'A Little Is Enough: Circumventing
Defenses For Distributed Learning' (NeurIPS), Algorithm 3. With per-coordinate
mean :math:`\\mu_j` and standard deviation :math:`\\sigma_j` of the honest
updates (Bessel-corrected), every malicious client sends

.. math:: \\tilde u_j = \\mu_j - z\\, \\sigma_j .

The paper's :math:`z^{\\max}` for :math:`n` participants of which :math:`f`
are malicious: the attackers need :math:`s = \\lfloor n/2 + 1 \\rfloor - f`
honest "supporters", and :math:`z` is the largest value such that
:math:`n - s` clients lie further from the mean than the crafted row, for
normally distributed coordinates:

.. math:: z^{\\max} = \\Phi^{-1}\\!\\left(\\frac{n - s}{n}\\right)

with :math:`\\Phi` the standard normal CDF. Here :math:`n` is this round's
participants and :math:`f` this round's malicious rows. When :math:`f` is so
large that :math:`s < 1`, :math:`s = 1` is used (the probability must stay
below 1). ``attack.z`` sets :math:`z` explicitly. Needs the honest updates
(``omniscient``); the malicious clients do not train.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import benign_reference, repeat_row
from fedpoison.core.rows import coordinate_mean_std


def alie_z(n: int, f: int) -> float:
    """:math:`z^{\\max} = \\Phi^{-1}((n - s) / n)`, :math:`s = \\lfloor n/2 + 1 \\rfloor - f` (at least 1).

    Example
    -------
    >>> round(alie_z(50, 12), 4)   # s = 26 - 12 = 14, Phi^-1(36 / 50)
    0.5828
    """
    if n < 1 or f < 0:
        raise ValueError(f"alie_z: expected n >= 1 and f >= 0, got n={n}, f={f}")
    s = max(math.floor(n / 2 + 1) - f, 1)
    if s >= n:
        return 0.0
    return NormalDist().inv_cdf((n - s) / n)


def alie_update(benign: Tensor, z: float) -> Tensor:
    """``(d,)``: :math:`\\mu - z\\sigma` over the rows of ``benign``."""
    mean, std = coordinate_mean_std(benign)
    return mean - z * std


class ALIEParams(AttackParams):
    """Parameters of ``alie``."""

    #: Shift in standard deviations; by default z_max from n and f (Baruch et al. 2019).
    z: float | None = Field(None, ge=0.0)


@register_attack(
    "alie",
    description="Send mean - z * std of the honest updates, z from n and f (or attack.z).",
    params=ALIEParams,
    reference=(
        "Baruch et al. 2019, A Little Is Enough (NeurIPS): mu - z*sigma with "
        "z = Phi^-1((n - s)/n), s = floor(n/2 + 1) - f."
    ),
)
class ALIE(Attack):
    """A Little Is Enough."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.OMNISCIENT
    trains = False

    def z(self, ctx: AttackContext) -> float:
        """The z used this round."""
        if self.params.z is not None:
            return self.params.z
        return alie_z(ctx.num_participants, ctx.num_malicious)

    def craft(self, ctx: AttackContext) -> Tensor:
        """One ``mu - z sigma`` row, sent by every malicious client."""
        row = alie_update(benign_reference(ctx), self.z(ctx))
        return repeat_row(row.to(ctx.own_updates.dtype), ctx.num_malicious)
