"""Grid files: a base config plus axes, expanded into validated runs.

A grid file is YAML::

    name: attack-impact              # optional, shown in reports
    description: ...                 # optional
    base:                            # a config mapping, or a path to a config file
      rounds: 20                     # (relative to the grid file)
      clients: {num: 20}
    axes:                            # dotted key -> list of values; full product
      attack.name: [none, sign_flip, alie]
      defense.name: [mean, median]
      seed: [0, 1, 2]
      defense: [{name: mean}, {name: mean, pre: [clip], clip_norm: 2.0}]  # mapping values merge
    zip:                             # groups of keys varied together (one axis each)
      - attack.name: [sign_flip, scaling]
        attack.fraction: [0.2, 0.1]
    exclude:                         # a run matching every key of a rule is left out
      - {attack.name: none, attack.fraction: [0.2, 0.3]}   # a list means "any of"
    analysis:                        # how results are summarised (fedpoison results/report)
      last_k: 3
      target_accuracy: 0.8

The product of the axes and the zip groups (in file order, the first slowest)
gives the runs, at most :data:`MAX_RUNS` of them (its size is checked before
any run is built, and the runs are expanded one at a time); ``--set`` overrides apply to every run last. Exclude rules are
matched against a run's merged values, falling back to the config defaults for
keys the grid does not set; to match a list-valued key exactly, wrap it in a
list (``defense.pre: [[clip]]``). Runs whose resolved configs are identical are
merged (they would share a key). Every error names the grid file and the field.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from fedpoison.config import (
    ExperimentConfig,
    PluginSection,
    absolute_plugin_paths,
    parse_override,
    read_yaml,
    set_dotted,
)
from fedpoison.config_noops import ConfigWarning, check_run_config
from fedpoison.errors import ConfigError, ResultsError
from fedpoison.plugins import validate_config
from fedpoison.plugins.loading import absolute_specs
from fedpoison.registry import suggest
from fedpoison.safe_fs import plain_name

#: Most runs a grid may expand to (the product of its axes and zip groups, before exclusion).
MAX_RUNS = 20_000  # about 10 KiB per expanded run: 200 MB at most
#: Keys a grid file may have at top level.
GRID_KEYS = ("name", "description", "base", "axes", "zip", "exclude", "analysis")
#: Keys of the ``analysis`` section and their defaults.
ANALYSIS_DEFAULTS: dict[str, Any] = {"last_k": 3, "target_accuracy": 0.8}
#: Sections whose keys beyond the common ones belong to the chosen plug-in.
_PLUGIN_SECTIONS = {name for name, f in ExperimentConfig.model_fields.items()
                    if isinstance(f.annotation, type) and issubclass(f.annotation, PluginSection)}


@dataclass(frozen=True)
class GridRun:
    """One run of a grid.

    Attributes
    ----------
    index:
        Position in the expanded grid (0-based, after exclusion and merging).
    assignment:
        The axis values that define this run, as dotted key -> value.
    config:
        The resolved, validated config.
    """

    index: int
    assignment: dict[str, Any]
    config: ExperimentConfig

    @property
    def key(self) -> str:
        """The run's identity: a hash of the resolved config."""
        return self.config.key()

    @property
    def label(self) -> str:
        """A short human-readable name, from the axis values."""
        if not self.assignment:
            return "base"
        return " ".join(f"{k}={_show(v)}" for k, v in self.assignment.items())


@dataclass
class Grid:
    """An expanded grid: its runs plus what the file said.

    Attributes
    ----------
    runs:
        The runs, unique by key, in expansion order.
    name, description:
        From the grid file.
    source:
        The grid file as read (``base`` resolved to a mapping), with the
        ``--set`` overrides under ``overrides``; stored next to the results.
    analysis:
        ``last_k`` and ``target_accuracy`` used by summaries.
    merged:
        Number of expanded runs dropped because an earlier run had the same config.
    excluded:
        Number of runs removed by exclude rules.
    """

    runs: list[GridRun]
    name: str = "grid"
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=lambda: dict(ANALYSIS_DEFAULTS))
    merged: int = 0
    excluded: int = 0

    def __len__(self) -> int:
        return len(self.runs)

    def axis_keys(self) -> list[str]:
        """Dotted keys that vary across the grid's runs."""
        keys: dict[str, None] = {}
        for run in self.runs:
            keys.update(dict.fromkeys(run.assignment))
        return list(keys)


