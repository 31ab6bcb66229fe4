"""The auditor contract.

An auditor watches every round's update matrix, scores each participant, flags
the anomalous ones and decides who is kept, dropped or quarantined. It runs
before the defense's pre-aggregators and rule. It sees what the server sees and
nothing else: ground truth about who is malicious never reaches it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn

from fedpoison.defenses.base import AggregationResult, RoundContext


@dataclass(frozen=True)
class AuditDecision:
    """What an auditor decided for one round's participants (all ``(n,)``).

    Attributes
    ----------
    keep:
        bool, rows passed on to the defense.
    weight:
        float multiplier on each kept row's FedAvg weight (reputation); ones by default.
    score:
        float suspicion score (higher is more suspicious).
    flagged:
        bool, rows the auditor flagged this round.
    signals:
        Named per-row signals (norm, cosine, ...) recorded in the audit log.
    """

    keep: Tensor
    weight: Tensor
    score: Tensor
    flagged: Tensor
    signals: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerData:
    """What the server holds besides the updates, for an auditor that probes models.

    The round loop hands it to an auditor that defines ``bind_server(data)``
    (BackdoorIndicator), once, when the federation is built. Such an auditor
    may also define ``broadcast(round, params) -> params``: the model the
    clients receive that round (the server's step is applied to it).

    Attributes
    ----------
    model:
        The run's model (the auditor copies it; its parameters are not the global model's).
    unflatten:
        Flat parameter vector to named tensors, for ``torch.func.functional_call``.
    x_train, y_train:
        The training set the server may draw its own samples from (counted in the threat model).
    num_classes:
        Number of classes.
    dataset:
        The run's dataset name.
    seed:
        The run seed (derive generators from it with :func:`fedpoison.seeding.generator`).
    """

    model: nn.Module
    unflatten: Callable[[Tensor], dict[str, Tensor]]
    x_train: Tensor
    y_train: Tensor
    num_classes: int
    dataset: str
    seed: int


class Auditor(Protocol):
    """The hooks the round loop calls, in this order, each round."""

    def admit(self, round: int, client_ids: Tensor) -> Tensor:
        """Bool mask over sampled clients: False for those quarantined this round."""
        ...

    def screen(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AuditDecision:
        """Score and flag the rows of this round's update matrix."""
        ...

    def observe(self, ctx: RoundContext, decision: AuditDecision, result: AggregationResult) -> None:
        """See what the defense did (e.g. Krum's scores) after aggregation."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (quarantine, reputation, history)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        ...
