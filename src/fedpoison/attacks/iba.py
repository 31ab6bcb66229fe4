"""IBA: a generator of input-specific, bounded triggers, with a constrained update.

Reference: Nguyen, Nguyen, Le, Tran, Tran, Wong and Doan, 'IBA: Towards
Irreversible Backdoor Attacks in Federated Learning', NeurIPS 2023.

Exact variant. In each round it attacks, each attacking client, in slot order:

1. **generator training**: the trigger generator :math:`G` (one for the
   attacker, shared by its clients) is trained with Adam (``generator_lr``)
   for ``generator_epochs`` passes over the client's inputs so that the frozen
   global model classifies :math:`\\mathrm{clip}(x + \\varepsilon G(x))` as
   ``target_class``; :math:`G` ends in ``tanh``, so every input gets its own
   perturbation with :math:`\\lVert\\delta(x)\\rVert_\\infty \\le \\varepsilon`
   (``eps``); see :func:`~fedpoison.attacks.learned_triggers.train_generator`;
2. **local training**: ``poison_fraction`` of its samples replaced by their
   triggered copies, relabelled, then the honest clients' local SGD;
3. **update constraint**: the update is projected onto the L2 ball of radius
   ``update_bound`` around the global model (the PGD projection of Wang et
   al. 2020, on whose code IBA's builds), so it stays close to the honest ones.

Defaults: ``eps`` 0.3 and ``generator_lr`` 0.01 are the authors' MNIST
settings. IBA's generator is a U-Net / MNIST auto-encoder trained up to 100
epochs a round; here a 3-layer conv net of ``generator_width`` channels and 5
epochs, scaled down for CPUs. ``update_bound`` 2.0 is the radius we take for
28x28 grey images (``null`` turns the projection off).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from fedpoison.attacks.base import Attack, AttackKind, Knowledge, MaliciousTraining
from fedpoison.attacks.learned_triggers import GeneratedTrigger, data_range, make_generator, train_generator
from fedpoison.attacks.params import TargetParams, check_class
from fedpoison.attacks.registry import register_attack
from fedpoison.core.draws import random_subset
from fedpoison.core.rows import clip_factors, row_norms


class IBAParams(TargetParams):
    """Parameters of ``iba``."""

    #: L-infinity bound of each input's perturbation (IBA, MNIST: 0.3).
    eps: float = Field(0.3, gt=0.0)
    #: Adam learning rate of the generator (IBA: 0.01).
    generator_lr: float = Field(0.01, gt=0.0)
    #: Passes of generator training over the client's data per round (IBA: up to 100; scaled down for CPUs).
    generator_epochs: int = Field(5, ge=1)
    #: Channels (images) or hidden units (vectors) of the generator.
    generator_width: int = Field(16, ge=1)
    #: Seed of the generator's initial weights (the same for every client).
    generator_seed: int = Field(0, ge=0)
    #: Mini-batch size of the generator training.
    batch_size: int = Field(64, ge=1)
    #: L2 radius of the projected update (PGD, Wang et al. 2020); ``null`` for none.
    update_bound: float | None = Field(2.0, gt=0.0)


def project_update(update: Tensor, bound: float | None) -> Tensor:
    """``update`` scaled onto the L2 ball of radius ``bound`` (unchanged inside it, or for ``None``)."""
    if bound is None:
        return update
    return update * clip_factors(row_norms(update[None]), bound)[0]


@register_attack(
    "iba",
    description="IBA: a generator learns input-specific triggers bounded in L-inf; update projected onto an L2 ball.",
    params=IBAParams,
    reference="Nguyen et al. 2023, IBA: Towards Irreversible Backdoor Attacks in Federated Learning (NeurIPS).",
    variant=(
        "one shared conv generator G, trained with Adam each attacking round so the frozen global model sends "
        "clip(x + eps*tanh-output) to the target; local SGD on poison_fraction triggered samples; update "
        "projected onto ||u||_2 <= update_bound; generator_epochs 5 and a 3-layer generator (scaled for CPUs)"
    ),
    tags=("stateful",),
)
class IBA(Attack):
    """Irreversible backdoor attack: learned per-input triggers and a norm-constrained update."""

    kind = AttackKind.DATA
    knowledge = Knowledge.LOCAL
    owns_training = True
    params: IBAParams

    def __init__(
        self, params: IBAParams, *, num_classes: int, input_shape: tuple[int, ...], collude: bool = False
    ) -> None:
        super().__init__(params, num_classes=num_classes, input_shape=input_shape, collude=collude)
        self._target = check_class("attack.target_class", params.target_class, num_classes)
        net = make_generator(tuple(input_shape), width=params.generator_width,
                             generator=torch.Generator().manual_seed(params.generator_seed))
        self.trigger = GeneratedTrigger(net, params.eps, -float("inf"), float("inf"))

    @property
    def target_class(self) -> int:
        """The backdoor's target class."""
        return self._target

    def train(self, job: MaliciousTraining) -> tuple[Tensor, float]:
        """Train the generator, train on triggered samples, project the update."""
        p = self.params
        x0, y0 = job.clean_x, job.clean_y
        low, high = data_range(x0)
        self.trigger.net.to(x0.device)
        self.trigger.low, self.trigger.high = low, high
        train_generator(self.trigger, job.model, job.spec, job.global_params, x0, self._target,
                        epochs=p.generator_epochs, lr=p.generator_lr, batch_size=p.batch_size, generator=job.generator)
        n = len(y0)
        idx = random_subset(n, round(p.poison_fraction * n), generator=job.generator, device=y0.device)
        bad_x, bad_y = self.trigger(x0[idx]), torch.full_like(y0[idx], self._target)
        if p.poison_mode == "append":
            x, y = torch.cat([x0, bad_x]), torch.cat([y0, bad_y])
        else:
            x, y = x0.clone(), y0.clone()
            x[idx], y[idx] = bad_x, bad_y
        update, loss = job.train(x, y, None)
        return project_update(update, p.update_bound), loss

    def backdoor(self, x: Tensor) -> Tensor:
        """Test inputs with their generated triggers."""
        self.trigger.net.to(x.device)
        return self.trigger(x)

    def state_dict(self) -> dict[str, Tensor]:
        """The generator's weights and the data range."""
        out = {f"net.{k}": v.detach().clone() for k, v in self.trigger.net.state_dict().items()}
        out["range"] = torch.tensor([self.trigger.low, self.trigger.high])
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.trigger.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        low, high = state["range"].tolist()
        self.trigger.low, self.trigger.high = float(low), float(high)
