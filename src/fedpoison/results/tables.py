"""Loading a results directory into tidy tables.

:func:`load` reads every finished run of a results store (``DIR/runs/<key>/``)
and returns :class:`Results`:

* ``runs``: one row per run, with every config field as a dotted column
  (``attack.name``, ``partition.alpha``, ...; list values such as
  ``defense.pre`` joined with ``+``), the summary metrics, and the labels
  ``attack_label`` and ``defense_label`` used by tables and figures;
* ``rounds``: one row per run and round (the run's ``history.csv``), keyed by
  ``key`` and carrying the columns that vary across the grid;
* ``failed``: one row per run that failed, with its error's last line;
* ``damaged``: one row per entry of ``runs/`` that is not a whole finished
  run (a file missing, cut short or changed since ``DONE.json`` recorded its
  checksum), with the reason. Damaged runs are never read as data.

Summary metrics are recomputed from each run's history with the grid's
``analysis`` settings (``last_k``, ``target_accuracy``), so they can be changed
after the fact; detection metrics come from ``summary.json``. Runs that
diverged (non-finite parameters) have ``final_accuracy`` NaN and ``diverged``
true: the model they end with is unusable, whatever it scored before.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fedpoison.errors import ResultsError
from fedpoison.experiments.store import DONE, ResultStore
from fedpoison.metrics.summary import LAST_K, TARGET_ACCURACY, summarize
from fedpoison.metrics.triggers import EXAMPLES_FILE
from fedpoison.metrics.triggers import read as read_examples
from fedpoison.results.stats import STATS, spread
from fedpoison.safe_fs import is_link

#: Config columns that never identify a group of seeds.
_NOT_GROUPING = {"key", "seed"}
#: Keys of a section left out of its label (they have their own axes).
_LABEL_SKIP = {"attack": {"name", "fraction", "count"}, "defense": {"name", "pre"}, "audit": {"name"}}


@dataclass
class Results:
    """The tidy tables of one results directory.

    Attributes
    ----------
    runs:
        One row per finished run (see the module docstring).
    rounds:
        One row per run-round.
    failed:
        One row per failed run: ``key``, ``label``, ``error``, ``attempts``.
    config_columns:
        The dotted config columns of ``runs``.
    axes:
        Config columns whose value differs between runs (the grid's axes).
    name, description:
        The grid's, when the directory has a ``grid.yaml``.
    analysis:
        ``last_k`` and ``target_accuracy`` the metrics were computed with.
    planned:
        Runs in the grid's ``plan.json`` (0 without one).
    damaged:
        One row per damaged run (``key``, ``reason``); left out of every other table.
    trigger_examples:
        Per run key, the run's trigger examples (``clean`` and ``triggered`` arrays, see
        :mod:`fedpoison.metrics.triggers`), for the runs of backdoor attacks.
    """

    runs: pd.DataFrame
    rounds: pd.DataFrame
    failed: pd.DataFrame
    config_columns: list[str]
    axes: list[str]
    name: str = "grid"
    description: str = ""
    analysis: dict[str, Any] = field(default_factory=dict)
    planned: int = 0
    damaged: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["key", "reason"]))
    trigger_examples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def metric_columns(self) -> list[str]:
        """Numeric summary columns of ``runs``."""
        skip = set(self.config_columns) | {"key", "attack_label", "defense_label", "label", "wall_s", "last_k",
                                           "target_accuracy"}
        return [c for c in self.runs.columns
                if c not in skip and pd.api.types.is_numeric_dtype(self.runs[c])
                and not pd.api.types.is_bool_dtype(self.runs[c])]

    def seeds(self, metrics: list[str] | None = None) -> pd.DataFrame:
        """Mean, standard deviation and count across seeds (see :func:`aggregate_seeds`)."""
        return aggregate_seeds(self, metrics)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}, 'c': [x, y]}`` -> ``{'a.b': 1, 'c': 'x+y'}`` (lists joined with ``+``)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        elif isinstance(v, list):
            out[name] = "+".join(str(x) for x in v)
        else:
            out[name] = v
    return out


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _read_run(folder: Path, last_k: int, target: float) -> tuple[dict[str, Any], pd.DataFrame]:
    """One verified run's row and history; :class:`ResultsError` when a file does not parse."""
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        done = json.loads((folder / DONE).read_text())
        history = _read_csv(folder / "history.csv")
        timings = _read_csv(folder / "timings.csv")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError, pd.errors.ParserError) as exc:
        raise ResultsError(f"run {folder}: cannot read it ({exc})") from None
    for name, value in (("config.yaml", config), ("summary.json", summary), (DONE, done)):
        if not isinstance(value, dict):
            raise ResultsError(f"run {folder}: {name} should hold a mapping, got {type(value).__name__}")
    row: dict[str, Any] = {"key": folder.name}
    row.update(flatten(config))
    summary.pop("versions", None)
    summary.pop("malicious_clients", None)
    row.update({k: v for k, v in summary.items() if not isinstance(v, dict | list)})
    if len(history):
        row.update(summarize(history, timings, last_k=last_k, target=target))
    if summary.get("diverged"):
        row["final_accuracy"] = math.nan
    row["wall_s"] = done.get("wall_s", math.nan)
    row["label"] = done.get("label", "")
    return row, history


