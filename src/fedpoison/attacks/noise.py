"""Gaussian noise: a random update, noise added to the honest one, or a fitted Gaussian.

References: Blanchard et al. 2017, 'Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent' (NeurIPS), the Gaussian Byzantine
vectors of its experiments; Fang et al. 2020, 'Local Model Poisoning Attacks
to Byzantine-Robust Federated Learning' (USENIX Security), Sec. 5.1, the
Gaussian attack. Three modes:

- ``random`` (Blanchard et al.'s): :math:`\\tilde u_i \\sim \\mathcal N(0, \\sigma^2 I)`;
- ``additive``: :math:`\\tilde u_i = u_i + \\xi_i`,
  :math:`\\xi_i \\sim \\mathcal N(0, \\sigma^2 I)`, the honestly trained update
  plus noise;
- ``fitted`` (Fang et al.'s): per coordinate :math:`j`, the mean
  :math:`\\mu_j` and standard deviation :math:`\\sigma_j` of the round's
  before-attack updates, and
  :math:`\\tilde u_{ij} \\sim \\mathcal N(\\mu_j, \\sigma_j^2)` independently.
  Fang et al. fit "the before-attack local models on all worker devices":
  when the threat model shows the honest updates (``attack.knowledge``
  omniscient or defense_aware) the fit is over the honest and the own
  updates, the paper's attack; under ``local`` knowledge it is over the own
  updates only. Fang et al. fit the *local models* :math:`w_{Re} + u_i`;
  shifting by the global model :math:`w_{Re}` gives the same draw in update
  space. ``attack.std`` is not used.

:math:`\\sigma` is ``attack.std``. With ``attack.collude`` all malicious
clients send one row: one noise draw (added to the mean own update in
``additive`` mode, to the fitted mean in ``fitted`` mode). Noise comes from
the attack's generator only.
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
from fedpoison.core.rows import coordinate_mean_std


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


def fitted_gaussian_rows(rows: Tensor, *, collude: bool, generator: torch.Generator,
                         count: int | None = None) -> Tensor:
    """``(count, d)`` draws from the per-coordinate Gaussian fitted to ``rows`` (Fang et al.'s Gaussian attack).

    ``count`` defaults to the number of ``rows``.

    Example
    -------
    >>> own = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # mean (2, 0), std (sqrt 2, 0)
    >>> out = fitted_gaussian_rows(own, collude=False, generator=torch.Generator().manual_seed(0))
    >>> out.shape, out[:, 1].tolist()
    (torch.Size([2, 2]), [0.0, 0.0])
    """
    m, d = rows.shape
    m = m if count is None else count
    mean, std = coordinate_mean_std(rows)
    z = gaussian_like((1 if collude else m, d), std=1.0, generator=generator, like=rows)
    out = mean + z * std
    return repeat_row(out[0], m) if collude else out


class GaussianParams(AttackParams):
    """Parameters of ``gaussian``."""

    #: ``random``: N(0, std^2) rows; ``additive``: own update plus that noise;
    #: ``fitted``: N(mu_j, sigma_j^2) per coordinate, fitted to the own updates (Fang et al.).
    mode: Literal["random", "additive", "fitted"] = "random"
    #: Standard deviation of the noise, per coordinate.
    std: float = Field(1.0, gt=0.0)


@register_attack(
    "gaussian",
    description=("Send N(0, std^2) noise (mode random), the own update plus noise (mode additive), or draws "
                 "from a Gaussian fitted to the own updates (mode fitted)."),
    params=GaussianParams,
    reference=("Blanchard et al. 2017, Byzantine Tolerant Gradient Descent (Krum), Gaussian Byzantine vectors; "
               "Fang et al. 2020 (USENIX Security) Sec. 5.1, Gaussian attack (mode fitted)."),
)
class Gaussian(Attack):
    """Gaussian noise update."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL


    def craft(self, ctx: AttackContext) -> Tensor:
        """Noise rows (plus the own updates in ``additive`` mode; fitted to the updates seen in ``fitted`` mode)."""
        if self.params.mode == "fitted":
            seen = ctx.own_updates if ctx.honest_updates is None else torch.cat([ctx.honest_updates, ctx.own_updates])
            return fitted_gaussian_rows(seen, collude=self.collude, generator=ctx.generator,
                                        count=ctx.own_updates.shape[0])
        return gaussian_rows(
            ctx.own_updates,
            std=self.params.std,
            additive=self.params.mode == "additive",
            collude=self.collude,
            generator=ctx.generator,
        )
