"""Gaussian noise: a random update, or noise added to the honest one.

Reference: Blanchard et al. 2017, 'Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent' (NeurIPS), the Gaussian Byzantine
vectors of its experiments. Two modes:

- ``random`` (the paper's): :math:`\\tilde u_i \\sim \\mathcal N(0, \\sigma^2 I)`;
- ``additive``: :math:`\\tilde u_i = u_i + \\xi_i`,
  :math:`\\xi_i \\sim \\mathcal N(0, \\sigma^2 I)`, the honestly trained update
  plus noise.

:math:`\\sigma` is ``attack.std``. With ``attack.collude`` all malicious
clients send one row: one noise draw (added to the mean own update in
``additive`` mode). Noise comes from the attack's generator only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import joint_rows, repeat_row
from fedpoison.core.draws import gaussian_like


def gaussian_rows(
    rows: Tensor, *, std: float, additive: bool, collude: bool, generator: torch.Generator
) -> Tensor:
    """Noise rows shaped like ``rows`` (added to them when ``additive``).

    With ``collude`` one noise row is drawn and repeated.
    """
    m, d = rows.shape
    base = joint_rows(rows) if collude else rows
    noise = gaussian_like((1 if collude else m, d), std=std, generator=generator, like=rows)
    if collude:
        noise = repeat_row(noise, m)
    return base + noise if additive else noise


class GaussianParams(AttackParams):
    """Parameters of ``gaussian``."""

    #: ``random``: N(0, std^2) rows; ``additive``: own update plus that noise.
    mode: Literal["random", "additive"] = "random"
    #: Standard deviation of the noise, per coordinate.
    std: float = Field(1.0, gt=0.0)


@register_attack(
    "gaussian",
    description="Send N(0, std^2) noise (mode random) or the own update plus noise (mode additive).",
    params=GaussianParams,
    reference="Blanchard et al. 2017, Byzantine Tolerant Gradient Descent (Krum), Gaussian Byzantine vectors.",
)
class Gaussian(Attack):
    """Gaussian noise update."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL


    def craft(self, ctx: AttackContext) -> Tensor:
        """Noise rows (plus the own updates in ``additive`` mode)."""
        return gaussian_rows(
            ctx.own_updates,
            std=self.params.std,
            additive=self.params.mode == "additive",
            collude=self.collude,
            generator=ctx.generator,
        )
