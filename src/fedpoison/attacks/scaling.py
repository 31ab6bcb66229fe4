"""Scaled updates: boosting, model replacement, and norm-bounded scaling.

References and exact variants:

- ``scaling``: Bhagoji et al. 2019, 'Analyzing Federated Learning through an
  Adversarial Lens' (ICML), explicit boosting: the malicious client sends
  :math:`s\\,u_i` with :math:`s` = ``attack.scale``.
- ``model_replacement``: Bagdasaryan et al. 2020, 'How To Backdoor Federated
  Learning' (AISTATS), Sec. 3.2. The attacker trains on backdoored data (the
  BadNets trigger of ``backdoor``, same keys) to a model :math:`X` and sends
  :math:`\\tilde L = \\gamma (X - G) + G`, i.e. the update
  :math:`\\gamma\\,(X - G)`. With :math:`n` participants and server learning
  rate :math:`\\eta`, the server's step :math:`G + \\frac{\\eta}{n}\\sum_i u_i`
  then replaces :math:`G` by about :math:`X` when :math:`\\gamma = n / \\eta`
  (the paper's choice, and the default here). ``attack.scale`` sets
  :math:`\\gamma` explicitly. Non-colluding attackers each assume they are
  alone and use :math:`n / \\eta`; with ``attack.collude`` the :math:`m`
  attackers send their mean update scaled by :math:`n / (\\eta m)` each, so
  together they replace the model once. The derivation assumes equal client
  weights (FedAvg with equal sample counts).
- ``norm_bounded``: Bagdasaryan et al. 2020, constrain-and-scale, reduced to
  its scaling step (no anomaly-loss term): the backdoored update is scaled to
  norm :math:`(1 - \\epsilon) B` so that it passes a norm-clipping defense
  unclipped while being as large as allowed. :math:`B` is
  ``attack.norm_bound`` or, when unset, estimated as the median norm of the
  honest updates the attacker can see (its own updates under ``local``
  knowledge); :math:`\\epsilon` is ``attack.margin``. With
  ``attack.poison_fraction: 0`` it is pure norm-bounded boosting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from fedpoison.attacks.backdoor import TriggerAttack, TriggerParams
from fedpoison.attacks.base import Attack, AttackContext, AttackKind, Knowledge
from fedpoison.attacks.params import AttackParams
from fedpoison.attacks.registry import register_attack
from fedpoison.attacks.update_rows import benign_reference, joint_rows
from fedpoison.core.rows import row_norms


def replacement_scale(num_participants: int, server_lr: float, num_malicious: int = 1, *, collude: bool = False) -> float:
    """Bagdasaryan et al.'s :math:`\\gamma = n / \\eta`, divided by ``m`` for colluding attackers.

    Example
    -------
    >>> replacement_scale(20, 1.0)
    20.0
    >>> replacement_scale(20, 0.5, 4, collude=True)
    10.0
    """
    gamma = num_participants / server_lr
    return gamma / num_malicious if collude else gamma


def scale_to_norm(rows: Tensor, bound: float) -> Tensor:
    """Each row rescaled to L2 norm ``bound``; zero rows stay zero."""
    norms = row_norms(rows)
    factor = bound / norms.clamp_min(1e-30)
    factor = factor.where(norms > 0, factor.new_zeros(()))
    return rows * factor[:, None]


def median_norm(rows: Tensor) -> float:
    """The (lower) median L2 norm of ``rows``."""
    return float(row_norms(rows).median())


class ScalingParams(AttackParams):
    """Parameters of ``scaling``."""

    #: Boost factor applied to the honestly trained update.
    scale: float = Field(10.0, gt=0.0)


@register_attack(
    "scaling",
    description="Boost the own update by attack.scale.",
    params=ScalingParams,
    reference="Bhagoji et al. 2019, Analyzing Federated Learning through an Adversarial Lens, explicit boosting.",
)
class Scaling(Attack):
    """Multiply the honestly trained update by a factor."""

    kind = AttackKind.UPDATE
    knowledge = Knowledge.LOCAL


    def craft(self, ctx: AttackContext) -> Tensor:
        """``scale`` times each own update (or their mean, when colluding)."""
        rows = joint_rows(ctx.own_updates) if self.collude else ctx.own_updates
        return rows * self.params.scale


class ModelReplacementParams(TriggerParams):
    """Parameters of ``model_replacement``: the backdoor trigger plus the scale."""

    #: Bagdasaryan et al. train on all clean samples plus backdoored copies.
    poison_mode: Literal["replace", "append"] = "append"

    #: gamma; by default n / server_lr (divided by the number of attackers when colluding).
    scale: float | None = Field(None, gt=0.0)


@register_attack(
    "model_replacement",
    description="Backdoor training, then scale the update by gamma = n / server_lr so it replaces the model.",
    params=ModelReplacementParams,
    reference=(
        "Bagdasaryan et al. 2020, How To Backdoor Federated Learning (AISTATS), model replacement "
        "gamma = n / eta (or attack.scale), BadNets trigger."
    ),
)
class ModelReplacement(TriggerAttack):
    """Train on backdoored data, then scale the update to replace the global model."""

    kind = AttackKind.BOTH
    knowledge = Knowledge.LOCAL

    params: ModelReplacementParams

    def gamma(self, ctx: AttackContext) -> float:
        """The scale used this round."""
        if self.params.scale is not None:
            return self.params.scale
        return replacement_scale(ctx.num_participants, ctx.server_lr, ctx.num_malicious, collude=self.collude)

    def craft(self, ctx: AttackContext) -> Tensor:
        """``gamma`` times each backdoored update (their mean, when colluding)."""
        rows = joint_rows(ctx.own_updates) if self.collude else ctx.own_updates
        return rows * self.gamma(ctx)


class NormBoundedParams(TriggerParams):
    """Parameters of ``norm_bounded``: the backdoor trigger plus the bound."""

    #: Bagdasaryan et al. train on all clean samples plus backdoored copies.
    poison_mode: Literal["replace", "append"] = "append"

    #: The server's clipping bound B; by default the median visible honest norm.
    norm_bound: float | None = Field(None, gt=0.0)
    #: Send rows of norm (1 - margin) * B.
    margin: float = Field(0.01, ge=0.0, lt=1.0)


@register_attack(
    "norm_bounded",
    description="Backdoor training, then scale the update to just under a norm bound (given or estimated).",
    params=NormBoundedParams,
    reference=(
        "Bagdasaryan et al. 2020, How To Backdoor Federated Learning, constrain-and-scale (scaling step "
        "only): rows of norm (1 - margin) * B, B given or the median visible honest norm."
    ),
)
class NormBounded(TriggerAttack):
    """Backdoor update scaled to just under the server's norm bound."""

    kind = AttackKind.BOTH
    knowledge = Knowledge.LOCAL

    params: NormBoundedParams

    def bound(self, ctx: AttackContext) -> float:
        """``B``: the configured bound, or the median norm of the benign rows the attacker sees."""
        if self.params.norm_bound is not None:
            return self.params.norm_bound
        return median_norm(benign_reference(ctx))

    def craft(self, ctx: AttackContext) -> Tensor:
        """Each (joint, when colluding) row rescaled to norm ``(1 - margin) * B``."""
        rows = joint_rows(ctx.own_updates) if self.collude else ctx.own_updates
        return scale_to_norm(rows, (1.0 - self.params.margin) * self.bound(ctx))
