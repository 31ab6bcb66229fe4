"""What :class:`~fedpoison.integrations.flower.strategy.RobustStrategy` did in one round.

A :class:`RoundReport` is the structured record (kept in the strategy's
``history``); :meth:`RoundReport.to_metrics` is its summary as the scalar and
list entries a Flower ``MetricRecord`` accepts, under ``fedpoison.*`` keys so
they never collide with the clients' own metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

NodeStatus = Literal["accepted", "rejected", "failed"]

#: Prefix of every metric the strategy adds to the round's MetricRecord.
METRIC_PREFIX = "fedpoison."


@dataclass(frozen=True)
class NodeReport:
    """One node's reply in one round.

    Attributes
    ----------
    node_id:
        Flower node id.
    status:
        ``accepted`` (it reached the auditor and defense), ``rejected`` (its
        reply failed validation: ``reason`` says why) or ``failed`` (Flower
        delivered an error reply instead of content).
    reason:
        Why it was rejected or failed; empty when accepted.
    num_examples:
        The weight it claimed (``weighted_by_key``); NaN when unreadable.
    norm:
        L2 norm of its update row; NaN unless accepted.
    kept:
        The auditor passed the row on to the defense (True when there is no auditor).
    flagged:
        The auditor flagged it this round.
    selected:
        The defense's rule kept it (see ``AggregationResult.selected``).
    weight:
        Its effective weight in the aggregate.
    score:
        The auditor's suspicion score, else NaN.
    metrics:
        The scalar metrics the node reported in its reply.
    """

    node_id: int
    status: NodeStatus
    reason: str = ""
    num_examples: float = float("nan")
    norm: float = float("nan")
    kept: bool = False
    flagged: bool = False
    selected: bool = False
    weight: float = 0.0
    score: float = float("nan")
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundReport:
    """The strategy's record of one training round (``server_round`` counts from 1, as in Flower).

    Attributes
    ----------
    server_round:
        Flower's round number.
    sampled:
        Node ids sent a train message.
    quarantined:
        Node ids the auditor excluded from sampling this round.
    nodes:
        One :class:`NodeReport` per reply received.
    clipped:
        Rows clipped by the defense's pre-aggregators and rule.
    info:
        The defense's extra measurements (``AggregationResult.info``).
    aggregated:
        Whether a new global model was produced (False when no reply was
        usable or the defense skipped the round).
    error:
        Why the defense skipped the round, else empty.
    """

    server_round: int
    sampled: tuple[int, ...]
    quarantined: tuple[int, ...]
    nodes: tuple[NodeReport, ...]
    clipped: int = 0
    info: dict[str, float] = field(default_factory=dict)
    aggregated: bool = False
    error: str = ""

    def _ids(self, pred: str) -> tuple[int, ...]:
        return tuple(n.node_id for n in self.nodes if getattr(n, pred))

    @property
    def accepted(self) -> tuple[int, ...]:
        """Node ids whose replies passed validation."""
        return tuple(n.node_id for n in self.nodes if n.status == "accepted")

    @property
    def rejected(self) -> dict[int, str]:
        """Node id -> reason, for replies that failed validation."""
        return {n.node_id: n.reason for n in self.nodes if n.status == "rejected"}

    @property
    def failed(self) -> dict[int, str]:
        """Node id -> reason, for error replies."""
        return {n.node_id: n.reason for n in self.nodes if n.status == "failed"}

    @property
    def selected(self) -> tuple[int, ...]:
        """Node ids the defense kept."""
        return self._ids("selected")

    @property
    def flagged(self) -> tuple[int, ...]:
        """Node ids the auditor flagged."""
        return self._ids("flagged")

    @property
    def dropped_by_audit(self) -> tuple[int, ...]:
        """Accepted node ids the auditor did not pass on to the defense."""
        return tuple(n.node_id for n in self.nodes if n.status == "accepted" and not n.kept)

    def to_metrics(self) -> dict[str, int | float | list[int] | list[float]]:
        """The round's summary as MetricRecord-compatible values under ``fedpoison.*`` keys."""
        p = METRIC_PREFIX
        out: dict[str, int | float | list[int] | list[float]] = {
            f"{p}sampled": len(self.sampled),
            f"{p}accepted": len(self.accepted),
            f"{p}selected-nodes": list(self.selected),
            f"{p}flagged-nodes": list(self.flagged),
            f"{p}quarantined-nodes": list(self.quarantined),
            f"{p}rejected-nodes": sorted(self.rejected),
            f"{p}failed-nodes": sorted(self.failed),
            f"{p}clipped": int(self.clipped),
            f"{p}aggregated": int(self.aggregated),
        }
        for key, value in self.info.items():
            out[f"{p}{key}"] = float(value)
        return out
