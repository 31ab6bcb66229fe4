"""Sign flipping: send the negated (optionally scaled) honest update.

Reference: Li et al. 2019, 'RSA: Byzantine-Robust Stochastic Aggregation
Methods for Distributed Learning from Heterogeneous Datasets' (AAAI), the
sign-flipping attack. Each malicious client trains honestly on its own data,
then sends

.. math:: \\tilde u_i = -s\\, u_i

with :math:`s` = ``attack.scale`` (RSA's :math:`-\\sigma`; 1 by default). With
``attack.collude`` every malicious client sends :math:`-s\\,\\bar u`, the
flipped mean of their own updates.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import joint_rows


def sign_flip(rows: Tensor, scale: float = 1.0) -> Tensor:
    """``-scale * rows``.

    Example
    -------
    >>> import torch
    >>> sign_flip(torch.tensor([[1.0, -2.0]]), 2.0).tolist()
    [[-2.0, 4.0]]
    """
    return rows * (-scale)


class SignFlipParams(AttackParams):
    """Parameters of ``sign_flip``."""

    #: Magnitude of the flipped update relative to the honest one.
    scale: float = Field(1.0, gt=0.0)


@register_attack(
    "sign_flip",
    description="Send the negated own update, times attack.scale.",
    params=SignFlipParams,
    reference="Li et al. 2019, RSA (AAAI), sign-flipping attack: -scale * own honest update.",
)
class SignFlip(Attack):
    """Negate (and scale) the honestly trained update."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL


    def craft(self, ctx: AttackContext) -> Tensor:
        """``-scale`` times each own update (or their mean, when colluding)."""
        rows = joint_rows(ctx.own_updates) if self.collude else ctx.own_updates
        return sign_flip(rows, self.params.scale)
