"""Backdoor training by projected gradient descent into an L2 ball around the global model.

Reference and exact variant: Wang et al. 2020, 'Attack of the Tails: Yes, You
Really Can Backdoor Federated Learning' (NeurIPS), the PGD attack (Sec. 4),
after Sun et al. 2019, 'Can You Really Backdoor Federated Learning?' (whose
norm-difference clipping defense it is built to pass).

The malicious client trains on its poisoned data with the honest clients' SGD
(same learning rate, epochs and batches), and every ``attack.project_every``
steps, and once more at the end, projects its model onto the L2 ball of
radius :math:`\\epsilon / \\gamma` around the global model :math:`G`:

.. math:: w \\leftarrow G + (w - G)\\,\\min\\left(1, \\frac{\\epsilon/\\gamma}{\\|w - G\\|_2}\\right)

and sends :math:`\\gamma\\,(w - G)`, whose norm is at most :math:`\\epsilon`
(Wang et al.'s "PGD with model replacement" when :math:`\\gamma > 1`; plain PGD
when :math:`\\gamma` = ``attack.scale`` = 1, the default). :math:`\\epsilon` is
``attack.radius`` or, when unset, the norm of the update the attacker gets by
training the same global model on its own clean data: a local-knowledge
estimate of what an honest update looks like, and of the bound a
norm-clipping server would choose (one extra local training per round).
Wang et al.'s code takes :math:`\\epsilon` as an absolute number, set to the
norm bound of the clipping defense it attacks (the attacker knows the bound);
set ``attack.radius`` for that threat model. The default ball is binding for
a backdoor: from a fresh model the unconstrained backdoor update is about
twice the clean one's norm, so under FedAvg this attack plants its backdoor
more slowly than the unconstrained ``backdoor``.

Data (``attack.data_mode``):

- ``trigger`` (default): the BadNets trigger of ``backdoor`` (same keys);
- ``edge_case``: no trigger. The backdoor is a set of rare natural inputs of
  ``attack.source_class`` relabelled to ``attack.target_class``. fedpoison's
  datasets have no separate edge-case set (Wang et al. take e.g. Southwest
  airplanes from outside CIFAR-10), so *low density* is defined on the data
  itself: within a set of samples, the tail of class :math:`s` is the
  :math:`\\lceil q\\,n_s \\rceil` samples of class :math:`s` farthest (L2, in
  input space) from the mean of the class-:math:`s` samples of that set, with
  :math:`q` = ``attack.edge_fraction``. The attacker relabels the tail of its
  own data (``attack.poison_fraction`` does not apply; ``poison_mode: append``
  adds relabelled copies instead), and attack success rate is measured on the
  tail of the test set's class :math:`s`: the share predicted as the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from fedpoison.attacks.backdoor import TriggerAttack, TriggerParams
from fedpoison.attacks.base import AttackKind, Knowledge, MaliciousTraining
from fedpoison.attacks.params import check_class
from fedpoison.attacks.registry import register_attack
from fedpoison.core.rows import project_to_ball, row_norms
from fedpoison.training.local import StepHooks


def ball_projector(centers: list[Tensor], radius: float, every: int = 1) -> Callable[[Sequence[Tensor]], None]:
    """An ``after_step`` hook: every ``every`` steps, project the parameters onto the L2 ball.

    The ball is centred on ``centers`` (one tensor per parameter, in
    ``model.parameters()`` order); its radius is measured over all parameters
    together.
    """
    count = [0]

    def project(params: Sequence[Tensor]) -> None:
        count[0] += 1
        if count[0] % every:
            return
        sq = sum(((p - c) ** 2).sum() for p, c in zip(params, centers, strict=True))
        norm = float(torch.as_tensor(sq).sqrt())
        if norm > radius:
            factor = radius / norm
            for p, c in zip(params, centers, strict=True):
                p.copy_(c + (p - c) * factor)

    return project


def parameter_views(spec_unflatten: dict[str, Tensor]) -> list[Tensor]:
    """The per-parameter tensors of an unflattened vector, in parameter order."""
    return list(spec_unflatten.values())


def tail_mask(x: Tensor, y: Tensor, source_class: int, fraction: float) -> Tensor:
    """``(N,)`` bool: the ``ceil(fraction * n_s)`` class-``s`` samples farthest from their class mean.

    Distances are L2 in input space, to the mean of the class-``s`` samples of
    ``x`` itself; ties are broken by :func:`torch.topk`. No sample is chosen
    when ``x`` holds none of class ``s``.

    Example
    -------
    >>> x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [5.0]])
    >>> tail_mask(x, torch.tensor([0, 0, 0, 0, 1]), 0, 0.25).tolist()
    [False, False, False, True, False]
    """
    mask = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    members = torch.nonzero(y == source_class).flatten()
    k = math.ceil(fraction * members.numel())
    if k == 0:
        return mask
    flat = x[members].reshape(members.numel(), -1).float()
    dist = row_norms(flat - flat.mean(dim=0, keepdim=True))
    mask[members[torch.topk(dist, k).indices]] = True
    return mask


class PGDBackdoorParams(TriggerParams):
    """Parameters of ``pgd_backdoor``."""

    #: Bagdasaryan/Wang et al. train on all clean samples plus backdoored copies.
    poison_mode: Literal["replace", "append"] = "append"
    #: epsilon, the L2 radius of the sent update; by default the norm of the attacker's clean update.
    radius: float | None = Field(None, gt=0.0)
    #: gamma: project onto radius / gamma, then send gamma times the update (1: plain PGD).
    scale: float = Field(1.0, gt=0.0)
    #: Project every this many SGD steps (and always after the last one); Wang et al. project every 10.
    project_every: int = Field(10, ge=1)
    #: ``trigger`` (BadNets trigger) or ``edge_case`` (relabel the low-density tail of a class).
    data_mode: Literal["trigger", "edge_case"] = "trigger"
    #: ``edge_case``: the class whose tail is relabelled.
    source_class: int = Field(1, ge=0)
    #: ``edge_case``: share of the class's samples, farthest from its mean, that form the tail.
    edge_fraction: float = Field(0.2, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _source_is_not_target(self) -> PGDBackdoorParams:
        if self.data_mode == "edge_case" and self.source_class == self.target_class:
            raise ValueError(
                f"attack.source_class: expected a class other than attack.target_class ({self.target_class}), "
                f"got {self.source_class}"
            )
        return self


def clean_norm(job: MaliciousTraining) -> float:
    """The norm of the update the attacker's clean data gives (its estimate of an honest norm)."""
    update, _ = job.train(job.clean_x, job.clean_y, None)
    return float(row_norms(update[None])[0])


