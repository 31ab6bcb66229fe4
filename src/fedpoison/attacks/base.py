"""The attack contract.

An attack may poison a malicious client's data before local training
(:meth:`Attack.poison`), craft the update rows the malicious clients send
(:meth:`Attack.craft`), or both (model replacement trains on backdoored data and
then scales the result). The round loop calls both hooks for every attack; the
defaults are the identity, so a data attack overrides only ``poison`` and an
update attack only ``craft``.

What the attacker may see is fixed by the threat model
(``attack.knowledge``): :class:`AttackContext` carries ``honest_updates`` only
for ``omniscient`` and ``defense_aware`` attackers, and ``defense`` only for
``defense_aware`` ones. Ground truth about other clients never reaches an
attack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torch import nn

    from fedpoison.defenses.base import AggregationRule, RoundContext
    from fedpoison.models.paramspec import ParamSpec
    from fedpoison.training.local import LocalPlan, StepHooks


class Knowledge(StrEnum):
    """What the attacker knows, from least to most."""

    LOCAL = "local"
    OMNISCIENT = "omniscient"
    DEFENSE_AWARE = "defense_aware"

    @property
    def level(self) -> int:
        """Order of the levels: local < omniscient < defense_aware."""
        return list(Knowledge).index(self)


class AttackKind(StrEnum):
    """Whether an attack changes data, updates, or both."""

    DATA = "data"
    UPDATE = "update"
    BOTH = "data+update"


@dataclass(frozen=True)
class AttackContext:
    """What a round's malicious clients know when they craft their rows.

    Attributes
    ----------
    round:
        Zero-based round index.
    own_updates:
        ``(m, d)`` the malicious clients' own updates, trained on their own
        (possibly poisoned) data from the current global model. Zero rows for
        attacks that skip training.
    own_weights:
        ``(m,)`` the malicious clients' sample counts.
    honest_updates:
        ``(k, d)`` this round's honest updates, for omniscient attackers only.
    honest_weights:
        ``(k,)`` their sample counts, for omniscient attackers only.
    num_participants:
        ``n``, the number of rows the server will receive this round.
    global_params:
        ``(d,)`` flat global model.
    server_lr:
        The server learning rate (model replacement scales by it).
    defense:
        The server's defense (a callable ``(updates, weights, ctx)``), for
        ``defense_aware`` attackers only.
    defense_ctx:
        The round context to call ``defense`` with, for ``defense_aware`` only.
    previous_updates:
        ``(m, d)`` what each malicious client sent last time it took part, or
        zeros; used by stale free-riders.
    generator:
        The attack's own seeded generator, fresh each round.
    own_fake:
        ``(m,)`` bool: which of the attacker's rows come from fake clients
        (``attack.fake_clients``), whose own updates are zero rows since they
        own no data. ``None`` means none are fake.
    campaign_generator:
        A generator seeded by the run only (not the round): it draws the same
        bits every round, for what an attacker fixes once for its whole
        campaign (MPAF's base model, PoisonedFL's sign vector) without keeping
        state. ``None`` outside a run; attacks then fall back to
        :func:`campaign_generator`.
    """

    round: int
    own_updates: Tensor
    own_weights: Tensor
    honest_updates: Tensor | None
    honest_weights: Tensor | None
    num_participants: int
    global_params: Tensor
    server_lr: float
    generator: torch.Generator
    defense: AggregationRule | None = None
    defense_ctx: RoundContext | None = None
    previous_updates: Tensor | None = None
    own_fake: Tensor | None = None
    campaign_generator: torch.Generator | None = None

    @property
    def num_malicious(self) -> int:
        """``m``, the number of malicious rows to craft."""
        return int(self.own_updates.shape[0])

    def fake_mask(self) -> Tensor:
        """``(m,)`` bool: which rows are fake clients' (all False without fake clients)."""
        if self.own_fake is None:
            return torch.zeros(self.num_malicious, dtype=torch.bool, device=self.own_updates.device)
        return self.own_fake.to(device=self.own_updates.device, dtype=torch.bool)


def campaign_generator(ctx: AttackContext, salt: int = 0) -> torch.Generator:
    """A generator for the attacker's once-per-campaign draws: the same bits in every round of a run.

    ``ctx.campaign_generator``'s state (copied, so the context is not
    consumed) when the round loop provides it, else a generator seeded from
    ``salt`` alone (outside a run, e.g. in contract checks). ``salt`` separates
    draws of different purposes.
    """
    g = torch.Generator()
    if ctx.campaign_generator is not None:
        g.set_state(ctx.campaign_generator.get_state())
        if salt:
            g.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)) + salt)
    else:
        g.manual_seed(0x5EED + salt)
    return g


