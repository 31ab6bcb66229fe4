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

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from fedpoison.defenses.base import AggregationRule, RoundContext
    from fedpoison.models.paramspec import ParamSpec
    from fedpoison.training.local import LocalPlan


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
        The attack's own seeded generator.
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

    @property
    def num_malicious(self) -> int:
        """``m``, the number of malicious rows to craft."""
        return int(self.own_updates.shape[0])


@dataclass(frozen=True)
class AttackerTraining:
    """One attacking client's local training, for attacks that train their clients themselves.

    Attributes
    ----------
    round:
        Zero-based round index.
    client_id, slot:
        The client, and its index among the malicious clients.
    x, y:
        The client's own samples, clean (the attack poisons them itself).
    global_params:
        ``(d,)`` the flat global model the client starts from.
    model:
        A module of the run's architecture (a template: copy it before training).
    spec:
        The layout of ``model``'s parameters in the flat vector.
    plan:
        The honest clients' local SGD settings (``local.*``).
    generator:
        The client's training generator (the same one an honest client would get).
    seed:
        The run seed, for the attack's own draws (``fedpoison.seeding.generator(seed, "attack", ...)``).
    """

    round: int
    client_id: int
    slot: int
    x: Tensor
    y: Tensor
    global_params: Tensor
    model: nn.Module
    spec: ParamSpec
    plan: LocalPlan
    generator: torch.Generator
    seed: int = 0


class Attack:
    """Base class of every attack: identity hooks, overridden as needed.

    Subclasses set the class attributes, take their validated params model in
    ``__init__``, and override :meth:`poison`, :meth:`craft` or both.
    """

    kind: ClassVar[AttackKind] = AttackKind.UPDATE
    knowledge: ClassVar[Knowledge] = Knowledge.LOCAL
    #: False for attacks that skip local training (free riders, pure noise).
    trains: ClassVar[bool] = True
    #: True for attacks that train their clients themselves (:meth:`local_train`) instead of the engine.
    trains_itself: ClassVar[bool] = False

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

    def craft(self, ctx: AttackContext) -> Tensor:
        """Return the ``(m, d)`` rows the malicious clients send."""
        return ctx.own_updates

    def local_train(self, job: AttackerTraining) -> Tensor:
        """Train one attacking client from ``job.global_params``; return its ``(d,)`` update.

        Called instead of the training engine, once per attacking client per
        round, for attacks with ``trains_itself`` (A3FL and IBA optimise their
        trigger against the current global model first, Chameleon trains with
        a contrastive loss). :meth:`poison` is not called for such clients.
        The rows then go through :meth:`craft` like any other.
        """
        raise NotImplementedError(f"{type(self).__name__} sets trains_itself but does not define local_train")

    def backdoor(self, x: Tensor) -> Tensor | None:
        """Stamp the full trigger on test inputs, for attack success rate.

        ``None`` for attacks without a trigger.
        """
        return None

    @property
    def target_class(self) -> int | None:
        """The class the attacker pushes inputs towards, if any."""
        return None

    @property
    def source_classes(self) -> tuple[int, ...] | None:
        """For targeted misclassification: the classes moved to the target."""
        return None
