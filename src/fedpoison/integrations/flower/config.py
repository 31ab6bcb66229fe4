"""fedpoison settings inside a Flower app's run config.

Flower flattens ``[tool.flwr.app.config]`` tables into dotted keys, which is
fedpoison's own override syntax. So a Flower app can hold a whole fedpoison
experiment config under one prefix:

.. code-block:: toml

    [tool.flwr.app.config.fedpoison.defense]
    name = "median"
    pre = "[clip]"          # TOML lists are not allowed in a Flower run config

    [tool.flwr.app.config.fedpoison.attack]
    name = "sign_flip"
    count = 3

and ``flwr run . --run-config "fedpoison.defense.name='krum'"`` overrides a key.
String values that start with ``[`` or ``{`` are read as YAML, for lists.
Every key under the prefix is validated like a ``fedpoison run --set`` key:
an unknown one is an error naming it, never dropped.

Flower accepts ``--run-config`` overrides only for keys the app declares, and
an attack's own keys (``attack.scale``) are errors for another attack. So one
more string key, ``fedpoison-set``, holds extra overrides in ``fedpoison run
--set`` syntax, space-separated and applied last:

.. code-block:: bash

    flwr run . --run-config "fedpoison-set='attack.name=sign_flip attack.scale=4.0'"
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from fedpoison.config import (
    AttackSection,
    AuditSection,
    DefenseSection,
    ExperimentConfig,
    PluginSection,
    parse_override,
)
from fedpoison.errors import ConfigError
from fedpoison.plugins import load_config, resolve_section

#: Prefix of fedpoison's keys in a Flower run config.
PREFIX = "fedpoison."
#: Run-config key holding extra ``key=value`` overrides (``fedpoison run --set`` syntax).
SET_KEY = "fedpoison-set"

S = TypeVar("S", bound=PluginSection)


def _read_value(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def experiment_config(
    run_config: Mapping[str, Any], *, prefix: str = PREFIX, set_key: str = SET_KEY
) -> ExperimentConfig:
    """The :class:`~fedpoison.config.ExperimentConfig` held by ``run_config``'s ``prefix`` keys.

    Keys without the prefix belong to the Flower app and are ignored; keys with
    it are validated (``fedpoison.defense.nmae`` is an error with a suggestion).
    Then the ``set_key`` string, if present, is split like a shell line into
    ``key=value`` overrides (``attack.scale=4.0``), applied last.

    Example
    -------
    >>> cfg = experiment_config({"num-server-rounds": 3, "fedpoison.defense.name": "mean",
    ...                          "fedpoison.defense.pre": "[]"})
    >>> cfg.defense.name, cfg.defense.pre
    ('mean', [])
    """
    dotted = {k[len(prefix) :]: _read_value(v) for k, v in run_config.items() if k.startswith(prefix)}
    extra = run_config.get(set_key, "")
    if not isinstance(extra, str):
        raise ConfigError(f"{set_key}: expected a string of key=value pairs, got {extra!r}")
    try:
        items = shlex.split(extra)
    except ValueError as exc:
        raise ConfigError(f"{set_key}: cannot split {extra!r} into key=value pairs ({exc})") from None
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{set_key}: expected key=value pairs separated by spaces, got {item!r}")
        key, value = parse_override(item)
        dotted[key] = value
    return load_config(None, dotted)


def _section(cls: type[S], spec: S | Mapping[str, Any], name: str) -> S:
    if isinstance(spec, cls):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{name}: expected a {cls.__name__} or a mapping, got {type(spec).__name__}")
    try:
        section = cls.model_validate({k: _read_value(v) for k, v in spec.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, ConfigError):
            raise inner from None
        key = ".".join([name, *(str(p) for p in err["loc"])])
        raise ConfigError(f"{key}: {err['msg']}, got {err.get('input')!r}") from None
    resolved = resolve_section(section)
    assert isinstance(resolved, cls)
    return resolved


def defense_section(spec: DefenseSection | Mapping[str, Any]) -> DefenseSection:
    """A validated ``defense`` section from a section or a mapping (``{"name": "median", ...}``)."""
    return _section(DefenseSection, spec, "defense")


def audit_section(spec: AuditSection | Mapping[str, Any]) -> AuditSection:
    """A validated ``audit`` section from a section or a mapping."""
    return _section(AuditSection, spec, "audit")


def attack_section(spec: AttackSection | Mapping[str, Any]) -> AttackSection:
    """A validated ``attack`` section from a section or a mapping."""
    return _section(AttackSection, spec, "attack")
