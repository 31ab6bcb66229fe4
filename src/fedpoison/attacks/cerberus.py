"""Cerberus Poisoning (CerP): a tuned trigger and colluding, bias-controlled backdoor models.

Reference: Lyu et al. 2023, 'Poisoning with Cerberus: Stealthy and Colluded
Backdoor Attack against Federated Learning' (AAAI), Algorithm 1. Exact variant:

1. **Trigger tuning**, once per round, shared by the colluding attackers: the
   trigger's pixels inside its ``attack.trigger_size`` square (the configured
   ``pixel`` or ``patch`` trigger is the starting pattern) take
   ``attack.trigger_steps`` signed-gradient steps of size ``attack.trigger_lr``
   that lower the global model's cross-entropy towards the target on the
   attacker's triggered samples, kept within ``attack.trigger_bound``
   (L-infinity) of the starting pattern and inside ``[0, 1]``.
2. **Bias control**: each attacker first trains the global model on its
   clean data, to :math:`w^{c}` (its poison-free model), then trains on its
   data poisoned with the tuned trigger with the loss

   .. math::

      \\ell(w) = \\mathrm{CE}(w) + \\alpha\\,\\|w - w^{c}\\|_2^2
                 + \\beta\\,\\frac{1}{|P|}\\sum_{j \\in P}\\cos(w - G, u_j)

   where :math:`\\alpha` = ``attack.alpha`` keeps the poisoned model close to
   the poison-free one (the paper's Frobenius-norm bias term), and the last
   term, weighted by :math:`\\beta` = ``attack.beta``, lowers the cosine
   similarity between this attacker's update and the updates :math:`u_j`
   already trained this round by its colluders :math:`P` (the paper's
   diversity term, so that similarity-based defenses such as FoolsGold do not
   group the attackers). Attackers train one after another within a round, in
   client order; the first has no colluder to compare with.

Compared with the paper: the paper does not publish default weights for the
loss terms that carry over to fedpoison's models; the defaults here
(``alpha: 1``, ``beta: 0.4``) are chosen so that each term is of the order of
the cross-entropy on the built-in models. The update's norm in the cosine is
floored at a tenth of the colluder's (the exact cosine has an unbounded
gradient at the global model, where training starts). The tuned trigger is the attack's
state between rounds: ``state_dict`` / ``load_state_dict`` carry it.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn
from torch.nn import functional as F

from fedpoison.attacks.backdoor import (
    Trigger,
    TriggerAttack,
    TriggerParams,
    poison_with_trigger,
    square_trigger,
)
from fedpoison.attacks.base import AttackKind, Knowledge, MaliciousTraining
from fedpoison.attacks.registry import register_attack
from fedpoison.training.local import StepHooks


class CerberusParams(TriggerParams):
    """Parameters of ``cerberus``."""

    #: Weight of the bias term ||w - w_clean||^2.
    alpha: float = Field(1.0, ge=0.0)
    #: Weight of the mean cosine similarity to the colluders' updates of the round.
    beta: float = Field(0.4, ge=0.0)
    #: Signed-gradient steps of trigger tuning per round (0: a fixed trigger).
    trigger_steps: int = Field(10, ge=0)
    #: Step size of trigger tuning.
    trigger_lr: float = Field(0.02, gt=0.0)
    #: L-infinity bound of the tuned trigger around the starting pattern.
    trigger_bound: float = Field(0.5, ge=0.0)

    @field_validator("trigger")
    @classmethod
    def _square(cls, value: str) -> str:
        if value == "blended":
            raise ValueError("expected 'pixel' or 'patch' (cerberus tunes a square trigger), got 'blended'")
        return value


def tune_trigger(
    model: nn.Module, x: Tensor, start: Trigger, *, target: int, steps: int, lr: float, bound: float
) -> Trigger:
    """The trigger after ``steps`` signed-gradient steps on the target cross-entropy of ``model``.

    Only the entries inside ``start.mask`` change; each stays within ``bound``
    of ``start.pattern`` and inside ``[0, 1]``. ``model`` is used in eval mode
    and its parameters are not changed.
    """
    model.eval()
    mask = start.mask.to(x.device)
    pattern = start.pattern.to(x.device).clone()
    lo = (start.pattern.to(x.device) - bound).clamp(0.0, 1.0)
    hi = (start.pattern.to(x.device) + bound).clamp(0.0, 1.0)
    labels = torch.full((len(x),), target, dtype=torch.int64, device=x.device)
    for _ in range(steps):
        p = pattern.requires_grad_(True)
        loss = F.cross_entropy(model(torch.where(mask, p, x)), labels)
        (grad,) = torch.autograd.grad(loss, p)
        with torch.no_grad():
            pattern = torch.minimum(torch.maximum(p - lr * grad.sign() * mask, lo), hi)
    return Trigger(start.mask, pattern.detach().cpu(), 1.0)


def mean_cosine(update: Tensor, others: list[Tensor]) -> Tensor:
    """Mean cosine similarity of ``update`` to each row of ``others`` (0 without others).

    ``update``'s norm is floored at a tenth of each other row's norm, so the
    term stays smooth while the update is still near zero (its first steps
    from the global model), where the exact cosine's gradient is unbounded.
    """
    if not others:
        return update.new_zeros(())
    stacked = torch.stack(others)
    peer_norms = torch.linalg.vector_norm(stacked, dim=1).clamp_min(1e-12)
    own = torch.maximum(torch.linalg.vector_norm(update), 0.1 * peer_norms)
    return ((stacked @ update) / (own * peer_norms)).mean()


@register_attack(
    "cerberus",
    description="CerP: trigger tuned on the global model each round; colluding backdoor models kept close "
    "to their poison-free models and dissimilar to each other.",
    params=CerberusParams,
    reference=(
        "Lyu et al. 2023, Poisoning with Cerberus: Stealthy and Colluded Backdoor Attack against "
        "Federated Learning (AAAI), Algorithm 1."
    ),
    variant=(
        "signed-gradient trigger tuning inside the trigger square (L-inf trigger_bound); loss CE + "
        "alpha ||w - w_clean||^2 + beta mean cos(w - G, colluders' updates of the round)"
    ),
    tags=("stochastic", "stateful"),
)
class Cerberus(TriggerAttack):
    """Cerberus Poisoning: joint trigger and model optimisation by colluding attackers."""

    kind = AttackKind.BOTH
    knowledge = Knowledge.LOCAL
    owns_training = True

    params: CerberusParams

    def __init__(
        self, params: CerberusParams, *, num_classes: int, input_shape: tuple[int, ...], collude: bool = False
    ) -> None:
        super().__init__(params, num_classes=num_classes, input_shape=input_shape, collude=collude)
        extent = square_trigger(
            "patch", tuple(input_shape), size=params.trigger_size, location=params.trigger_location, value=1.0
        )
        # tune every pixel of the square, starting from the configured pattern
        self.start = Trigger(extent.mask, self.trigger.pattern.clone(), 1.0)
        self.trigger = self.start
        self._round: int | None = None
        self._peers: list[Tensor] = []

    def state_dict(self) -> dict[str, Tensor]:
        """The tuned trigger pattern."""
        return {"pattern": self.trigger.pattern.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the tuned trigger pattern."""
        self.trigger = Trigger(self.start.mask, state["pattern"].clone(), 1.0)

    def _new_round(self, job: MaliciousTraining) -> None:
        """Tune the shared trigger on this round's global model and forget last round's peers."""
        self._round, self._peers = job.round, []
        if self.params.trigger_steps == 0:
            return
        job.spec.load_(job.model, job.global_params)
        keep = job.clean_y != self._target
        if not bool(keep.any()):
            return
        self.trigger = tune_trigger(
            job.model, job.clean_x[keep], self.start, target=self._target, steps=self.params.trigger_steps,
            lr=self.params.trigger_lr, bound=self.params.trigger_bound,
        )

    def train(self, job: MaliciousTraining) -> tuple[Tensor, float]:
        """Clean training, then bias- and similarity-controlled backdoor training with the tuned trigger."""
        if job.round != self._round:
            self._new_round(job)
        clean_update, _ = job.train(job.clean_x, job.clean_y, None)
        x, y = poison_with_trigger(
            job.clean_x, job.clean_y, self.trigger, target_class=self._target, fraction=self._fraction,
            generator=job.generator, append=self._append,
        )
        clean_model = job.global_params + clean_update
        peers = list(self._peers)
        alpha, beta = self.params.alpha, self.params.beta

        def loss(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
            w = torch.cat([p.reshape(-1) for p in model.parameters()])
            out = F.cross_entropy(model(xb), yb)
            if alpha:
                out = out + alpha * (w - clean_model).pow(2).sum()
            if beta and peers:
                out = out + beta * mean_cosine(w - job.global_params, peers)
            return out

        update, mean_loss = job.train(x, y, StepHooks(loss=loss))
        self._peers.append(update.detach().clone())
        return update, mean_loss
