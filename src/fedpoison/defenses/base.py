"""The server-side defense contract: pre-aggregators and aggregation rules.

Everything here speaks the update matrix: ``updates`` is a float32 tensor of
shape ``(n, d)``, one row per participating client (its new minus old
parameters), on the run's device. ``weights`` is a float32 tensor ``(n,)`` of
sample counts (FedAvg's weights); rules that ignore weights say so.

Rules and pre-aggregators never mutate their inputs and never loop in Python
over coordinates or pairs of clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from fedpoison.core.slices import ParamSlice

__all__ = ["AggregationResult", "AggregationRule", "ModelProbe", "ParamSlice", "PreAggregator", "PreResult",
           "RoundContext"]


@runtime_checkable
class ModelProbe(Protocol):
    """The server's copy of the model architecture, to run a flat parameter vector on inputs.

    Defenses that inspect model *outputs* (DeepSight's division differences)
    read it from :attr:`RoundContext.model`. It carries no data: inputs are the
    caller's (random noise, or server data counted in the threat model).
    """

    input_shape: tuple[int, ...]
    num_classes: int

    def logits(self, params: Tensor, inputs: Tensor) -> Tensor:
        """``(b, num_classes)`` logits of the model with flat ``(d,)`` ``params`` on ``(b, *input_shape)`` inputs."""
        ...


@dataclass
class RoundContext:
    """What the server knows in a round. Never holds ground truth.

    Attributes
    ----------
    round:
        Zero-based round index.
    client_ids:
        ``(n,)`` int64 ids of the clients whose rows are in ``updates``.
    generator:
        Seeded generator for the defense's own randomness (noise, bucketing).
    global_params:
        ``(d,)`` flat global model before this round's step.
    slices:
        Parameter layout, for per-layer operations.
    root_update:
        For FLTrust: computes the server's own update on its root dataset from
        ``global_params``; ``None`` when the run provides no root data.
    model:
        A :class:`ModelProbe` that runs flat parameter vectors of the run's
        model, for defenses that inspect outputs; ``None`` where the server has
        no model (a bare update matrix).
    """

    round: int
    client_ids: Tensor
    generator: torch.Generator
    global_params: Tensor
    slices: tuple[ParamSlice, ...] = ()
    root_update: object | None = None
    model: ModelProbe | None = None

    def subset(self, mask: Tensor) -> RoundContext:
        """The same context for the rows of ``mask`` only (``self`` when every row is kept).

        Everything but ``client_ids`` is shared, the generator included: a
        subset is the same round, with fewer rows.
        """
        if bool(mask.all()):
            return self
        return RoundContext(self.round, self.client_ids[mask], self.generator, self.global_params, self.slices,
                            self.root_update, self.model)


@dataclass(frozen=True)
class AggregationResult:
    """An aggregate and what the rule did to get it.

    Attributes
    ----------
    aggregate:
        ``(d,)`` float32 aggregate update.
    weights:
        ``(n,)`` effective weight of each input row in the aggregate, summing to
        1 for averaging rules (0 for a dropped row). Coordinate-wise rules that
        mix rows per coordinate (median, trimmed mean) report ``1/n`` each.
    selected:
        ``(n,)`` bool, rows the rule kept. A filtering rule (Krum, FLAME, DnC)
        drops rows; this is what detection metrics read.
    scores:
        ``(n,)`` per-row score where the rule computes one (Krum score, FLTrust
        trust, ...), else ``None``. Higher means more suspicious unless the
        rule's docstring says otherwise.
    clipped:
        How many rows were clipped (by the rule and its pre-aggregators).
    info:
        Extra scalar measurements to record per round (the clip bound used, the
        number of clusters, ...).
    """

    aggregate: Tensor
    weights: Tensor
    selected: Tensor
    scores: Tensor | None = None
    clipped: int = 0
    info: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PreResult:
    """Output of a pre-aggregator.

    ``updates`` may have fewer or more rows than the input (bucketing makes
    buckets); ``groups`` then maps each output row to the input rows it came
    from as a ``(n_out, n_in)`` float32 mixing matrix, so selection can be
    traced back to clients. ``None`` means the identity.
    """

    updates: Tensor
    weights: Tensor
    clipped: int = 0
    groups: Tensor | None = None
    info: dict[str, float] = field(default_factory=dict)


class AggregationRule(Protocol):
    """An aggregation rule: ``rule(updates, weights, ctx) -> AggregationResult``."""

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate one round's ``(n, d)`` rows with their ``(n,)`` weights; never change them."""
        ...


class PreAggregator(Protocol):
    """A pre-aggregation step: ``pre(updates, weights, ctx) -> PreResult``."""

    def __call__(self, updates: Tensor, weights: Tensor, ctx: RoundContext) -> PreResult:
        """Transform one round's ``(n, d)`` rows before the rule; never change them."""
        ...
