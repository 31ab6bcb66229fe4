"""Mimic: every malicious client copies one honest client.

Reference: Karimireddy, He & Jaggi 2022, 'Byzantine-Robust Learning on
Heterogeneous Datasets via Bucketing' (ICLR), the mimic attack. The attackers
copy the honest worker :math:`i^*` that most over-represents the direction of
largest heterogeneity: with :math:`\\mu` the honest mean and :math:`z` the top
eigenvector of the honest covariance :math:`\\sum_i (u_i - \\mu)(u_i - \\mu)^\\top`,

.. math:: i^* = \\arg\\max_i\\, |\\langle z, u_i - \\mu \\rangle| .

Variant: the paper estimates :math:`z` online over a warm-up phase and then
fixes :math:`i^*`. The round context does not say which client each honest
row comes from, so here :math:`z` is computed exactly each round (top
eigenvector of the :math:`k \\times k` Gram matrix of the centred honest rows,
mapped back, in float64; no randomness) and :math:`i^*` re-chosen per round.
``attack.copy_index`` pins :math:`i^*` to a row index of the honest updates
instead. Needs the honest updates (``omniscient``); the malicious clients do
not train.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import benign_reference, repeat_row
from fedpoison.core.rows import gram


def mimic_index(honest: Tensor) -> int:
    """:math:`i^* = \\arg\\max_i |\\langle z, u_i - \\mu\\rangle|` for the top principal direction :math:`z`.

    With centred rows :math:`X` and the Gram matrix :math:`G = X X^\\top`, the
    projections :math:`X z` are proportional to :math:`G`'s top eigenvector,
    so only a ``k x k`` eigenproblem is solved. Ties go to the lowest index.
    """
    k = honest.shape[0]
    if k <= 2:
        return 0
    centred = honest.double() - honest.double().mean(dim=0)
    _, vecs = torch.linalg.eigh(gram(centred))
    return int(vecs[:, -1].abs().argmax())


class MimicParams(AttackParams):
    """Parameters of ``mimic``."""

    #: Row index (among this round's honest updates) to copy; by default the most
    #: heterogeneous one. Clipped to the last row when fewer rows take part.
    copy_index: int | None = Field(None, ge=0)


@register_attack(
    "mimic",
    description="Copy one honest client's update (the one farthest along the top heterogeneity direction).",
    params=MimicParams,
    reference=(
        "Karimireddy, He & Jaggi 2022, Byzantine-Robust Learning on Heterogeneous Datasets via Bucketing "
        "(ICLR), mimic attack; i* re-chosen per round from the exact top eigenvector."
    ),
)
class Mimic(Attack):
    """Copy one honest client."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.OMNISCIENT
    trains = False

    def craft(self, ctx: AttackContext) -> Tensor:
        """The chosen honest row, sent by every malicious client."""
        honest = benign_reference(ctx)
        if honest.shape[0] == 0:
            return ctx.own_updates.clone()
        i = self.params.copy_index if self.params.copy_index is not None else mimic_index(honest)
        return repeat_row(honest[min(i, honest.shape[0] - 1)], ctx.num_malicious)
