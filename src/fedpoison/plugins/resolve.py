"""Resolve a parsed config into plug-ins: the one layer that knows both configs and registries.

:func:`load_config` parses (shape only, :mod:`fedpoison.config`), loads the
config's own plug-ins, then :func:`resolve_config`:

1. looks up each section's plug-in (``dataset``, ``partition``, ``model``,
   ``attack``, ``defense`` with its pre-aggregators, ``audit``);
2. validates the section's other keys against the plug-in's params model. A
   key that belongs to another plug-in of the family is an error naming the
   plug-ins that take it (``partition.alpha`` with ``partition.name: iid``);
3. fills in every default, so the saved config says everything the run used;
4. runs the checks the chosen plug-ins declare: the attack's knowledge level,
   each defense step's requirement on ``n`` and ``f``, and their own
   whole-config checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fedpoison.config import (
    ExperimentConfig,
    PluginSection,
    parse_config,
    parse_mapping,
    to_config_error,
)
from fedpoison.config_checks import check_ranges
from fedpoison.errors import ConfigError
from fedpoison.plugins.families import registries
from fedpoison.plugins.loading import absolute_specs, load_plugins
from fedpoison.registry import Entry, Registry, suggest


def load_config(
    source: str | Path | Mapping[str, Any] | ExperimentConfig | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    *,
    plugins: Sequence[str] = (),
) -> ExperimentConfig:
    """Build a validated config from a YAML path, a dict or a config, plus overrides.

    ``overrides`` are ``"key=value"`` strings (as from ``--set``) or a mapping of
    dotted keys to values. ``plugins`` (files or modules, as from ``--plugin``)
    are added to the config's ``plugins`` list and loaded before resolution.

    Examples
    --------
    >>> cfg = load_config(overrides=["partition.name=dirichlet", "partition.alpha=0.1"])
    >>> cfg.partition.params_dict()["alpha"], cfg.partition.params_dict()["min_samples"]
    (0.1, 10)
    >>> load_config(overrides=["partition.alpha=0.1"])
    Traceback (most recent call last):
    ...
    fedpoison.errors.ConfigError: unknown key 'partition.alpha' for partition.name 'iid': it is a key of partition 'dirichlet' (set partition.name to it, or remove the key)
    """
    cfg = parse_config(source, overrides)
    if plugins:
        extra = [s for s in absolute_specs(plugins) if s not in cfg.plugins]
        cfg = parse_mapping({**cfg.model_dump(mode="json"), "plugins": [*cfg.plugins, *extra]})
    return resolve_config(cfg)


def validate_config(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a plain mapping (shape, plug-ins and combinations) into an :class:`ExperimentConfig`."""
    return resolve_config(parse_mapping(data))


def plugins_of(section: PluginSection, *, dataset: str = "digits") -> list[Entry[Any]]:
    """The registry entries a plug-in section names (empty for ``none``; a defense's rule first).

    ``dataset`` is the dataset whose default model ``model.name: auto`` means.
    """
    regs = registries()
    sec = section.section
    if sec in ("attack", "audit") and section.name == "none":
        return []
    if sec == "model":
        name = section.name
        if name == "auto":
            name = str(regs["datasets"].get(dataset, key="dataset.name").meta.get("default_model", "mlp"))
        return [regs["models"].get(name, key="model.name")]
    if sec == "defense":
        pre = getattr(section, "pre", [])
        return [regs["defenses"].get(section.name, key="defense.name")] + [
            regs["pre-aggregators"].get(p, key=f"defense.pre[{i}]") for i, p in enumerate(pre)
        ]
    return [registry_for(sec).get(section.name, key=f"{sec}.name")]


def section_entries(cfg: ExperimentConfig) -> dict[str, list[Entry[Any]]]:
    """The registry entries each plug-in section of ``cfg`` names (empty for ``none``)."""
    return {name: plugins_of(section, dataset=cfg.dataset.name) for name, section in cfg.sections().items()}


def resolve_section(section: PluginSection, *, dataset: str = "digits") -> PluginSection:
    """Validate one plug-in section on its own (its plug-in keys; no whole-config checks)."""
    return _resolve_section(section, plugins_of(section, dataset=dataset))


_SECTION_FAMILIES = {
    "dataset": ("datasets",), "partition": ("partitions",), "model": ("models",), "attack": ("attacks",),
    "defense": ("defenses", "pre-aggregators"), "audit": ("auditors",),
}


def _unknown_key(section: PluginSection, key: str, allowed: set[str]) -> ConfigError:
    """The error for a key no chosen plug-in takes: name the plug-ins that do, or the closest key."""
    sec = section.section
    regs = registries()
    takers = [
        f"{regs[fam].family} '{name}'" for fam in _SECTION_FAMILIES[sec] for name in regs[fam].taking(key)
    ]
    if takers:
        how = "add it to defense.pre" if all(t.startswith("pre-") for t in takers) else f"set {sec}.name to it"
        return ConfigError(
            f"unknown key '{sec}.{key}' for {sec}.name '{section.name}': it is a key of "
            f"{', '.join(takers[:6])}{' and others' if len(takers) > 6 else ''} ({how}, or remove the key)"
        )
    known = allowed | set(type(section).model_fields)
    hint = suggest(key, sorted(known)).replace("'", f"'{sec}.", 1)
    return ConfigError(f"unknown key '{sec}.{key}'{hint} (for {sec}.name '{section.name}')")


