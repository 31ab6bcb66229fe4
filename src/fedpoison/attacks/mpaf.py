"""``mpaf``: fake clients pull the global model towards a base model of the attacker's choice.

Reference: Cao & Gong 2022, 'MPAF: Model Poisoning Attacks to Federated
Learning based on Fake Clients' (CVPR Workshops). Every fake client, in every
round it takes part in, sends the same row

.. math:: \\tilde u = \\lambda\\, (w_{\\text{base}} - w_t)

where :math:`w_t` is the current global model, :math:`w_{\\text{base}}` a
low-accuracy base model the attacker fixes for its whole campaign, and
:math:`\\lambda \\gg 1` a scaling factor that makes the pull survive
averaging with the genuine rows. The fake clients need no data and no
training, only the global model that every client receives.

Variant implemented: the base model is a random model,
:math:`w_{\\text{base}} \\sim \\mathcal N(0, \\sigma^2 I)` with
:math:`\\sigma` = ``attack.base_std``, drawn once per run from the run's
attack seed (the same in every round, and after a resume), as the paper's
randomly initialised base model and AIJack's implementation do.
``attack.scale`` is :math:`\\lambda`; its default, :math:`10^6`, is the
paper's order of magnitude for the scaling factor. Compromised genuine
clients running ``mpaf`` send the same row as fake ones.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge, campaign_generator
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import repeat_row
from fedpoison.core.draws import gaussian_like


def mpaf_update(global_params: Tensor, base: Tensor, scale: float) -> Tensor:
    """``(d,)`` MPAF's row :math:`\\lambda (w_{base} - w_t)`.

    Example
    -------
    >>> mpaf_update(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), 10.0)
    tensor([-10., -20.])
    """
    return scale * (base - global_params)


def random_base_model(like: Tensor, *, std: float, generator: torch.Generator) -> Tensor:
    """``(d,)`` a random base model :math:`\\mathcal N(0, std^2 I)` shaped like ``like``."""
    return gaussian_like(like.shape, std=std, generator=generator, like=like)


class MPAFParams(AttackParams):
    """Parameters of ``mpaf``."""

    #: lambda, the factor on (base - global).
    scale: float = Field(1e6, gt=0.0, le=1e12)
    #: Standard deviation of the random base model's coordinates.
    base_std: float = Field(1.0, ge=0.0, le=1e6)


@register_attack(
    "mpaf",
    description="Fake clients send lambda * (base - global) towards a random base model (no data needed).",
    params=MPAFParams,
    reference="Cao & Gong 2022, MPAF: Model Poisoning Attacks to Federated Learning based on Fake Clients (CVPR-W).",
    variant="random base model N(0, base_std^2) fixed per run; every attacker sends lambda * (base - global)",
    tags=("fake_clients",),
)
class MPAF(Attack):
    """Send :math:`\\lambda (w_{base} - w_t)` from every attacking row."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL
    trains = False

    def base_model(self, ctx: AttackContext) -> Tensor:
        """The campaign's base model: the same draw in every round of a run."""
        return random_base_model(ctx.global_params.to(ctx.own_updates.dtype), std=self.params.base_std,
                                 generator=campaign_generator(ctx))

    def craft(self, ctx: AttackContext) -> Tensor:
        """One row, sent by every malicious client."""
        g = ctx.global_params.to(ctx.own_updates)
        row = mpaf_update(g, self.base_model(ctx).to(g), self.params.scale)
        return repeat_row(row, ctx.num_malicious)
