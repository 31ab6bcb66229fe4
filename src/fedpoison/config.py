"""Typed, validated experiment configuration.

A config is built from YAML, a dict, or Python, then overridden with
``--set key=value`` pairs, then validated. Every error is a :class:`ConfigError`
whose message names the dotted key, what was expected and what was received,
e.g. ``unknown key 'clients.nmu', did you mean 'clients.num'?``.

This module checks the shape of a config and knows no plug-in. Plug-in sections
(``dataset``, ``partition``, ``model``, ``attack``, ``defense``, ``audit``) have a
few common keys; every other key in them belongs to the chosen plug-in and is
validated against the plug-in's own params model by the resolution layer,
:mod:`fedpoison.plugins`. So ``attack.scale`` is accepted for
``attack.name: scaling`` and rejected for ``attack.name: none``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from fedpoison.errors import ConfigError
from fedpoison.registry import suggest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ClientsConfig(_Strict):
    """Federation size and per-round participation."""

    num: int = Field(20, ge=1)
    #: Participants per round (count). Wins over ``fraction`` when both are set.
    per_round: int | None = Field(None, ge=1)
    #: Participants per round as a share of ``num``.
    fraction: float = Field(1.0, gt=0.0, le=1.0)


class LocalConfig(_Strict):
    """Local training of each client: SGD over in-memory tensors.

    Defaults (2 epochs, batch 16, lr 0.05, momentum 0.9, momentum reset every
    round) reach 0.90 on digits within 10 rounds and 0.80 on Fashion-MNIST
    within a few rounds; the benchmarks set the papers' plain-SGD settings
    explicitly.
    """

    #: Local epochs; ignored when ``steps`` is set.
    epochs: int = Field(2, ge=1)
    #: Local SGD steps; ``steps: 1`` with the whole batch is FedSGD.
    steps: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    #: Client-side clipping: honest clients clip their update to this L2 norm.
    clip_norm: float | None = Field(None, gt=0.0)
    #: How clients are trained: one by one, in a batched (vmap) pass, or whichever is faster.
    engine: Literal["sequential", "batched", "auto"] = "auto"


class ServerConfig(_Strict):
    """The server step: ``global += lr * (aggregate + noise)``, noise ``N(0, noise_std^2 I)`` (weak DP)."""

    lr: float = Field(1.0, gt=0.0)
    #: Std of the Gaussian noise added to the aggregate every round (0: none); seeded per round.
    noise_std: float = Field(0.0, ge=0.0)


class EvalConfig(_Strict):
    """When and how the global model is evaluated on the test set."""

    every: int = Field(1, ge=1)
    #: Test images per forward pass. A speed knob only; 256 keeps a CNN's activations in cache
    #: (cnn28 on CPU: 10,000 images in 0.2 s at 256, 0.4 s at 2048).
    batch_size: int = Field(256, ge=1)


class PluginSection(BaseModel):
    """A section naming one plug-in, with a few common keys plus the plug-in's own keys.

    This layer only keeps the plug-in's keys; :func:`fedpoison.plugins.resolve_config`
    validates them against the chosen plug-in's params model and fills in its
    defaults.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str

    #: Set by subclasses: the section's name in configs and its plug-in family.
    section: ClassVar[str] = "plugin"

    #: The plug-in defaults the resolution layer filled in (keys not given).
    _defaults: dict[str, Any] = PrivateAttr(default_factory=dict)

    def plugin_keys(self) -> dict[str, Any]:
        """The keys that belong to the chosen plug-in(s), as given."""
        return dict(self.model_extra or {})

    def set_defaults(self, defaults: Mapping[str, Any]) -> None:
        """Record the plug-in defaults for the keys not given (the resolution layer calls this)."""
        self._defaults = {k: v for k, v in defaults.items() if k not in (self.model_extra or {})}

    def params_dict(self) -> dict[str, Any]:
        """Every plug-in key: the given ones and the filled-in defaults."""
        return {**self._defaults, **self.plugin_keys()}

    def params(self, model: type[BaseModel]) -> Any:
        """The plug-in's validated parameters as an instance of ``model``."""
        extra = self.model_extra or {}
        try:
            return model.model_validate({k: v for k, v in extra.items() if k in model.model_fields})
        except ValidationError as exc:
            raise to_config_error(exc, prefix=(self.section,)) from None


