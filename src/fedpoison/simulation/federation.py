"""Build everything a run needs from its config: data, partition, model, plug-ins.

:class:`Federation` holds the fixed parts of a run (what does not change from
round to round). The round loop in :mod:`fedpoison.simulation.loop` reads it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedpoison.attacks import Attack
from fedpoison.attacks.threat import choose_malicious, fake_client_ids, fake_client_samples
from fedpoison.audit.base import Auditor
from fedpoison.config import ExperimentConfig
from fedpoison.data import Dataset, load_dataset, partition_clients
from fedpoison.data.split_check import check_split
from fedpoison.defenses import Defense, build_defense
from fedpoison.models import ParamSpec
from fedpoison.models.init import build_seeded, check_fits
from fedpoison.models.paramspec import use_fast_layout_
from fedpoison.models.probe import FlatModelProbe
from fedpoison.plugins import section_entries
from fedpoison.seeding import generator
from fedpoison.training import Engine, LocalPlan, SequentialEngine


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    from fedpoison.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: expected a visible CUDA GPU for 'cuda', found none (use 'cpu' or 'auto')")
    return torch.device(name)


@dataclass
class Federation:
    """The fixed parts of one run."""

    cfg: ExperimentConfig
    device: torch.device
    data: Dataset
    parts: list[Tensor]
    sizes: Tensor
    model: nn.Module
    spec: ParamSpec
    init_params: Tensor
    malicious: Tensor
    attack: Attack | None
    defense: Defense
    auditor: Auditor | None
    engine: Engine
    plan: LocalPlan
    root_index: Tensor | None
    eval_model: nn.Module
    probe: FlatModelProbe
    #: Fake clients (``attack.fake_clients``): ids ``num_clients .. population - 1``, no data.
    num_fake: int = 0

    @property
    def num_clients(self) -> int:
        """N, the genuine clients (those that own data)."""
        return len(self.parts)

    @property
    def population(self) -> int:
        """Every client the server knows: the N genuine ones and the fake ones."""
        return len(self.parts) + self.num_fake

    def is_fake(self, ids: Tensor) -> Tensor:
        """Bool mask: which of ``ids`` are fake clients (ground truth; the attack and metrics only)."""
        return ids >= len(self.parts)

    def is_malicious(self, ids: Tensor) -> Tensor:
        """Bool mask: which of ``ids`` are malicious clients (ground truth; metrics only)."""
        return torch.isin(ids, self.malicious)


def make_engine(cfg: ExperimentConfig, model: nn.Module, spec: ParamSpec, plan: LocalPlan, device: torch.device) -> Engine:
    """The local-training engine for ``local.engine``."""
    name: str = cfg.local.engine
    try:
        from fedpoison.training.batched import BatchedEngine, choose_engine
    except ImportError:
        return SequentialEngine(model, spec, plan)
    if name == "auto":
        name = choose_engine(model, spec, plan, device)
    if name == "batched":
        return BatchedEngine(model, spec, plan)
    return SequentialEngine(model, spec, plan)


def build_federation(cfg: ExperimentConfig) -> Federation:
    """Load data, partition it, build the model and the plug-ins for ``cfg``."""
    from fedpoison.config import ConfigError

    device = resolve_device(cfg.device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    entries = section_entries(cfg)
    data = load_dataset(cfg.dataset, cfg.seed).to(device)
    parts = [p.to(device) for p in partition_clients(cfg.partition, data.y_train, cfg.clients.num,
                                                     generator(cfg.seed, "partition"))]
    check_split(parts, len(data.y_train), cfg.clients.num, int(cfg.partition.params_dict().get("min_samples", 1)),
                cfg.partition.name)
    num_fake = cfg.num_fake
    claimed = [fake_client_samples(len(data.y_train), cfg.clients.num)] * num_fake
    sizes = torch.tensor([len(p) for p in parts] + claimed, dtype=torch.float32, device=device)

    model_entry = entries["model"][0]
    what = f"model.name={model_entry.name} on dataset.name={data.name}"
    try:
        model = build_seeded(lambda: model_entry.obj(data.input_shape, data.num_classes,
                                                     cfg.model.params(model_entry.params)),
                             generator(cfg.seed, "init"))
    except (RuntimeError, ValueError, IndexError, ZeroDivisionError) as exc:
        raise ConfigError(f"{what}: cannot build it for inputs {tuple(data.input_shape)} ({exc})") from None
    check_fits(model, data.input_shape, data.num_classes, what)  # before any training
    model = model.to(device)
    spec = ParamSpec.of(model)
    init_params = spec.flatten(model).to(device)

    malicious = torch.cat([choose_malicious(cfg.clients.num, cfg.num_malicious, cfg.seed),
                           fake_client_ids(cfg.clients.num, num_fake)]).to(device)

    attack: Attack | None = None
    for entry in entries["attack"]:
        attack = entry.obj(
            cfg.attack.params(entry.params),
            num_classes=data.num_classes,
            input_shape=data.input_shape,
            collude=cfg.attack.collude,
        )
    defense = build_defense(cfg.defense, f=cfg.expected_malicious_per_round)

    from fedpoison.audit import build_auditor

    auditor = build_auditor(cfg.audit, num_clients=cfg.population)
    bind = getattr(auditor, "bind_server", None)
    if bind is not None:  # an auditor that probes models (BackdoorIndicator) gets the server's side once
        from fedpoison.audit.base import ServerData

        bind(ServerData(model, spec.unflatten, data.x_train, data.y_train, data.num_classes, data.name, cfg.seed))

    plan = LocalPlan(cfg.local.epochs, cfg.local.steps, cfg.local.batch_size, cfg.local.lr,
                     cfg.local.momentum, cfg.local.weight_decay)
    engine = make_engine(cfg, model, spec, plan, device)

    root_index = None
    rule = entries["defense"][0]
    root_size = getattr(cfg.defense.params(rule.params), "root_size", None) if rule.has("needs_root_data") else None
    if root_size:
        if root_size > len(data.y_train):
            raise ConfigError(f"defense.root_size: expected at most {len(data.y_train)} samples, got {root_size}")
        g = generator(cfg.seed, "root")
        root_index = torch.randperm(len(data.y_train), generator=g)[:root_size].to(device)
    eval_model = use_fast_layout_(copy.deepcopy(model))
    probe = FlatModelProbe(copy.deepcopy(eval_model), spec, tuple(data.input_shape), data.num_classes,
                           cfg.eval.batch_size)
    return Federation(cfg, device, data, parts, sizes, model, spec, init_params, malicious, attack,
                      defense, auditor, engine, plan, root_index, eval_model, probe, num_fake)
