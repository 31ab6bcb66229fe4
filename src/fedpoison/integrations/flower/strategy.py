"""A Flower strategy that aggregates with a fedpoison defense and, optionally, an auditor.

:class:`RobustStrategy` subclasses Flower's ``FedAvg`` (Message API,
``flwr.serverapp.strategy``) and overrides two hooks; Flower's
``Strategy.start`` still runs the rounds.

- ``configure_train`` samples nodes as Flower's FedAvg does (seeded per
  round), then asks the auditor which of them are quarantined, and sends the
  train message only to the others, as fedpoison's round loop does. A
  quarantine therefore lasts a number of rounds the node would have joined.
- ``aggregate_train`` checks each reply, flattens the valid ones into the
  ``(n, d)`` float32 update matrix, lets the auditor screen it and the defense
  aggregate it (:func:`~fedpoison.simulation.server.audit_and_defend`, the round loop's own step),
  steps the global model by ``server_lr`` times the aggregate, and returns it
  as an ``ArrayRecord`` with metrics saying what happened.

Replies and updates
-------------------
Flower clients usually send back their trained model; the update row is then
``reply - global`` where ``global`` is the model this strategy sent that round
(``reply="params"``, the default). Clients that send the update itself
(new minus old) need ``reply="update"``. Either way the strategy returns the
next global model, ``global + server_lr * aggregate``; with the ``mean``
defense, ``server_lr = 1`` and sample weights this is exactly Flower's FedAvg.

Validation
----------
A reply is rejected, with the node id and the reason logged and recorded,
when it has no single ArrayRecord, its arrays differ from the global model's
in names, order, dtype or shape (read from the decoded data, not from what the
sender declares), its arrays cannot be decoded, its weight
(``weighted_by_key``) is missing, not a positive number, or not finite in
float32 (the dtype the defense aggregates in: a claim of 1e39 examples passes
as a float64 and overflows in float32), or it comes from a node that was not
sampled or already replied. Claimed weights are a node's word: ``max_weight``
caps them, and ``claims="ignore"`` weighs every accepted reply equally. Rejected replies never
reach the defense and never stop the round. NaN or infinite values are not
rejected here: the defense's ``nonfinite`` policy handles them. When the
defense cannot aggregate the rows it got (its ``AggregationError``, such as a
median assuming ``f = 3`` left with five rows after the auditor's exclusions),
the round is skipped, the global model kept, and the reason recorded in
:attr:`RoundReport.error`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log
from torch import Tensor

from fedpoison.config import AuditSection, DefenseSection
from fedpoison.core.rows import row_norms
from fedpoison.defenses import Defense, RoundContext, build_defense
from fedpoison.defenses.base import ModelProbe
from fedpoison.errors import ConfigError, UpdateError
from fedpoison.integrations.flower.config import audit_section, defense_section
from fedpoison.integrations.flower.records import ArrayLayout, ReplyKind
from fedpoison.integrations.flower.report import NodeReport, RoundReport
from fedpoison.seeding import derive_seed, generator
from fedpoison.simulation.server import AuditedAggregation, audit_and_defend

_F32_MAX = float(torch.finfo(torch.float32).max)


def aggregation_weights(claims: list[float], *, max_weight: float | None = None, ignore: bool = False) -> Tensor:
    """The float32 weights the defense gets from validated claims: capped at ``max_weight``, or all ones.

    Examples
    --------
    >>> aggregation_weights([5.0, 1e9], max_weight=100.0).tolist()
    [5.0, 100.0]
    """
    if ignore:
        return torch.ones(len(claims), dtype=torch.float32)
    w = torch.tensor(claims, dtype=torch.float64)
    if max_weight is not None:
        w = w.clamp(max=max_weight)
    return w.to(torch.float32)


class RobustStrategy(FedAvg):
    """Flower's FedAvg with fedpoison's defense, auditing, reply validation and quarantine.

    Parameters
    ----------
    defense:
        The defense: a :class:`~fedpoison.config.DefenseSection`, a mapping
        validated as one (``{"name": "median", "pre": ["clip"], ...}``), or a
        built :class:`~fedpoison.defenses.Defense` (any callable
        ``(updates, weights, RoundContext) -> AggregationResult``).
    audit:
        The auditor: an :class:`~fedpoison.config.AuditSection`, a mapping, an
        object with the :class:`~fedpoison.audit.Auditor` hooks, or ``None``.
        A section is built on the first round with ``num_clients`` equal to
        ``max_nodes``.
    f:
        Byzantine replies the defense assumes per round when ``defense.f`` is unset.
    reply:
        ``params`` when clients send their trained model (Flower's convention),
        ``update`` when they send new minus old parameters.
    server_lr:
        Server step size: ``global += server_lr * aggregate``.
    seed:
        Seeds node sampling and the defense's generator (``fedpoison.seeding``).
    max_weight:
        Largest weight a node's claim is given (larger claims are capped, and
        the report keeps the claim); ``None`` for no cap.
    claims:
        ``"use"`` weighs replies by their claimed ``weighted_by_key``;
        ``"ignore"`` weighs every accepted reply equally (the claim must still
        be present and valid).
    max_nodes:
        Size of the node index that auditors work over (Flower node ids are
        mapped to ``0, 1, ...`` in the order first seen). Default: the nodes
        connected in the first round. Replies from nodes beyond it are rejected.
    root_update:
        For FLTrust-style rules: the server's own update computed from a flat
        global model on its root data; passed as ``RoundContext.root_update``.
    model:
        The server's copy of the model as a :class:`~fedpoison.defenses.base.ModelProbe`
        (e.g. :class:`fedpoison.models.probe.FlatModelProbe`), for rules that inspect model
        outputs (DeepSight's DDifs); passed as ``RoundContext.model``.
    fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes, min_available_nodes,
    weighted_by_key, arrayrecord_key, configrecord_key, train_metrics_aggr_fn, evaluate_metrics_aggr_fn:
        As in Flower's ``FedAvg``. ``train_metrics_aggr_fn`` aggregates the
        metrics of accepted replies; fedpoison's own metrics are added under
        ``fedpoison.*`` keys (see :meth:`RoundReport.to_metrics`).

    Attributes
    ----------
    history:
        One :class:`RoundReport` per training round.
    node_index:
        Flower node id -> the client id the defense and auditor see.
    """

    def __init__(
        self,
        *,
        defense: DefenseSection | Mapping[str, Any] | Defense | Callable[..., Any],
        audit: AuditSection | Mapping[str, Any] | Any | None = None,
        f: int = 0,
        reply: ReplyKind = "params",
        server_lr: float = 1.0,
        seed: int = 0,
        max_nodes: int | None = None,
        max_weight: float | None = None,
        claims: str = "use",
        root_update: Callable[[Tensor], Tensor] | None = None,
        model: ModelProbe | None = None,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
        evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
    ) -> None:
        if not isinstance(f, int) or isinstance(f, bool) or f < 0:
            raise ConfigError(f"f: expected a non-negative integer, got {f!r}")
        if reply not in ("params", "update"):
            raise ConfigError(f"reply: expected 'params' or 'update', got {reply!r}")
        if not (isinstance(server_lr, int | float) and math.isfinite(server_lr) and server_lr > 0):
            raise ConfigError(f"server_lr: expected a positive finite number, got {server_lr!r}")
        if max_nodes is not None and (not isinstance(max_nodes, int) or max_nodes < 1):
            raise ConfigError(f"max_nodes: expected a positive integer or None, got {max_nodes!r}")
        if max_weight is not None and (isinstance(max_weight, bool) or not isinstance(max_weight, int | float)
                                       or not 0 < max_weight <= _F32_MAX / 1e6):
            raise ConfigError(f"max_weight: expected a positive number at most {_F32_MAX / 1e6:.3g} or None, "
                              f"got {max_weight!r}")
        if claims not in ("use", "ignore"):
            raise ConfigError(f"claims: expected 'use' or 'ignore', got {claims!r}")
        if not 0.0 <= fraction_train <= 1.0:
            raise ConfigError(f"fraction_train: expected a number in [0, 1], got {fraction_train!r}")
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.f = f
        self.reply = reply
        self.server_lr = float(server_lr)
        self.seed = seed
        self.max_nodes = max_nodes
        self.max_weight = None if max_weight is None else float(max_weight)
        self.claims = claims
        self.root_update = root_update
        self.model = model
        if isinstance(defense, DefenseSection | Mapping):
            section = defense_section(defense)
            self.defense_name = section.name if not section.pre else f"{'+'.join(section.pre)}+{section.name}"
            self.defense: Any = build_defense(section, f=f)
        elif callable(defense):
            self.defense_name = getattr(defense, "name", type(defense).__name__)
            self.defense = defense
        else:
            raise ConfigError(f"defense: expected a DefenseSection, a mapping or a callable, got {type(defense).__name__}")
        self._audit_section: AuditSection | None = None
        self.auditor: Any | None = None
        if isinstance(audit, AuditSection | Mapping):
            section_a = audit_section(audit)
            if section_a.name != "none":
                from fedpoison.audit import AUDITORS

                AUDITORS.get(section_a.name, key="audit.name")
                self._audit_section = section_a
        elif audit is not None:
            missing = [h for h in ("admit", "screen", "observe") if not callable(getattr(audit, h, None))]
            if missing:
                raise ConfigError(f"audit: expected an Auditor with admit/screen/observe, {type(audit).__name__} lacks {missing}")
            self.auditor = audit
        self.audit_name = (
            self._audit_section.name if self._audit_section is not None
            else type(self.auditor).__name__ if self.auditor is not None else "none"
        )
        self.history: list[RoundReport] = []
        self.node_index: dict[int, int] = {}
        self._round_state: dict[str, Any] | None = None

    # ---- setup -----------------------------------------------------------------
    def summary(self) -> None:
        """Log the strategy's settings (Flower calls this when the run starts)."""
        log(INFO, "\t├──> fedpoison settings:")
        log(INFO, "\t│\t├── Defense: %s (f=%d)", self.defense_name, self.f)
        log(INFO, "\t│\t├── Auditor: %s", self.audit_name)
        log(INFO, "\t│\t├── Replies carry: %s", "trained parameters" if self.reply == "params" else "updates")
        log(INFO, "\t│\t└── Server learning rate: %g", self.server_lr)
        super().summary()

    def _register(self, node_ids: Iterable[int]) -> None:
        """Give new node ids the next client ids, and build the auditor on first use."""
        for nid in sorted(int(n) for n in node_ids):
            if nid not in self.node_index:
                self.node_index[nid] = len(self.node_index)
        if self.max_nodes is None:
            self.max_nodes = len(self.node_index)
        if self.auditor is None and self._audit_section is not None:
            from fedpoison.audit import build_auditor

            self.auditor = build_auditor(self._audit_section, num_clients=self.max_nodes)

    def _indexed(self, node_ids: list[int]) -> list[int]:
        """The nodes among ``node_ids`` that fit in the auditor's index."""
        cap = self.max_nodes if self.max_nodes is not None else len(self.node_index)
        return [n for n in node_ids if self.node_index[n] < cap]

    # ---- training round --------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample among the nodes the auditor admits, and send them the global model."""
        if self.fraction_train == 0.0:
            return []
        layout = ArrayLayout.of(arrays)
        global_flat = layout.flatten(arrays, who="the global model")
        all_nodes = _wait_for_nodes(grid, self.min_available_nodes)
        self._register(all_nodes)
        candidates = sorted(self._indexed(all_nodes))
        wanted = max(int(len(all_nodes) * self.fraction_train), self.min_train_nodes)
        if wanted > len(candidates):
            log(WARNING, "configure_train: %d nodes wanted, %d can be sampled", wanted, len(candidates))
        rng = random.Random(derive_seed(self.seed, "sampling", server_round))
        sampled = sorted(rng.sample(candidates, min(wanted, len(candidates))))
        quarantined: list[int] = []
        if self.auditor is not None and sampled:
            ids = torch.tensor([self.node_index[n] for n in sampled], dtype=torch.int64)
            admitted = [bool(a) for a in self.auditor.admit(server_round - 1, ids).tolist()]
            quarantined = [n for n, ok in zip(sampled, admitted, strict=True) if not ok]
            sampled = [n for n, ok in zip(sampled, admitted, strict=True) if ok]
        log(INFO, "configure_train: Sampled %s nodes (out of %s), %s of them quarantined",
            len(sampled) + len(quarantined), len(all_nodes), len(quarantined))
        self._round_state = {
            "round": server_round, "arrays": arrays, "layout": layout, "global": global_flat,
            "sampled": tuple(sampled), "quarantined": tuple(sorted(quarantined)),
        }
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, sampled, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate the replies, audit and defend, and step the global model."""
        state = self._round_state
        if state is None or state["round"] != server_round:
            raise RuntimeError(
                f"aggregate_train for round {server_round} without configure_train for it: "
                "the strategy needs the global model it sent to compute updates"
            )
        t0 = time.perf_counter()
        layout: ArrayLayout = state["layout"]
        global_flat: Tensor = state["global"]
        sampled = set(state["sampled"])
        cap = self.max_nodes if self.max_nodes is not None else len(self.node_index)
        nodes: list[NodeReport] = []
        rows: list[Tensor] = []
        weights: list[float] = []
        row_nodes: list[int] = []
        contents: list[RecordDict] = []
        seen: set[int] = set()
        for msg in replies:
            nid = int(msg.metadata.src_node_id)
            if msg.has_error():
                err = msg.error
                nodes.append(NodeReport(nid, "failed", f"error reply (code {err.code}): {err.reason}"))
                continue
            try:
                if nid in seen:
                    raise UpdateError(f"node {nid}: a second reply in round {server_round}")
                if nid not in sampled:
                    raise UpdateError(f"node {nid}: replied but was not sampled in round {server_round}")
                if self.node_index.get(nid, cap) >= cap:
                    raise UpdateError(f"node {nid}: beyond the auditor's node index (max_nodes={cap})")
                seen.add(nid)
                record = self._reply_arrays(msg.content, nid)
                w = self._reply_weight(msg.content, nid)
                row = layout.flatten(record, who=f"node {nid}")
            except UpdateError as exc:
                log(WARNING, "aggregate_train: rejected reply: %s", exc)
                nodes.append(NodeReport(nid, "rejected", str(exc), metrics=_scalar_metrics(msg.content)))
                continue
            rows.append(row - global_flat if self.reply == "params" else row)
            weights.append(w)
            row_nodes.append(nid)
            contents.append(msg.content)
        n_ok = len(rows)
        log(INFO, "aggregate_train: Received %s usable replies, %s rejected, %s failures",
            n_ok, sum(r.status == "rejected" for r in nodes), sum(r.status == "failed" for r in nodes))
        if n_ok == 0:
            report = RoundReport(server_round, state["sampled"], state["quarantined"], tuple(nodes))
            self.history.append(report)
            return None, MetricRecord(report.to_metrics())

        updates = torch.stack(rows)
        w_t = aggregation_weights(weights, max_weight=self.max_weight, ignore=self.claims == "ignore")
        ids = torch.tensor([self.node_index[n] for n in row_nodes], dtype=torch.int64)
        ctx = RoundContext(server_round - 1, ids, generator(self.seed, "defense", server_round - 1),
                           global_flat.clone(), layout.slices, self.root_update, self.model)
        out = audit_and_defend(updates, w_t, ctx, self.defense, self.auditor)
        info = {**out.result.info, "nonfinite_rows": float(out.nonfinite)}
        if out.error:
            info["skipped"] = 1.0
        nodes.extend(_accepted_reports(row_nodes, weights, updates, out, contents))
        if out.error:
            log(WARNING, "aggregate_train: the defense skipped round %s, global model kept: %s", server_round, out.error)
            report = RoundReport(server_round, state["sampled"], state["quarantined"], tuple(nodes),
                                 info=info, error=out.error)
            self.history.append(report)
            return None, MetricRecord(report.to_metrics())

        new_flat = global_flat + self.server_lr * out.aggregate.to(global_flat)
        if not bool(torch.isfinite(new_flat).all()):
            log(WARNING, "aggregate_train: the new global model has non-finite values (round %s)", server_round)
            info["diverged"] = 1.0
        info["aggregate_s"] = time.perf_counter() - t0
        new_arrays = layout.unflatten(new_flat, state["arrays"])
        report = RoundReport(server_round, state["sampled"], state["quarantined"], tuple(nodes),
                             clipped=int(out.result.clipped), info=info, aggregated=True)
        self.history.append(report)
        metrics = self._client_metrics(contents)
        for key, value in report.to_metrics().items():
            metrics[key] = value
        return new_arrays, metrics

    # ---- helpers -----------------------------------------------------------------
    def _reply_arrays(self, content: RecordDict, nid: int) -> ArrayRecord:
        records = content.array_records
        if self.arrayrecord_key in records:
            return records[self.arrayrecord_key]
        if len(records) == 1:
            return next(iter(records.values()))
        raise UpdateError(
            f"node {nid}: expected one ArrayRecord (key '{self.arrayrecord_key}'), got keys {sorted(records)}"
        )

    def _reply_weight(self, content: RecordDict, nid: int) -> float:
        key = self.weighted_by_key
        found = [m[key] for m in content.metric_records.values() if key in m]
        if len(found) != 1:
            raise UpdateError(
                f"node {nid}: expected metric '{key}' in exactly one MetricRecord, found it in {len(found)}"
            )
        value = found[0]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise UpdateError(f"node {nid}: expected metric '{key}' to be a positive finite number, got {value!r}")
        if not value <= _F32_MAX / 1e6:  # n such claims must sum to a finite float32
            raise UpdateError(f"node {nid}: expected metric '{key}' at most {_F32_MAX / 1e6:.3g} (finite in the "
                              f"float32 the defense aggregates in, summed over replies), got {value!r}")
        return float(value)

    def _client_metrics(self, contents: list[RecordDict]) -> MetricRecord:
        """The clients' own metrics, aggregated over the accepted replies with Flower's function."""
        try:
            return self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            log(WARNING, "aggregate_train: clients' metrics not aggregated (%s: %s)", type(exc).__name__, exc)
            return MetricRecord()


def _wait_for_nodes(grid: Grid, minimum: int) -> list[int]:
    """Connected node ids, once at least ``minimum`` are connected (as Flower's ``sample_nodes``)."""
    while len(nodes := [int(n) for n in grid.get_node_ids()]) < minimum:
        log(INFO, "Waiting for nodes to connect: %d connected (minimum required: %d).", len(nodes), minimum)
        time.sleep(1)
    return nodes


def _scalar_metrics(content: RecordDict) -> dict[str, float]:
    out: dict[str, float] = {}
    for record in content.metric_records.values():
        for key, value in record.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = float(value)
    return out


def _accepted_reports(
    node_ids: list[int], weights: list[float], updates: Tensor, out: AuditedAggregation, contents: list[RecordDict]
) -> list[NodeReport]:
    norms = row_norms(updates).tolist()
    d = out.decision
    flagged = d.flagged.tolist() if d is not None else [False] * len(node_ids)
    scores = d.score.tolist() if d is not None else [float("nan")] * len(node_ids)
    return [
        NodeReport(
            nid, "accepted", num_examples=w, norm=norm, kept=bool(k), flagged=bool(fl), selected=bool(s),
            weight=float(ew), score=float(sc), metrics=_scalar_metrics(c),
        )
        for nid, w, norm, k, fl, s, ew, sc, c in zip(
            node_ids, weights, norms, out.keep.tolist(), flagged, out.selected.tolist(), out.weights.tolist(),
            scores, contents, strict=True,
        )
    ]