def _resolve_section(section: PluginSection, entries: list[Entry[Any]]) -> PluginSection:
    given = section.plugin_keys()
    allowed = {k for e in entries for k in e.params.model_fields}
    for key in given:
        if key not in allowed:
            raise _unknown_key(section, key, allowed)
    validated: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    for entry in entries:
        mine = {k: v for k, v in given.items() if k in entry.params.model_fields}
        try:
            params = entry.params.model_validate(mine)
        except ValidationError as exc:
            raise to_config_error(exc, prefix=(section.section,)) from None
        dumped = params.model_dump(mode="json")
        for key in entry.params.model_fields:
            if key in mine:
                validated[key] = dumped[key]
            else:
                defaults.setdefault(key, dumped[key])
    common = section.model_dump(mode="json", exclude=set(given))
    resolved = type(section).model_validate({**common, **validated})
    resolved.set_defaults(defaults)
    return resolved


def resolve_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Validate every plug-in section of a parsed config and run the plug-ins' checks.

    Loads the config's ``plugins`` first. Returns a new config whose sections
    carry every plug-in default (see :meth:`ExperimentConfig.to_dict`).
    """
    load_plugins(cfg.plugins)
    entries = section_entries(cfg)
    update = {name: _resolve_section(getattr(cfg, name), found) for name, found in entries.items()}
    resolved = cfg.model_copy(update=update)
    _check_knowledge(resolved, entries["attack"])
    _check_fake_clients(resolved, entries["attack"])
    _check_defense(resolved, entries["defense"])
    for found in entries.values():
        for entry in found:
            for check in entry.checks:
                message = check(resolved)
                if message:
                    raise ConfigError(message)
    check_ranges(resolved)  # finite floats in a computable range; partitions that split
    return resolved


def _check_fake_clients(cfg: ExperimentConfig, attack: list[Entry[Any]]) -> None:
    """``attack.fake_clients`` only for attacks that run without data (tag ``fake_clients``)."""
    fakes = cfg.attack.fake_clients
    if not attack or not fakes or attack[0].has("fake_clients"):
        return
    from fedpoison.attacks import ATTACKS

    able = sorted(n for n in ATTACKS.names() if ATTACKS.get(n).has("fake_clients"))
    raise ConfigError(
        f"attack.fake_clients: expected 0 for attack '{cfg.attack.name}', which needs its clients' data "
        f"(attacks that run on fake clients: {', '.join(able) or 'none'}), got {fakes}"
    )


def _check_knowledge(cfg: ExperimentConfig, attack: list[Entry[Any]]) -> None:
    if not attack:
        return
    from fedpoison.attacks.base import Knowledge  # the one order: local < omniscient < defense_aware

    needed = attack[0].meta.get("knowledge")
    if needed in set(Knowledge) and Knowledge(needed).level > Knowledge(cfg.attack.knowledge).level:
        raise ConfigError(
            f"attack.knowledge: attack '{cfg.attack.name}' needs at least '{needed}' knowledge, the threat "
            f"model allows '{cfg.attack.knowledge}' (set attack.knowledge={needed})"
        )


def _check_defense(cfg: ExperimentConfig, steps: list[Entry[Any]]) -> None:
    """Each pre-aggregator's and the rule's requirement on n and f, for the rows each one sees."""
    rule, pres = steps[0], steps[1:]
    n, f = cfg.participants_per_round, cfg.assumed_f
    section = cfg.defense
    for i, entry in enumerate(pres):
        params = section.params(entry.params)
        _check_requirement(entry, f"defense.pre[{i}] '{entry.name}'", n, f, params)
        rows_out = getattr(entry.obj, "rows_out", None)
        if rows_out is not None:
            n = rows_out(n, params)
    _check_requirement(rule, f"defense.name '{rule.name}'", n, f, section.params(rule.params))
    if rule.has("per_client_state"):
        regroups = [p.name for p in pres if getattr(p.obj, "rows_out", None) is not None]
        if regroups:
            raise ConfigError(
                f"defense.name '{rule.name}': keeps per-client history, so it needs one row per client; "
                f"defense.pre {regroups} regroups rows into buckets (remove it or choose another rule)"
            )


def _check_requirement(entry: Entry[Any], where: str, n: int, f: int, params: Any) -> None:
    if entry.requires is not None and entry.requires.violated(n, f, params):
        values = ", ".join(f"{k}={v}" for k, v in params.model_dump().items())
        raise ConfigError(
            f"{where}: requires {entry.requires.text}, got n={n} rows per round and f={f}"
            f"{f' ({values})' if values else ''} (set defense.f, clients.per_round or attack.fraction/count)"
        )


def registry_for(section: str) -> Registry[Any]:
    """The registry of a config section's plug-ins (``defense`` gives the rules)."""
    return registries()[_SECTION_FAMILIES[section][0]]
