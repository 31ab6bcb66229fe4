"""Neurotoxin: backdoor training restricted to the coordinates benign updates change least.

Reference and exact variant: Zhang et al. 2022, 'Neurotoxin: Durable Backdoors
in Federated Learning' (ICML), Algorithm 1, with the mask computed over all
layers at once (the authors' default).

Every client downloads the global model each round, so the attacker knows the
last global update :math:`\\Delta = G_t - G_{t-1}`, its estimate of the
direction benign clients push. It masks out the ``attack.top_k_percent``
percent of coordinates with the largest :math:`|\\Delta_j|` and trains on its
backdoored data (the BadNets trigger of ``backdoor``, same keys) with every
gradient projected onto the remaining coordinates:

.. math:: g \\leftarrow g \\odot m,\\qquad m_j = [\\,|\\Delta_j| \\text{ not among the top } k\\%\\,]

After each SGD step the masked coordinates are reset to the global model's
values, so weight decay or momentum cannot move them either: the sent update
is exactly zero outside the mask. Benign clients keep changing the top
coordinates, and rarely touch the ones the backdoor lives in, so it lasts
after the attacker stops. ``attack.norm_bound`` adds the paper's PGD step
(projection onto an L2 ball around the global model after each step and at
the end, as ``pgd_backdoor``); unset, there is none. In the first round there
is no previous global model and the mask keeps every coordinate.

``attack.mask_source: clean_gradient`` takes the benign estimate the authors'
released code uses instead: the gradient of the global model's loss on the
attacker's own clean data, :math:`m_j = [\\,|\\nabla_j L(G_t; D_{clean})|
\\text{ not among the top } k\\%\\,]` (their code sums it over clean data of
30 clients; this attacker only has its own). Unlike :math:`\\Delta`, it does
not contain the attackers' own update of the round before.

The default ``top_k_percent: 5`` is the authors' released Neurotoxin command
(``--gradmask_ratio 0.95``: the bottom 95% of coordinates are kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from fedpoison.attacks.backdoor import TriggerAttack, TriggerParams
from fedpoison.attacks.base import AttackKind, Knowledge, MaliciousTraining
from fedpoison.attacks.pgd_backdoor import ball_projector, parameter_views
from fedpoison.attacks.registry import register_attack
from fedpoison.core.rows import bottom_k_mask, project_to_ball
from fedpoison.models.paramspec import ParamSpec
from fedpoison.training.local import StepHooks


class NeurotoxinParams(TriggerParams):
    """Parameters of ``neurotoxin``."""

    #: Bagdasaryan et al.'s batches of clean plus backdoored copies, as the authors' baseline.
    poison_mode: Literal["replace", "append"] = "append"
    #: Percent of coordinates (largest |benign estimate|) the update must not touch.
    top_k_percent: float = Field(5.0, ge=0.0, lt=100.0)
    #: The benign estimate: ``global_update`` (G_t - G_(t-1), the paper's Algorithm 1) or
    #: ``clean_gradient`` (the global model's gradient on the attacker's clean data, the authors' code).
    mask_source: Literal["global_update", "clean_gradient"] = "global_update"
    #: Optional PGD radius around the global model (L2); unset: no projection.
    norm_bound: float | None = Field(None, gt=0.0)


def neurotoxin_mask(global_params: Tensor, previous_params: Tensor | None, top_k_percent: float) -> Tensor:
    """``(d,)`` bool: the coordinates outside the top ``k`` percent of ``|G_t - G_{t-1}|``.

    Every coordinate is kept when there is no previous global model.

    Example
    -------
    >>> neurotoxin_mask(torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([1.0, 0.0, 1.5, 1.0]), 50.0).tolist()
    [True, False, False, True]
    """
    if previous_params is None:
        return torch.ones_like(global_params, dtype=torch.bool)
    return bottom_k_mask(global_params - previous_params, top_k_percent / 100.0)


def clean_gradient(model: nn.Module, spec: ParamSpec, params: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """``(d,)`` the gradient at ``params`` of the mean cross-entropy of ``model`` on ``(x, y)``.

    The model is evaluated in eval mode, so the result does not depend on
    dropout draws. ``model``'s parameters are overwritten with ``params``.
    """
    spec.load_(model, params)
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        F.cross_entropy(model(x), y).backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
    out = torch.cat([g.reshape(-1) for g in grads]).detach().float()
    model.zero_grad(set_to_none=True)
    return out


def masker(masks: list[Tensor], centers: list[Tensor]) -> StepHooks:
    """Hooks that zero the gradients outside ``masks`` and pin those coordinates at ``centers``."""

    def grads(gs: list[Tensor]) -> list[Tensor]:
        return [g * m for g, m in zip(gs, masks, strict=True)]

    def pin(params: Sequence[Tensor]) -> None:
        for p, m, c in zip(params, masks, centers, strict=True):
            p.copy_(torch.where(m, p, c))

    return StepHooks(grads=grads, after_step=pin)


@register_attack(
    "neurotoxin",
    description="Backdoor training projected onto the coordinates the last global update changed least "
    "(durable backdoor).",
    params=NeurotoxinParams,
    reference="Zhang et al. 2022, Neurotoxin: Durable Backdoors in Federated Learning (ICML), Algorithm 1.",
    variant=(
        "mask = coordinates outside the top_k_percent largest |G_t - G_(t-1)| over all layers (mask_source: "
        "clean_gradient: |gradient of G_t's loss on the attacker's clean data|, the authors' code); gradients "
        "masked and masked coordinates pinned to G_t each step; optional PGD norm_bound; BadNets trigger"
    ),
    tags=("stochastic",),
)
class Neurotoxin(TriggerAttack):
    """Backdoor training on the coordinates benign clients rarely change."""

    kind = AttackKind.BOTH
    knowledge = Knowledge.LOCAL
    owns_training = True

    params: NeurotoxinParams

    def mask(self, job: MaliciousTraining) -> Tensor:
        """The ``(d,)`` bool mask of the round."""
        k = self.params.top_k_percent
        if self.params.mask_source == "clean_gradient":
            grad = clean_gradient(job.model, job.spec, job.global_params, job.clean_x, job.clean_y)
            return bottom_k_mask(grad, k / 100.0)
        return neurotoxin_mask(job.global_params, job.previous_params, k)

    def train(self, job: MaliciousTraining) -> tuple[Tensor, float]:
        """Masked (and optionally projected) backdoor training; zero outside the mask."""
        mask = self.mask(job)
        masks = parameter_views(job.spec.unflatten(mask))
        centers = parameter_views(job.spec.unflatten(job.global_params))
        hooks = masker(masks, centers)
        bound = self.params.norm_bound
        if bound is not None:
            pin, project = hooks.after_step, ball_projector(centers, bound)
            assert pin is not None

            def pin_then_project(params: Sequence[Tensor]) -> None:
                pin(params)
                project(params)

            hooks = StepHooks(grads=hooks.grads, after_step=pin_then_project)
        update, loss = job.train(job.x, job.y, hooks)
        if bound is not None:
            update = project_to_ball(update, torch.zeros_like(update), bound)
        return update, loss
