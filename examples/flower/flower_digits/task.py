"""The digits task both apps share, built from fedpoison's own pieces.

Data (:func:`fedpoison.data.load_dataset` and the configured partitioner),
model (:func:`fedpoison.models.build_model`), local SGD
(:class:`fedpoison.training.SequentialEngine`) and seeds
(:mod:`fedpoison.seeding`) are fedpoison's, so the node with partition id
``k`` trains exactly as client ``k`` trains in ``fedpoison run`` with the same
config and ``clients.num`` equal to the number of nodes.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord
from torch import Tensor, nn

from fedpoison.config import ExperimentConfig
from fedpoison.data import Dataset, load_dataset, partition_clients
from fedpoison.integrations.flower import ArrayLayout, experiment_config
from fedpoison.models import ParamSpec, build_model
from fedpoison.plugins import plugins_of
from fedpoison.seeding import derive_seed, generator
from fedpoison.training import ClientJob, LocalPlan, SequentialEngine, evaluate

#: The app's folder (holds pyproject.toml, whose [tool.flwr.app.config] gives the defaults).
APP_DIR = Path(__file__).resolve().parents[1]


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def app_defaults() -> dict[str, Any]:
    """The run config declared in the app's ``pyproject.toml``, flattened as Flower flattens it."""
    with (APP_DIR / "pyproject.toml").open("rb") as fh:
        return _flatten(tomllib.load(fh)["tool"]["flwr"]["app"].get("config", {}))


def run_config(context_config: Any, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The app's defaults, then Flower's run config (``flwr run --run-config``), then ``overrides``.

    ``flwr run`` fills ``context.run_config`` from ``pyproject.toml``; Flower's
    Python simulation API (``run_simulation``) leaves it empty, hence the defaults.
    """
    return {**app_defaults(), **dict(context_config or {}), **(overrides or {})}


@dataclass
class Task:
    """Data, model and local training for one experiment config (built once per process)."""

    cfg: ExperimentConfig
    data: Dataset
    spec: ParamSpec
    init_params: Tensor
    engine: SequentialEngine
    eval_model: nn.Module
    _parts: dict[int, list[Tensor]] = field(default_factory=dict)

    @classmethod
    def build(cls, cfg: ExperimentConfig) -> Task:
        """Load the data and build the model as ``fedpoison run`` does for ``cfg``."""
        data = load_dataset(cfg.dataset, cfg.seed)
        name = plugins_of(cfg.model, dataset=cfg.dataset.name)[0].name
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        model = build_model(name, data.input_shape, data.num_classes, cfg.model)
        spec = ParamSpec.of(model)
        init_params = spec.flatten(model)
        loc = cfg.local
        plan = LocalPlan(loc.epochs, loc.steps, loc.batch_size, loc.lr, loc.momentum, loc.weight_decay)
        engine = SequentialEngine(model, spec, plan)
        eval_model = copy.deepcopy(model)
        return cls(cfg, data, spec, init_params, engine, eval_model)

    def partition(self, pid: int, num_partitions: int) -> Tensor:
        """Training-set indices of partition ``pid`` out of ``num_partitions`` (fedpoison's partitioner)."""
        if num_partitions not in self._parts:
            self._parts[num_partitions] = partition_clients(self.cfg.partition, self.data.y_train, num_partitions,
                                                            generator(self.cfg.seed, "partition"))
        return self._parts[num_partitions][pid]

    def initial_arrays(self) -> ArrayRecord:
        """The seeded initial model as an ArrayRecord (one array per named parameter)."""
        shaped = self.spec.unflatten(self.init_params)
        return ArrayRecord({s.name: shaped[s.name].detach().clone() for s in self.spec.slices})

    def layout(self, arrays: ArrayRecord) -> ArrayLayout:
        """The record's layout, checked against the model's parameters."""
        layout = ArrayLayout.of(arrays)
        if [(s.name, s.shape) for s in layout.slices] != [(s.name, s.shape) for s in self.spec.slices]:
            raise ValueError(f"arrays {list(layout.keys)} do not match the model's parameters")
        return layout

    def train(self, global_params: Tensor, x: Tensor, y: Tensor, *, client_id: int, server_round: int) -> tuple[Tensor, float]:
        """Local SGD from ``global_params`` on ``(x, y)``; the seed is fedpoison's (round counted from 0)."""
        job = ClientJob(client_id, x, y, torch.arange(len(y)),
                        generator(self.cfg.seed, "train", server_round - 1, client_id))
        return self.engine.train_one(global_params, job)

    def evaluate(self, params: Tensor, x: Tensor | None = None, y: Tensor | None = None) -> dict[str, float]:
        """Accuracy and loss of ``params`` on ``(x, y)``, by default the test split."""
        x = self.data.x_test if x is None else x
        y = self.data.y_test if y is None else y
        self.spec.load_(self.eval_model, params)
        preds, loss = evaluate(self.eval_model, x, y, self.cfg.eval.batch_size)
        return {"accuracy": float((preds == y).float().mean()), "loss": loss}


_TASKS: dict[str, Task] = {}


def get_task(config: dict[str, Any]) -> tuple[ExperimentConfig, Task]:
    """The fedpoison config of a run config, and its task (cached per process)."""
    cfg = experiment_config(config)
    key = cfg.key()
    if key not in _TASKS:
        _TASKS[key] = Task.build(cfg)
    return cfg, _TASKS[key]