# ---- reading ---------------------------------------------------------------------
def load_grid(source: str | Path | Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any] = (),
              *, plugins: Sequence[str] = ()) -> Grid:
    """Read, validate and expand a grid file (a path or an already-parsed mapping).

    ``overrides`` are ``key=value`` strings (``--set``) applied to every run last.
    ``plugins`` (files or modules, as from ``--plugin``) join the base config's
    ``plugins``, so every run, in whatever process it runs, loads them.
    """
    if isinstance(source, Mapping):
        where, data, folder = "grid", copy.deepcopy(dict(source)), Path.cwd()
    else:
        path = Path(source)
        where, data, folder = f"grid file {path}", read_yaml(path), path.parent
    return expand_grid(data, overrides, where=where, folder=folder, plugins=plugins)


def expand_grid(data: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any] = (), *,
                where: str = "grid", folder: Path | None = None, plugins: Sequence[str] = ()) -> Grid:
    """Validate a parsed grid mapping and expand it into runs (see the module docstring)."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{where}: {msg}")

    data = dict(data)
    for key in data:
        if key not in GRID_KEYS:
            raise fail(f"unknown key '{key}'{suggest(str(key), list(GRID_KEYS))} "
                       f"(expected some of: {', '.join(GRID_KEYS)})")
    base = _read_base(data.get("base"), folder or Path.cwd(), fail, plugins)
    ov_items = list(overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides))
    for key, _ in ov_items:
        _check_key(key, fail, what="--set")

    axes = _read_axes(data.get("axes"), fail)
    groups = _read_zip(data.get("zip"), fail)
    seen: dict[str, str] = {}
    sources = [("axes", axes)] + [(f"zip[{i}]", g) for i, g in enumerate(groups)]
    for name, mapping in sources:
        for key, values in mapping.items():
            leaves = {leaf for v in values for leaf in _leaf_keys(key, v)}
            for leaf in sorted(leaves):
                for other, where_other in seen.items():
                    if leaf == other or leaf.startswith(other + ".") or other.startswith(leaf + "."):
                        raise fail(f"{name}.{key}: sets '{leaf}', which {where_other} also sets; "
                                   "vary each key in one place")
            for leaf in leaves:
                seen[leaf] = f"{name}.{key}"
    rules = _read_exclude(data.get("exclude"), fail)
    analysis = _read_analysis(data.get("analysis"), fail)
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise fail(f"{key}: expected a string, got {data[key]!r}")
    if "name" in data:
        try:
            plain_name(data["name"], "name")
        except ResultsError as exc:
            raise fail(str(exc)) from None

    # each dimension is a list of partial assignments
    dims: list[list[dict[str, Any]]] = [[{k: v} for v in values] for k, values in axes.items()]
    for group in groups:
        n = len(next(iter(group.values())))
        dims.append([{k: group[k][i] for k in group} for i in range(n)])
    total = math.prod(len(d) for d in dims)
    if total > MAX_RUNS:
        sizes = " x ".join(str(len(d)) for d in dims)
        raise fail(f"expands to {sizes} = {total} runs, more than the limit of {MAX_RUNS}; split it into "
                   "several grids or use zip groups")
    defaults = ExperimentConfig.model_validate({}).to_dict()
    noted: dict[str, None] = {}  # warnings about settings the grid does not vary (varied ones are deliberate)
    runs: list[GridRun] = []
    keys: set[str] = set()
    merged = excluded = 0
    first_error: tuple[dict[str, Any], ConfigError] | None = None
    valid_values: set[tuple[str, str]] = set()
    for combo in itertools.product(*dims):
        assignment: dict[str, Any] = {}
        for part in combo:
            assignment.update(part)
        merged_cfg = copy.deepcopy(base)
        for key, value in assignment.items():
            _apply(merged_cfg, key, value, fail)
        for key, value in ov_items:
            _apply(merged_cfg, key, value, fail)
        if any(_matches(rule, merged_cfg, defaults) for rule in rules):
            excluded += 1
            continue
        try:
            cfg = validate_config(merged_cfg)
            noted.update(dict.fromkeys(w.message for w in check_run_config(cfg, varied=set(seen), emit=False)))
        except ConfigError as exc:
            if first_error is None:
                first_error = (assignment, exc)
            continue
        valid_values.update((k, _hashable(v)) for k, v in assignment.items())
        key = cfg.key()
        if key in keys:
            merged += 1
            continue
        keys.add(key)
        runs.append(GridRun(len(runs), assignment, cfg))
    if first_error is not None:
        bad, error = first_error
        shown = ", ".join(f"{k}={_show(v)}" for k, v in bad.items()) or "the base config"
        never = [f"{k}={_show(v)}" for k, v in bad.items() if (k, _hashable(v)) not in valid_values]
        if len(bad) > 1 and not never:
            hint = (" (each of these values works in other runs: use a zip group or an exclude rule for "
                    "combinations that do not go together)")
        elif len(bad) > 1:
            hint = f" ({', '.join(never)} works in no run of the grid)"
        else:
            hint = ""
        raise fail(f"run ({shown}): {error}{hint}")
    if not runs:
        raise fail("the exclude rules leave no run")
    for message in noted:
        warnings.warn(f"{where}: {message}", ConfigWarning, stacklevel=2)
    source = {k: copy.deepcopy(data[k]) for k in GRID_KEYS if k in data}
    source["base"] = base
    if ov_items:
        source["overrides"] = {k: v for k, v in ov_items}
    return Grid(runs, name=str(data.get("name", "grid")), description=str(data.get("description", "")),
                source=source, analysis=analysis, merged=merged, excluded=excluded)


# ---- pieces ------------------------------------------------------------------------
def _read_base(base: Any, folder: Path, fail: Any, plugins: Sequence[str] = ()) -> dict[str, Any]:
    if base is None:
        data: dict[str, Any] = {}
    elif isinstance(base, str):
        try:
            data = read_yaml(folder / base)
        except ConfigError as exc:
            raise fail(f"base: {exc}") from None
        absolute_plugin_paths(data, (folder / base).parent)
    elif isinstance(base, Mapping):
        data = json.loads(json.dumps(base))
        absolute_plugin_paths(data, folder)
    else:
        raise fail(f"base: expected a config mapping or a path to a config file, got {base!r}")
    if plugins:
        given = data.get("plugins", [])
        data["plugins"] = [*(given if isinstance(given, list) else [given]),
                           *(s for s in absolute_specs(plugins) if s not in given)]
    if not data:
        return data
    try:
        validate_config(data)  # named errors for the base itself
    except ConfigError as exc:
        raise fail(f"base: {exc}") from None
    return data


def _check_key(key: Any, fail: Any, what: str) -> str:
    """Check that a dotted key names a config field (or a plug-in key); return it."""
    if not isinstance(key, str) or not key:
        raise fail(f"{what}: expected a dotted config key, got {key!r}")
    parts = key.split(".")
    model: type[BaseModel] | None = ExperimentConfig
    for i, part in enumerate(parts):
        if model is None:
            raise fail(f"{what}.{key}: '{'.'.join(parts[:i])}' is a value, not a section")
        fields = model.model_fields
        if part not in fields:
            if i == 1 and parts[0] in _PLUGIN_SECTIONS:
                return key  # a plug-in's own key, validated with the resolved run
            prefix = ".".join(parts[:i])
            hint = suggest(part, sorted(fields))
            if hint and prefix:
                hint = hint.replace("'", f"'{prefix}.", 1)
            raise fail(f"{what}.{key}: unknown config key '{key}'{hint}")
        ann = fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return key


def _read_axes(axes: Any, fail: Any) -> dict[str, list[Any]]:
    if axes is None:
        return {}
    if not isinstance(axes, Mapping):
        raise fail(f"axes: expected a mapping of config key -> list of values, got {axes!r}")
    out: dict[str, list[Any]] = {}
    for key, values in axes.items():
        _check_key(key, fail, "axes")
        out[key] = _values(values, fail, f"axes.{key}")
    return out


def _values(values: Any, fail: Any, where: str) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise fail(f"{where}: expected a non-empty list of values, got {values!r}")
    return list(values)


def _read_zip(groups: Any, fail: Any) -> list[dict[str, list[Any]]]:
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise fail(f"zip: expected a list of groups (mappings of key -> list), got {groups!r}")
    out = []
    for i, group in enumerate(groups):
        if not isinstance(group, Mapping) or not group:
            raise fail(f"zip[{i}]: expected a non-empty mapping of config key -> list of values, got {group!r}")
        lengths = {}
        for key, values in group.items():
            _check_key(key, fail, f"zip[{i}]")
            lengths[key] = len(_values(values, fail, f"zip[{i}].{key}"))
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
            raise fail(f"zip[{i}]: expected lists of equal length, got {shown}")
        out.append({k: list(v) for k, v in group.items()})
    return out


def _read_exclude(rules: Any, fail: Any) -> list[dict[str, Any]]:
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise fail(f"exclude: expected a list of rules (mappings of key -> value), got {rules!r}")
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping) or not rule:
            raise fail(f"exclude[{i}]: expected a non-empty mapping of config key -> value, got {rule!r}")
        for key in rule:
            _check_key(key, fail, f"exclude[{i}]")
        out.append(dict(rule))
    return out


def _read_analysis(analysis: Any, fail: Any) -> dict[str, Any]:
    out = dict(ANALYSIS_DEFAULTS)
    if analysis is None:
        return out
    if not isinstance(analysis, Mapping):
        raise fail(f"analysis: expected a mapping, got {analysis!r}")
    for key, value in analysis.items():
        if key not in ANALYSIS_DEFAULTS:
            raise fail(f"analysis.{key}: unknown key{suggest(str(key), list(ANALYSIS_DEFAULTS))} "
                       f"(expected some of: {', '.join(ANALYSIS_DEFAULTS)})")
        if key == "last_k" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise fail(f"analysis.last_k: expected an integer >= 1, got {value!r}")
        if key == "target_accuracy" and (not isinstance(value, int | float) or not 0 < value <= 1):
            raise fail(f"analysis.target_accuracy: expected a number in (0, 1], got {value!r}")
        out[key] = value
    return out


def _apply(data: dict[str, Any], key: str, value: Any, fail: Any) -> None:
    """Set a dotted key; a mapping value merges key by key into the section."""
    try:
        if isinstance(value, Mapping):
            for sub, sub_value in value.items():
                _apply(data, f"{key}.{sub}", sub_value, fail)
        else:
            set_dotted(data, key, copy.deepcopy(value))
    except ConfigError as exc:
        raise fail(str(exc).replace("--set ", "")) from None


def _leaf_keys(key: str, value: Any) -> list[str]:
    """The dotted keys a value sets: a mapping sets each of its (nested) keys."""
    if isinstance(value, Mapping):
        return [leaf for k, v in value.items() for leaf in _leaf_keys(f"{key}.{k}", v)]
    return [key]


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


_MISSING = object()


def _lookup(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _matches(rule: Mapping[str, Any], merged: Mapping[str, Any], defaults: Mapping[str, Any]) -> bool:
    for key, wanted in rule.items():
        value = _lookup(merged, key)
        if value is _MISSING:
            value = _lookup(defaults, key)
        if value is _MISSING:
            return False
        choices = wanted if isinstance(wanted, list) else [wanted]
        if not any(_same(value, c) for c in choices):
            return False
    return True


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return bool(a == b)


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        rest = ", ".join(f"{k}={_show(v)}" for k, v in value.items() if k != "name")
        if "name" in value:
            return f"{_show(value['name'])}({rest})" if rest else _show(value["name"])
        return "{" + rest + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def dump_grid(grid: Grid) -> str:
    """The grid's source as YAML (what the results store keeps as ``grid.yaml``)."""
    return yaml.safe_dump(grid.source, sort_keys=False)


def describe(grid: Grid) -> Sequence[str]:
    """One line per run: index, key and label (``fedpoison grid --dry-run``)."""
    return [f"{r.index:4d}  {r.key}  {r.label}" for r in grid.runs]