class DatasetSection(PluginSection):
    """Which dataset to load (``fedpoison list datasets``); other keys belong to the dataset."""

    section: ClassVar[str] = "dataset"
    name: str = "digits"
    #: Use only the first ``limit`` training samples (quick experiments).
    limit: int | None = Field(None, ge=10)


class PartitionSection(PluginSection):
    """How training data is split among clients (``fedpoison list partitions``)."""

    section: ClassVar[str] = "partition"
    name: str = "iid"


class ModelSection(PluginSection):
    """Which model to train (``fedpoison list models``); ``auto`` picks the dataset's default."""

    section: ClassVar[str] = "model"
    name: str = "auto"


class AttackSection(PluginSection):
    """Threat model and attack (``fedpoison list attacks``)."""

    section: ClassVar[str] = "attack"
    name: str = "none"
    #: Share of all clients that are malicious (rounded to the nearest count).
    fraction: float = Field(0.0, ge=0.0, le=1.0)
    #: Number of malicious clients; wins over ``fraction`` when set.
    count: int | None = Field(None, ge=0)
    #: Fake clients the attacker adds: they own no data, are registered like any client (ids
    #: ``clients.num`` .. ``clients.num + fake_clients - 1``) and are all malicious. The server
    #: then has ``clients.num + fake_clients`` clients to sample from. Only for attacks that run
    #: without data (tag ``fake_clients``).
    fake_clients: int = Field(0, ge=0, le=100_000)
    knowledge: Literal["local", "omniscient", "defense_aware"] = "local"
    #: Malicious clients take part in every round, whatever the sampling.
    always_participate: bool = False
    #: Colluding attackers send one jointly crafted row (identical rows where the attack allows).
    collude: bool = False
    start_round: int = Field(0, ge=0)
    end_round: int | None = Field(None, ge=0)
    every: int = Field(1, ge=1)
    probability: float = Field(1.0, ge=0.0, le=1.0)


class DefenseSection(PluginSection):
    """Server-side defense: pre-aggregators then a rule (``fedpoison list defenses``)."""

    section: ClassVar[str] = "defense"
    name: str = "mean"
    pre: list[str] = Field(default_factory=list)
    #: Number of Byzantine rows the rule assumes; by default the expected number
    #: of malicious participants (the configured threat model, never who they are).
    f: int | None = Field(None, ge=0)
    #: What to do with non-finite rows before anything else.
    nonfinite: Literal["drop", "zero", "keep"] = "drop"
    #: When a rule's requirement on n and f fails at call time (e.g. after the
    #: auditor excluded rows): ``skip`` keeps the global model for that round and
    #: records it (``aggregation_skipped`` in the history); ``raise`` stops the run.
    on_violation: Literal["skip", "raise"] = "skip"


class AuditSection(PluginSection):
    """Client auditing (``fedpoison list auditors``)."""

    section: ClassVar[str] = "audit"
    name: str = "none"