@dataclass(frozen=True)
class MaliciousTraining:
    """One malicious client's local training, for attacks that train themselves.

    The round loop hands this to :meth:`Attack.train` instead of training the
    client with the honest engine when the attack sets ``owns_training``.

    Attributes
    ----------
    round:
        Zero-based round index.
    client_id, slot:
        The client, and its index among the malicious clients.
    clean_x, clean_y:
        The client's own, unpoisoned samples.
    x, y:
        What :meth:`Attack.poison` made of them (cached across rounds).
    global_params:
        ``(d,)`` the global model the client starts from.
    previous_params:
        ``(d,)`` the global model of the round before, or ``None`` in the first
        round (every client downloads the global model each round, so this is
        local knowledge).
    train:
        ``train(x, y, hooks) -> (update, mean loss)``: the honest clients' SGD
        (same plan, same batch draws) from ``global_params`` on ``(x, y)``,
        changed by :class:`~fedpoison.training.local.StepHooks`.
    model:
        A scratch copy of the model architecture (its parameters may be
        overwritten), e.g. to evaluate the global model while tuning a trigger.
    spec:
        The model's flat layout.
    generator:
        The attack's own generator for this client and round.
    plan:
        The honest clients' local SGD settings (``local.*``), for attacks that
        run a training stage of their own (Chameleon's classifier stage).
    """

    round: int
    client_id: int
    slot: int
    clean_x: Tensor
    clean_y: Tensor
    x: Tensor
    y: Tensor
    global_params: Tensor
    previous_params: Tensor | None
    train: Callable[[Tensor, Tensor, StepHooks | None], tuple[Tensor, float]]
    model: nn.Module
    spec: ParamSpec
    generator: torch.Generator
    plan: LocalPlan | None = None


class Attack:
    """Base class of every attack: identity hooks, overridden as needed.

    Subclasses set the class attributes, take their validated params model in
    ``__init__``, and override :meth:`poison`, :meth:`craft` or both.
    """

    kind: ClassVar[AttackKind] = AttackKind.UPDATE
    knowledge: ClassVar[Knowledge] = Knowledge.LOCAL
    #: False for attacks that skip local training (free riders, pure noise).
    trains: ClassVar[bool] = True
    #: True for attacks that run their clients' local training themselves (:meth:`train`).
    owns_training: ClassVar[bool] = False

    def __init__(
        self, params: Any, *, num_classes: int, input_shape: tuple[int, ...], collude: bool = False
    ) -> None:
        """Keep the validated params and the facts every attack may need.

        Subclasses that need more set-up override this and call ``super().__init__``
        or set the same attributes.
        """
        self.params = params
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.collude = collude

    def poison(
        self, x: Tensor, y: Tensor, *, client_id: int, slot: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Return poisoned copies of one malicious client's data.

        ``slot`` is the client's index among the malicious clients (DBA gives
        each slot its own trigger piece). Must not mutate ``x`` or ``y``.
        """
        return x, y

    def train(self, job: MaliciousTraining) -> tuple[Tensor, float]:
        """One malicious client's ``(d,)`` update and mean loss, for attacks with ``owns_training``.

        The default is the honest training on the poisoned data.
        """
        return job.train(job.x, job.y, None)

    def craft(self, ctx: AttackContext) -> Tensor:
        """Return the ``(m, d)`` rows the malicious clients send."""
        return ctx.own_updates

    def backdoor(self, x: Tensor) -> Tensor | None:
        """Stamp the full trigger on test inputs, for attack success rate.

        ``None`` for attacks without a trigger.
        """
        return None

    def backdoor_inputs(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
        """The test inputs attack success rate is measured on, and which test samples they come from.

        Returns ``(inputs, chosen)`` with ``chosen`` an ``(N,)`` bool mask over
        ``x`` and ``inputs`` one row per chosen sample, or ``None`` without a
        backdoor. The default stamps :meth:`backdoor` on every test sample not
        of the target class; attacks whose backdoor lives in rare natural inputs
        (edge cases) choose those samples instead.
        """
        target = self.target_class
        if target is None:
            return None
        chosen = y != target
        triggered = self.backdoor(x[chosen])
        return None if triggered is None else (triggered, chosen)

    @property
    def target_class(self) -> int | None:
        """The class the attacker pushes inputs towards, if any."""
        return None

    @property
    def source_classes(self) -> tuple[int, ...] | None:
        """For targeted misclassification: the classes moved to the target."""
        return None
