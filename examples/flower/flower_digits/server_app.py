"""The ServerApp: Flower's FedAvg, Flower's Krum and/or fedpoison's RobustStrategy.

``strategy`` names one strategy or several, comma-separated
(``"fedavg,krum,fedpoison"``): each then trains its own model from the same
initial model, one after the other, on the same nodes, so one ``flwr run``
gives the comparison. The global model is evaluated on the digits test split
after every round (Flower's ``evaluate_fn``). At the end the app logs, and
optionally writes as JSON (``results-file``), a summary: accuracy per round
and, for the fedpoison strategy, which partitions were flagged, left out or
quarantined each round, next to the partitions that were really malicious.
That ground truth is the example's own bookkeeping for the summary; no
strategy ever sees it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Krum, Strategy
from flwr.supercore import log

from fedpoison.config import ExperimentConfig
from fedpoison.integrations.flower import MaliciousClient, RobustStrategy
from flower_digits.task import get_task, run_config

STRATEGIES = ("fedavg", "krum", "fedpoison")


def expected_attackers(cfg: ExperimentConfig, num_nodes: int) -> int:
    """The threat model's number of malicious nodes (how many, never which): the ``f`` of Krum and the defense."""
    if cfg.attack.name == "none":
        return 0
    if cfg.attack.count is not None:
        return cfg.attack.count
    return round(cfg.attack.fraction * num_nodes)


def build_strategy(config: dict[str, Any], cfg: ExperimentConfig) -> Strategy:
    """The strategy named by ``config["strategy"]``."""
    name = config["strategy"]
    nodes = int(config["min-nodes"])
    fraction = float(config["fraction-train"])
    f = expected_attackers(cfg, nodes)
    # fraction_evaluate=0: the server evaluates the global model itself, on the test split.
    if name == "fedavg":
        return FedAvg(fraction_train=fraction, fraction_evaluate=0.0, min_available_nodes=nodes)
    if name == "krum":
        return Krum(fraction_train=fraction, fraction_evaluate=0.0, min_available_nodes=nodes, num_malicious_nodes=f)
    if name == "fedpoison":
        return RobustStrategy(defense=cfg.defense, audit=cfg.audit, f=f, seed=cfg.seed, server_lr=cfg.server.lr,
                              fraction_train=fraction, fraction_evaluate=0.0, min_available_nodes=nodes)
    raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {name!r}")


def summarize(cfg: ExperimentConfig, strategy: Strategy, accuracy: dict[int, float],
              malicious: list[int]) -> dict[str, Any]:
    """Accuracy per round and, for RobustStrategy, flags per round by partition id."""
    summary: dict[str, Any] = {
        "accuracy": {str(r): a for r, a in sorted(accuracy.items())},
        "final_accuracy": accuracy[max(accuracy)] if accuracy else float("nan"),
    }
    if isinstance(strategy, RobustStrategy):
        summary["defense"] = "+".join([*cfg.defense.pre, cfg.defense.name])
        summary["audit"] = cfg.audit.name
        partition_of = {n.node_id: int(n.metrics["partition-id"]) for rep in strategy.history for n in rep.nodes
                        if "partition-id" in n.metrics}

        def pids(nodes: Any) -> list[int]:
            return sorted(partition_of.get(n, -1) for n in nodes)

        rounds = []
        for rep in strategy.history:
            rounds.append({
                "round": rep.server_round,
                "flagged": pids(rep.flagged),
                "quarantined": pids(rep.quarantined),
                "left_out": pids(n.node_id for n in rep.nodes if n.status == "accepted" and not n.selected),
                "rejected": pids(rep.rejected),
                "skipped": rep.error,
            })
        summary["rounds"] = rounds
        replies = [(partition_of.get(n.node_id, -1), n.flagged) for rep in strategy.history for n in rep.nodes]
        bad = [fl for pid, fl in replies if pid in malicious]
        good = [fl for pid, fl in replies if pid not in malicious]
        summary["attacker_replies_flagged"] = f"{sum(bad)}/{len(bad)}"
        summary["honest_replies_flagged"] = f"{sum(good)}/{len(good)}"
    return summary


def make_app(overrides: dict[str, Any] | None = None,
             on_finish: Callable[[dict[str, Any]], None] | None = None) -> ServerApp:
    """A ServerApp whose run config is the app's, then Flower's, then ``overrides``; ``on_finish`` gets the summary."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = run_config(context.run_config, overrides)
        cfg, task = get_task(config)
        names = [n.strip() for n in str(config["strategy"]).split(",") if n.strip()]
        strategies = [build_strategy({**config, "strategy": n}, cfg) for n in names]  # fail before any round
        results: dict[str, Any] = {}
        for name, strategy in zip(names, strategies, strict=True):
            accuracy: dict[int, float] = {}

            def evaluate(server_round: int, arrays: ArrayRecord, accuracy: dict[int, float] = accuracy) -> MetricRecord:
                result = task.evaluate(task.layout(arrays).flatten(arrays, who="the global model"))
                accuracy[server_round] = result["accuracy"]
                return MetricRecord(dict(result))

            strategy.start(grid=grid, initial_arrays=task.initial_arrays(),
                           num_rounds=int(config["num-server-rounds"]), evaluate_fn=evaluate)
            results[name] = accuracy, strategy

        num_nodes = len(list(grid.get_node_ids()))
        malicious: list[int] = []
        if cfg.attack.name != "none":
            attacker = MaliciousClient(cfg.attack, num_classes=task.data.num_classes,
                                       input_shape=task.data.input_shape, seed=cfg.seed)
            malicious = list(attacker.malicious_partitions(num_nodes))
        summary = {
            "attack": cfg.attack.name, "num_nodes": num_nodes, "malicious_partitions": malicious,
            "results": {name: summarize(cfg, strategy, accuracy, malicious)
                        for name, (accuracy, strategy) in results.items()},
        }
        log(INFO, "fedpoison example summary: %s", json.dumps(summary))
        for name, res in summary["results"].items():
            log(INFO, "fedpoison example: %-9s final accuracy %.3f", name, res["final_accuracy"])
        if config.get("results-file"):
            Path(config["results-file"]).write_text(json.dumps(summary, indent=2))
        if on_finish is not None:
            on_finish(summary)

    return app


#: The app `flwr run` loads (see [tool.flwr.app.components] in pyproject.toml).
app = make_app()
