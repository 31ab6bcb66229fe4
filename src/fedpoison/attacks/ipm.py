"""Inner Product Manipulation (IPM): send a small negative multiple of the honest mean.

Reference: Xie, Koyejo & Gupta 2020, 'Fall of Empires: Breaking
Byzantine-tolerant SGD by Inner Product Manipulation' (UAI 2019, PMLR 115).
Every malicious client sends

.. math:: \\tilde u = -\\epsilon \\cdot \\frac{1}{k} \\sum_{i=1}^{k} u_i

over the :math:`k` honest updates, with :math:`\\epsilon` = ``attack.eps``
(the paper uses a small :math:`\\epsilon` such as 0.1 against Krum and a large
one such as 100 against the median and trimmed mean), so the aggregate's inner
product with the true gradient turns negative. Needs the honest updates
(``omniscient``); the malicious clients do not train.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import benign_reference, repeat_row


def ipm_update(honest: Tensor, eps: float) -> Tensor:
    """``(d,)``: :math:`-\\epsilon` times the mean of the ``(k, d)`` honest rows.

    Example
    -------
    >>> import torch
    >>> ipm_update(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), 0.5).tolist()
    [-1.0, -0.5]
    """
    return honest.mean(dim=0) * (-eps)


class IPMParams(AttackParams):
    """Parameters of ``ipm``."""

    #: epsilon: small (0.1) against Krum, large (100) against median / trimmed mean.
    eps: float = Field(0.1, gt=0.0)


@register_attack(
    "ipm",
    description="Send -eps times the mean of the honest updates.",
    params=IPMParams,
    reference="Xie, Koyejo & Gupta 2020, Fall of Empires: Inner Product Manipulation, -eps * mean(honest).",
)
class IPM(Attack):
    """Inner product manipulation."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.OMNISCIENT
    trains = False

    def craft(self, ctx: AttackContext) -> Tensor:
        """One ``-eps * mean(honest)`` row, sent by every malicious client."""
        return repeat_row(ipm_update(benign_reference(ctx), self.params.eps), ctx.num_malicious)