@register_attack(
    "pgd_backdoor",
    description="Backdoor training with PGD into an L2 ball around the global model, optionally scaled; "
    "trigger or edge-case data.",
    params=PGDBackdoorParams,
    reference=(
        "Wang et al. 2020, Attack of the Tails: Yes, You Really Can Backdoor Federated Learning (NeurIPS), "
        "PGD (with model replacement when attack.scale > 1); Sun et al. 2019, Can You Really Backdoor "
        "Federated Learning?"
    ),
    variant=(
        "project onto radius eps/gamma around the global model every project_every steps and at the end, "
        "send gamma times the update; eps = attack.radius or the attacker's clean-update norm; edge_case = "
        "the edge_fraction of source_class samples farthest from their class mean, relabelled"
    ),
    tags=("stochastic",),
)
class PGDBackdoor(TriggerAttack):
    """Backdoor training constrained to an L2 ball around the global model."""

    kind = AttackKind.BOTH
    knowledge = Knowledge.LOCAL
    owns_training = True

    params: PGDBackdoorParams

    def __init__(
        self, params: PGDBackdoorParams, *, num_classes: int, input_shape: tuple[int, ...], collude: bool = False
    ) -> None:
        super().__init__(params, num_classes=num_classes, input_shape=input_shape, collude=collude)
        self._source = check_class("attack.source_class", params.source_class, num_classes)

    def poison(
        self, x: Tensor, y: Tensor, *, client_id: int, slot: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """``trigger``: BadNets poisoning; ``edge_case``: the class tail relabelled (or appended relabelled)."""
        if self.params.data_mode == "trigger":
            return super().poison(x, y, client_id=client_id, slot=slot, generator=generator)
        tail = tail_mask(x, y, self._source, self.params.edge_fraction)
        if self._append:
            return torch.cat([x, x[tail]]), torch.cat([y, torch.full_like(y[tail], self._target)])
        y_out = y.clone()
        y_out[tail] = self._target
        return x.clone(), y_out

    def backdoor_inputs(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
        """``edge_case``: the test tail of the source class, unchanged; ``trigger``: the stamped test set."""
        if self.params.data_mode == "trigger":
            return super().backdoor_inputs(x, y)
        chosen = tail_mask(x, y, self._source, self.params.edge_fraction)
        return x[chosen], chosen

    def radius(self, job: MaliciousTraining) -> float:
        """epsilon: ``attack.radius`` or the norm of the attacker's clean update."""
        return self.params.radius if self.params.radius is not None else clean_norm(job)

    def train(self, job: MaliciousTraining) -> tuple[Tensor, float]:
        """Projected backdoor training; the update has norm at most epsilon."""
        inner = self.radius(job) / self.params.scale
        centers = parameter_views(job.spec.unflatten(job.global_params))
        hooks = StepHooks(after_step=ball_projector(centers, inner, self.params.project_every))
        update, loss = job.train(job.x, job.y, hooks)
        update = project_to_ball(update, torch.zeros_like(update), inner)
        return update * self.params.scale, loss