class ExperimentConfig(_Strict):
    """One run: every knob, with defaults that make a quick FedAvg run on digits.

    Built by :func:`fedpoison.load_config`, which also resolves the plug-in
    sections; this class alone checks only the shape of the config.
    """

    seed: int = Field(0, ge=0)
    rounds: int = Field(20, ge=1)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    #: Ask torch for deterministic kernels (bit-exact reruns on GPU; slower).
    deterministic: bool = False
    #: Plug-ins of your own: module names or paths of ``.py`` files, loaded before
    #: the plug-in sections are resolved (in every process that runs the config).
    plugins: list[str] = Field(default_factory=list)
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    partition: PartitionSection = Field(default_factory=PartitionSection)
    clients: ClientsConfig = Field(default_factory=ClientsConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    local: LocalConfig = Field(default_factory=LocalConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    attack: AttackSection = Field(default_factory=AttackSection)
    defense: DefenseSection = Field(default_factory=DefenseSection)
    audit: AuditSection = Field(default_factory=AuditSection)
    #: Experiment trackers to log to (fedpoison.tracking); an observer, so not part of the run's key or dump.
    track: list[str] = Field(default_factory=list, exclude=True)

    @model_validator(mode="after")
    def _check_shape(self) -> ExperimentConfig:
        if self.clients.per_round is not None and self.clients.per_round > self.population:
            fakes = f" + attack.fake_clients={self.num_fake}" if self.num_fake else ""
            raise ConfigError(
                f"clients.per_round: expected at most clients.num={self.clients.num}{fakes}, "
                f"got {self.clients.per_round}"
            )
        if self.attack.count is not None and self.attack.count > self.clients.num:
            raise ConfigError(
                f"attack.count: expected at most clients.num={self.clients.num} attackers, "
                f"got {self.attack.count}"
            )
        if self.attack.end_round is not None and self.attack.end_round < self.attack.start_round:
            raise ConfigError(
                f"attack.end_round: expected >= attack.start_round={self.attack.start_round}, "
                f"got {self.attack.end_round}"
            )
        return self

    def sections(self) -> dict[str, PluginSection]:
        """The plug-in sections by name."""
        return {s: getattr(self, s) for s in ("dataset", "partition", "model", "attack", "defense", "audit")}

    # ---- derived quantities -------------------------------------------------
    @property
    def population(self) -> int:
        """Clients the server samples from: ``clients.num`` genuine plus ``attack.fake_clients`` fake ones.

        Without an attack (``attack.name: none``) there are no fake clients.
        """
        return self.clients.num + self.num_fake

    @property
    def num_fake(self) -> int:
        """Fake clients: ``attack.fake_clients``, or 0 without an attack."""
        return self.attack.fake_clients if self.attack.name != "none" else 0

    @property
    def participants_per_round(self) -> int:
        """Clients sampled per round, from ``per_round`` or ``fraction`` (of the whole :attr:`population`)."""
        if self.clients.per_round is not None:
            return self.clients.per_round
        return max(1, round(self.clients.fraction * self.population))

    @property
    def num_malicious(self) -> int:
        """Number of compromised genuine clients (``attack.count``, else ``fraction x clients.num``)."""
        if self.attack.name == "none":
            return 0
        if self.attack.count is not None:
            return self.attack.count
        return round(self.attack.fraction * self.clients.num)

    @property
    def num_attackers(self) -> int:
        """Every malicious client: the compromised genuine ones plus the fake ones."""
        return self.num_malicious + self.num_fake

    @property
    def expected_malicious_per_round(self) -> int:
        """Malicious participants expected per round: the defense's default ``f``.

        This is what the threat model says (how many), never who they are: all
        ``m`` attackers (fake clients included) under full participation or
        ``attack.always_participate``, else their expected count ``round(m * k / N)``
        among the ``k`` sampled from the ``N`` clients of the :attr:`population`.
        """
        m, k, n = self.num_attackers, self.participants_per_round, self.population
        if k >= n or self.attack.always_participate:
            return min(m, k)
        return min(k, round(m * k / n))

    @property
    def assumed_f(self) -> int:
        """The ``f`` the defense assumes: ``defense.f`` if set, else :attr:`expected_malicious_per_round`."""
        return self.defense.f if self.defense.f is not None else self.expected_malicious_per_round

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able data, with every plug-in default filled in once resolved.

        This is what a run saves as ``config.yaml`` and what :meth:`key` hashes.
        """
        data = self.model_dump(mode="json")
        for name, section in self.sections().items():
            data[name] = {**data[name], **{k: v for k, v in section.params_dict().items() if k not in data[name]}}
        return data

    def __eq__(self, other: object) -> bool:
        """Configs are equal when they say the same, defaults filled in or written out."""
        return isinstance(other, ExperimentConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def given_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able data, with only the plug-in keys that were given."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The config as YAML, loadable by :func:`fedpoison.load_config`."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def key(self) -> str:
        """A stable hash of the config (grid run identity)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- errors ------------------------------------------------------------------
def _model_at(loc: Iterable[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = ExperimentConfig
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def to_config_error(exc: ValidationError, prefix: tuple[str, ...] = ()) -> ConfigError:
    """Turn pydantic's first error into one clear sentence naming the key."""
    err = exc.errors()[0]
    loc = prefix + tuple(str(p) for p in err["loc"])
    key = ".".join(loc) if loc else "config"
    if not key.isprintable():
        key = repr(key)[1:-1]
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = sorted(parent.model_fields) if parent else []
        hint = suggest(loc[-1], known)
        if hint:
            parent_key = ".".join(loc[:-1])
            hint = hint.replace("'", f"'{parent_key}.", 1) if parent_key else hint
        return ConfigError(f"unknown key '{key}'{hint}")
    ctx_err = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_err, ConfigError):
        return ctx_err
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return ConfigError(f"{key}: {msg[0].lower() + msg[1:]}, got {err.get('input')!r}")


# ---- loading -----------------------------------------------------------------
def parse_override(item: str) -> tuple[str, Any]:
    """Parse ``key=value``; the value is read as YAML (``0.3``, ``[clip]``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"--set: expected key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set: expected a key before '=', got {item!r}")
    from fedpoison.yaml_safe import load_yaml

    try:
        value = load_yaml(raw, f"--set {key}") if raw.strip() else ""
    except ConfigError as exc:
        if "not valid YAML" not in str(exc):
            raise
        value = raw
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``key='a.b'``, creating sections."""
    parts = key.split(".")
    if not all(part.isidentifier() for part in parts):
        raise ConfigError(f"--set: expected a dotted key of names (e.g. clients.num), got {key!r}")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"--set {key}: '{'.'.join(parts[: i + 1])}' is a value, not a section"
            )
        node = child
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with a clear error for bad files."""
    from fedpoison.yaml_safe import read_yaml_file

    p = Path(path)
    data = read_yaml_file(p)  # size, UTF-8, depth and alias limits; one-line errors
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping at top level, got {type(data).__name__}")
    return data


def absolute_plugin_paths(data: dict[str, Any], base: Path) -> None:
    """Read the ``.py`` paths of a config file's ``plugins:`` relative to the file's folder."""
    plugins = data.get("plugins")
    if isinstance(plugins, list):
        data["plugins"] = [
            str((base / p).resolve()) if isinstance(p, str) and p.endswith(".py") and not Path(p).is_absolute() else p
            for p in plugins
        ]


def parse_config(
    source: str | Path | Mapping[str, Any] | ExperimentConfig | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> ExperimentConfig:
    """Build a config from a YAML path, a dict or a config, plus overrides, checking its shape only.

    Plug-in keys are kept as given; :func:`fedpoison.load_config` also resolves
    them. ``overrides`` are ``"key=value"`` strings (as from ``--set``) or a
    mapping of dotted keys to values.
    """
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, ExperimentConfig):
        data = source.given_dict()  # defaults of the old plug-ins must not pin the new ones
    elif isinstance(source, Mapping):
        data = json.loads(json.dumps(dict(source)))  # deep copy, JSON-able only
    else:
        data = read_yaml(source)
        absolute_plugin_paths(data, Path(source).parent)
    items = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    for key, value in items:
        set_dotted(data, key, value)
    return parse_mapping(data)


def parse_mapping(data: Mapping[str, Any]) -> ExperimentConfig:
    """Check the shape of a plain mapping and build an :class:`ExperimentConfig` from it."""
    try:
        return ExperimentConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise to_config_error(exc) from None