def load(directory: str | Path, *, last_k: int | None = None, target: float | None = None) -> Results:
    """Load the finished runs of a results directory into tidy tables.

    ``last_k`` and ``target`` override the grid's ``analysis`` settings. A
    directory with no finished run raises :class:`ResultsError`.
    """
    root = Path(directory)
    store = ResultStore(root)
    if not store.runs_dir.is_dir():
        raise ResultsError(f"results directory {root}: no runs/ folder (is this a `fedpoison grid --out` directory?)")
    name, description, analysis = "grid", "", {"last_k": LAST_K, "target_accuracy": TARGET_ACCURACY}
    grid_file = root / "grid.yaml"
    if grid_file.is_file() and not is_link(grid_file):
        try:
            source = yaml.safe_load(grid_file.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
            raise ResultsError(f"{grid_file}: cannot read it ({str(exc).splitlines()[0]})") from None
        if not isinstance(source, dict):
            raise ResultsError(f"{grid_file}: expected a grid mapping, got {type(source).__name__}")
        name = str(source.get("name", name))
        description = str(source.get("description", ""))
        given = source.get("analysis") or {}
        if not isinstance(given, dict):
            raise ResultsError(f"{grid_file}: analysis should be a mapping, got {type(given).__name__}")
        analysis.update(given)
    if last_k is not None:
        analysis["last_k"] = last_k
    if target is not None:
        analysis["target_accuracy"] = target
    try:
        k, tgt = int(analysis["last_k"]), float(analysis["target_accuracy"])
    except (TypeError, ValueError):
        raise ResultsError(f"{grid_file}: analysis.last_k and analysis.target_accuracy should be numbers, "
                           f"got {analysis['last_k']!r} and {analysis['target_accuracy']!r}") from None

    try:
        plan = store.plan()
    except ResultsError:
        plan = []  # only orders the runs; `fedpoison store check` names the damage
    order = {entry["key"]: i for i, entry in enumerate(plan)}
    finished, damaged = store.scan()
    rows, histories = [], []
    trigger_examples: dict[str, dict[str, np.ndarray]] = {}
    for key in sorted(finished, key=lambda k: (order.get(k, len(order)), k)):
        try:
            row, history = _read_run(store.runs_dir / key, k, tgt)
        except ResultsError as exc:
            damaged[key] = str(exc).split(": ", 1)[-1]
            continue
        rows.append(row)
        if (store.runs_dir / key / EXAMPLES_FILE).is_file():
            examples = read_examples(store.runs_dir / key / EXAMPLES_FILE)
            if examples is not None:
                trigger_examples[key] = examples
        if len(history):
            histories.append(history.assign(key=key))
    damaged_table = pd.DataFrame(sorted(damaged.items()), columns=["key", "reason"])
    if not rows:
        extra = f" ({len(damaged)} damaged: see `fedpoison store check {root}`)" if damaged else ""
        raise ResultsError(f"results directory {root}: no finished run yet{extra}")
    runs = pd.DataFrame(rows)
    config_columns = [c for c in rows[0] if "." in c or c in ("seed", "rounds", "device", "deterministic")]
    config_columns += [c for c in runs.columns if "." in c and c not in config_columns]
    # A plug-in key present only for the runs of its plug-in (attack.trigger for backdoors) is no axis
    # unless it takes several values; missing values then stand for "another plug-in".
    axes = [c for c in config_columns if _varies(runs, c)]
    runs["attack_label"] = _labels(runs, "attack", axes)
    runs["defense_label"] = _defense_labels(runs, axes)
    _relative_to_baseline(runs, config_columns)
    front = ["key", "attack_label", "defense_label", *config_columns]
    runs = runs[front + [c for c in runs.columns if c not in front]]

    rounds = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(columns=["key", "round"])
    ids = runs[["key", "attack_label", "defense_label", *[a for a in axes if a != "key"]]]
    if "seed" not in ids:
        ids = ids.assign(seed=runs["seed"])
    rounds = ids.merge(rounds, on="key", how="right")

    failed_rows = []
    for key in sorted(store.failed_keys(finished)):
        try:
            rec = store.failure(key)
        except ResultsError as exc:
            rec = {"error": f"failure record unreadable ({exc})"}
        failed_rows.append({"key": key, "label": rec.get("label", ""), "attempts": rec.get("attempts", 1),
                            "error": rec.get("error", "").strip().splitlines()[-1:] or [""]})
    failed = pd.DataFrame(failed_rows, columns=["key", "label", "attempts", "error"])
    if len(failed):
        failed["error"] = failed["error"].map(lambda e: e[0] if isinstance(e, list) else e)
    return Results(runs, rounds, failed, config_columns, axes, name, description,
                   {"last_k": k, "target_accuracy": tgt}, planned=len(plan), damaged=damaged_table,
                   trigger_examples=trigger_examples)


# ---- labels and baselines -------------------------------------------------------
def _params_suffix(runs: pd.DataFrame, section: str, axes: list[str]) -> pd.Series:
    """``(key=value, ...)`` for the section's keys that take several values under one plug-in name.

    A key that is constant for each name (``scale: 4`` for every sign-flip run)
    does not tell runs apart and stays out of the label.
    """
    skip = _LABEL_SKIP[section]
    cols = [a for a in axes if a.startswith(section + ".") and a.split(".", 1)[1] not in skip]
    name = as_text(runs[f"{section}.name"])
    varying = {c: name.map(as_text(runs[c]).groupby(name).nunique() > 1) for c in cols}

    def one(i: Any) -> str:
        parts = [f"{c.split('.', 1)[1]}={_fmt(runs.at[i, c])}" for c in cols
                 if varying[c][i] and not _missing(runs.at[i, c])]
        return f"({', '.join(parts)})" if parts else ""

    return pd.Series([one(i) for i in runs.index], index=runs.index, dtype=object)


def _labels(runs: pd.DataFrame, section: str, axes: list[str]) -> pd.Series:
    return as_text(runs[f"{section}.name"]) + _params_suffix(runs, section, axes)


def _defense_labels(runs: pd.DataFrame, axes: list[str]) -> pd.Series:
    """``rule[+pre...][+auditor]``, e.g. ``mean``, ``mean+clip``, ``median+norm_mad``."""
    def one(row: pd.Series) -> str:
        parts = [str(row["defense.name"])]
        pre = row.get("defense.pre")
        if isinstance(pre, str) and pre:
            parts.append(pre)
        if "audit.name" in row and str(row["audit.name"]) != "none":
            parts.append(str(row["audit.name"]))
        return "+".join(parts)

    base = runs.apply(one, axis=1)
    return base + _params_suffix(runs, "defense", axes) + _params_suffix(runs, "audit", axes)


def _varies(runs: pd.DataFrame, column: str) -> bool:
    text = as_text(runs[column])
    plugin_key = column.split(".", 1)[0] in _PLUGIN_SECTIONS and not column.endswith(".name")
    present = text[text != "<NA>"] if plugin_key else text
    return bool(present.nunique() > 1)


#: Config sections whose keys beyond their name belong to the chosen plug-in.
_PLUGIN_SECTIONS = ("dataset", "partition", "model", "attack", "defense", "audit")


def as_text(values: pd.Series) -> pd.Series:
    """Values as strings, missing ones as ``"<NA>"`` (for grouping and comparing mixed columns)."""
    return values.map(lambda v: "<NA>" if _missing(v) else _fmt(v)).astype(object)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _relative_to_baseline(runs: pd.DataFrame, config_columns: list[str]) -> None:
    """Add each run's matching no-attack numbers: same config except the ``attack.*`` keys.

    Adds ``baseline_final_accuracy``, ``accuracy_drop`` (baseline minus this
    run) and ``rounds_to_target_relative`` (this run's rounds to target over
    the baseline's; NaN without a baseline). Several matching baselines (e.g.
    one per attack fraction) are averaged.
    """
    runs["baseline_final_accuracy"] = np.nan
    runs["accuracy_drop"] = np.nan
    runs["rounds_to_target_relative"] = np.nan
    if "attack.name" not in runs:
        return
    match_cols = [c for c in config_columns if not c.startswith("attack.")]
    sig = pd.Series(["\x1f".join(vals) for vals in zip(*(as_text(runs[c]) for c in match_cols), strict=True)],
                    index=runs.index, dtype=object)
    clean = runs["attack.name"].eq("none")
    if not clean.any():
        return
    base = runs[clean].assign(_sig=sig[clean]).groupby("_sig")[["final_accuracy", "rounds_to_target"]].mean()
    for i in runs.index:
        s = sig[i]
        if s not in base.index:
            continue
        b_acc, b_rtt = base.loc[s, "final_accuracy"], base.loc[s, "rounds_to_target"]
        runs.loc[i, "baseline_final_accuracy"] = b_acc
        runs.loc[i, "accuracy_drop"] = b_acc - runs.loc[i, "final_accuracy"]
        rtt = runs.loc[i, "rounds_to_target"]
        if not _missing(rtt) and not _missing(b_rtt) and b_rtt > 0:
            runs.loc[i, "rounds_to_target_relative"] = rtt / b_rtt


# ---- aggregation over seeds -----------------------------------------------------
def group_columns(results: Results) -> list[str]:
    """Columns that identify a configuration apart from its seed: labels and varying axes."""
    cols = ["attack_label", "defense_label"]
    return cols + [a for a in results.axes if a not in _NOT_GROUPING and a not in cols]


def aggregate_seeds(results: Results, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per configuration: ``<metric>_mean``, ``_std``, ``_sem``, ``_ci95`` and ``n_seeds``.

    The spreads are those of :mod:`fedpoison.results.stats` (std with ddof=1).

    Configurations are the distinct values of :func:`group_columns`. NaN values
    (e.g. no rounds-to-target because the target was never reached) are left
    out of the mean; ``<metric>_n`` counts the values used where it differs
    from ``n_seeds``. A single seed gives NaN spreads.
    """
    runs = results.runs
    metrics = metrics or results.metric_columns
    by = group_columns(results)
    rows = []
    for values, group in runs.groupby(by, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        row: dict[str, Any] = dict(zip(by, values, strict=True))
        row["n_seeds"] = len(group)
        for m in metrics:
            col = pd.to_numeric(group[m], errors="coerce")
            row[f"{m}_mean"] = float(col.mean()) if col.notna().any() else math.nan
            for stat in STATS:
                row[f"{m}_{stat}"] = spread(col, stat)
            if col.notna().sum() != len(group):
                row[f"{m}_n"] = int(col.notna().sum())
        if "diverged" in group:
            row["diverged_runs"] = int(group["diverged"].astype(bool).sum())
        rows.append(row)
    return pd.DataFrame(rows)
