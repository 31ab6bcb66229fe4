"""The ClientApp: fedpoison's local training on the node's digits partition, malicious on some nodes.

Every node runs this same app. Which nodes attack is decided by
:class:`~fedpoison.integrations.flower.MaliciousClient` from the node's
``partition-id`` and the ``fedpoison.attack`` section of the run config: a data
attack poisons the node's samples before training (``attacker.poison``), an
update attack rewrites the train reply (``attacker`` is a Flower mod).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from fedpoison.integrations.flower import MaliciousClient
from fedpoison.training import clip_rows
from flower_digits.task import get_task, run_config

_ATTACKERS: dict[str, MaliciousClient | None] = {}


def attacker_for(config: dict[str, Any]) -> MaliciousClient | None:
    """The configured attack (``None`` when ``fedpoison.attack.name`` is ``none``), cached per process."""
    cfg, task = get_task(config)
    key = cfg.key()
    if key not in _ATTACKERS:
        _ATTACKERS[key] = None if cfg.attack.name == "none" else MaliciousClient(
            cfg.attack, num_classes=task.data.num_classes, input_shape=task.data.input_shape, seed=cfg.seed,
            server_lr=cfg.server.lr,
        )
    return _ATTACKERS[key]


def make_app(overrides: dict[str, Any] | None = None) -> ClientApp:
    """A ClientApp whose run config is the app's, then Flower's, then ``overrides``."""
    app = ClientApp()

    def attack_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        attacker = attacker_for(run_config(context.run_config, overrides))
        return call_next(msg, context) if attacker is None else attacker(msg, context, call_next)

    @app.train(mods=[attack_mod])
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # many nodes share few cores in a simulation
        config = run_config(context.run_config, overrides)
        cfg, task = get_task(config)
        pid = int(context.node_config["partition-id"])
        num_partitions = int(context.node_config["num-partitions"])
        server_round = cast(int, msg.content.config_records["config"]["server-round"])
        arrays = msg.content.array_records["arrays"]
        layout = task.layout(arrays)
        global_params = layout.flatten(arrays, who="the global model")

        idx = task.partition(pid, num_partitions)
        x, y = task.data.x_train[idx], task.data.y_train[idx]
        attacker = attacker_for(config)
        malicious = attacker is not None and attacker.is_malicious(context)
        if attacker is not None:
            x, y = attacker.poison(x, y, context=context, server_round=server_round)
        update, loss = task.train(global_params, x, y, client_id=pid, server_round=server_round)
        if cfg.local.clip_norm is not None and not malicious:
            update = clip_rows(update[None], cfg.local.clip_norm)[0][0]

        metrics = MetricRecord({"num-examples": len(y), "train-loss": loss, "partition-id": pid})
        content = RecordDict({"arrays": layout.unflatten(global_params + update, arrays), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        config = run_config(context.run_config, overrides)
        _, task = get_task(config)
        pid = int(context.node_config["partition-id"])
        idx = task.partition(pid, int(context.node_config["num-partitions"]))
        arrays = msg.content.array_records["arrays"]
        params = task.layout(arrays).flatten(arrays, who="the global model")
        result = task.evaluate(params, task.data.x_train[idx], task.data.y_train[idx])
        metrics = MetricRecord({"num-examples": len(idx), **result})
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    return app


#: The app `flwr run` loads (see [tool.flwr.app.components] in pyproject.toml).
app = make_app()
