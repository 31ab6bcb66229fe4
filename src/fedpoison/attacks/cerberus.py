"""Cerberus Poisoning (CerP): a tuned trigger and colluding, bias-controlled backdoor models.

Reference: Lyu et al. 2023, 'Poisoning with Cerberus: Stealthy and Colluded
Backdoor Attack against Federated Learning' (AAAI), Algorithm 1, with the
defaults of the authors' released code (xtLyu/CerP). Exact variant:

1. **Trigger tuning**, once per round, shared by the colluding attackers
   (tuned on the first attacker's data of the round): the trigger's pixels
   inside its ``attack.trigger_size`` square (the configured ``pixel`` or
   ``patch`` trigger is the starting pattern) take gradient steps of size
   ``attack.trigger_lr`` on the global model's cross-entropy towards the
   target, one step per batch (``local.batch_size``) of the attacker's samples
   of other classes, for ``attack.trigger_epochs`` passes. After each step the
   pattern is projected onto the L2 ball of radius ``attack.trigger_bound``
   around the starting pattern and clipped to ``[0, 1]``. Each round's tuning
   starts from the trigger tuned the round before (the ball stays centred on
   the starting pattern).
2. **Bias control**: each attacker first trains the global model on its
   clean data, to :math:`w^{c}` (its poison-free model), then trains on its
   data poisoned with the tuned trigger with the loss

   .. math::

      \\ell(w) = \\mathrm{CE}(w) + \\alpha\\,\\|w - w^{c}\\|_2
                 + \\beta\\,\\frac{1}{|P|}\\sum_{j \\in P}\\cos(w - G, u_j)

   where :math:`\\alpha` = ``attack.alpha`` keeps the poisoned model close to
   the poison-free one (the paper's Frobenius-norm distance, not squared), and
   the last term, weighted by :math:`\\beta` = ``attack.beta``, lowers the
   cosine similarity between this attacker's update and the updates
   :math:`u_j` already trained this round by its colluders :math:`P` (the
   paper's diversity term, so that similarity-based defenses such as FoolsGold
   do not group the attackers). Attackers train one after another within a
   round, in client order; the first has no colluder to compare with.

Defaults are the authors' (``alpha_loss`` and ``beta_loss`` 1e-4, trigger
step 0.1, L2 radius 10, one pass over the data). Compared with the authors'
code: their cosine compares whole models layer by layer (and sums over the
colluders); here it compares updates, which is what similarity-based defenses
see, averaged over the colluders. The update's norm in the cosine is floored
at a tenth of the colluder's (the exact cosine has an unbounded gradient at
the global model, where training starts). Their trigger is tuned on all
attackers' data and added to inputs whose trigger pixels are zeroed, which is
the same as setting those pixels; here the pattern is also kept in ``[0, 1]``
(as BackFed does). The tuned trigger is the attack's state between rounds:
``state_dict`` / ``load_state_dict`` carry it.
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
from fedpoison.core.rows import project_to_ball
from fedpoison.training.local import LocalPlan, StepHooks


class CerberusParams(TriggerParams):
    """Parameters of ``cerberus`` (defaults: the authors' code)."""

    #: Weight of the bias term ||w - w_clean||_2 (the authors' alpha_loss).
    alpha: float = Field(1e-4, ge=0.0)
    #: Weight of the mean cosine similarity to the colluders' updates of the round (the authors' beta_loss).
    beta: float = Field(1e-4, ge=0.0)
    #: Passes of trigger tuning over the attacker's data per round, one step per batch (0: a fixed trigger).
    trigger_epochs: int = Field(1, ge=0)
    #: Step size of trigger tuning (plain gradient steps).
    trigger_lr: float = Field(0.1, gt=0.0)
    #: L2 radius of the ball around the starting pattern that the tuned trigger stays in.
    trigger_bound: float = Field(10.0, ge=0.0)

    @field_validator("trigger")
    @classmethod
    def _square(cls, value: str) -> str:
        if value == "blended":
            raise ValueError("expected 'pixel' or 'patch' (cerberus tunes a square trigger), got 'blended'")
        return value


def tune_trigger(
    model: nn.Module,
    x: Tensor,
    start: Trigger,
    *,
    pattern: Tensor | None = None,
    target: int,
    epochs: int,
    lr: float,
    bound: float,
    batch_size: int,
) -> Trigger:
    """The trigger after gradient steps on the target cross-entropy of ``model``, one per batch of ``x``.

    Tuning starts from ``pattern`` (``start.pattern`` when ``None``) and runs
    ``epochs`` passes over ``x`` in order, in batches of ``batch_size``. Each
    step is :math:`p \\leftarrow \\Pi(p - \\eta\\, m \\odot \\nabla_p \\mathrm{CE})`,
    where :math:`\\Pi` projects onto the L2 ball of radius ``bound`` around
    ``start.pattern`` and then clips to ``[0, 1]``, so only the entries inside
    ``start.mask`` change. ``model`` is used in eval mode and its parameters
    are not changed.
    """
    model.eval()
    mask = start.mask.to(x.device)
    center = start.pattern.to(x.device)
    current = (center if pattern is None else pattern.to(x.device)).clone()
    for _ in range(epochs):
        for lo in range(0, len(x), batch_size):
            xb = x[lo : lo + batch_size]
            p = current.requires_grad_(True)
            labels = torch.full((len(xb),), target, dtype=torch.int64, device=x.device)
            loss = F.cross_entropy(model(torch.where(mask, p, xb)), labels)
            (grad,) = torch.autograd.grad(loss, p)
            with torch.no_grad():
                moved = p - lr * grad * mask
                current = project_to_ball(moved, center, bound).clamp(0.0, 1.0)
    return Trigger(start.mask, current.detach().cpu(), 1.0)


def model_distance(w: Tensor, reference: Tensor) -> Tensor:
    """The L2 distance :math:`\\|w - w^{c}\\|_2` (differentiable; 0 with a zero gradient when equal).

    Example
    -------
    >>> float(model_distance(torch.tensor([3.0, 4.0]), torch.zeros(2)))
    5.0
    """
    return (w - reference).pow(2).sum().clamp_min(1e-24).sqrt()


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
        "trigger square tuned by gradient steps, one per batch, projected onto an L2 ball (trigger_bound) around "
        "the starting pattern and into [0, 1], continued across rounds; loss CE + alpha ||w - w_clean||_2 + "
        "beta mean cos(w - G, colluders' updates of the round); the authors' defaults alpha = beta = 1e-4"
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
        if self.params.trigger_epochs == 0:
            return
        job.spec.load_(job.model, job.global_params)
        keep = job.clean_y != self._target
        if not bool(keep.any()):
            return
        self.trigger = tune_trigger(
            job.model, job.clean_x[keep], self.start, pattern=self.trigger.pattern, target=self._target,
            epochs=self.params.trigger_epochs, lr=self.params.trigger_lr, bound=self.params.trigger_bound,
            batch_size=(job.plan or LocalPlan()).batch_size,
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
                out = out + alpha * model_distance(w, clean_model)
            if beta and peers:
                out = out + beta * mean_cosine(w - job.global_params, peers)
            return out

        update, mean_loss = job.train(x, y, StepHooks(loss=loss))
        self._peers.append(update.detach().clone())
        return update, mean_loss
