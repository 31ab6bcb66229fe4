"""Reproduction files: a published table as a grid plus the paper's numbers.

A reproduction file is YAML (one per reproduction, in this package's folder)::

    name: fang2020_t2c
    title: ...
    paper: {citation: ..., table: Table 2(c), page: ..., metric: error, meaning: ...}
    tolerance: 0.05          # |fedpoison - paper| allowed, declared before any run
    diverged_error: 0.9      # the error a diverged run counts as
    base: {...}              # the config shared by every cell (the paper's protocol)
    rows:    [{id: krum, label: Krum, set: {defense: {name: krum}}}, ...]
    columns: [{id: none, label: NoAttack, set: {...}, against: fedavg}, ...]
    cells:   {krum: {fang: {set: {...}}}}   # optional per-cell settings (merged last)
    numbers: {krum: [0.16, 0.16, ...]}      # the paper's values, one per column
    references: [{id: fedavg, label: ..., paper: 0.09, set: {...}, source: ...}]
    scales:
      paper: {seeds: [0, 1, 2], set: {}, changes: []}
      cpu:   {seeds: [0], set: {rounds: 150}, changes: ["2,000 -> 150 rounds (...)"]}
      smoke: {...}
    choices: [{what: ..., choice: ..., reason: ...}]

Each cell's config is ``base`` merged with its row's ``set``, its column's
``set`` and its own ``set``; a scale's ``set`` is applied to every run last
(as ``--set`` overrides) and its seeds become the grid's ``seed`` axis. The
result is an ordinary grid (:func:`reproduction_grid`), run by the grid
machinery, so a reproduction is resumable, crash-safe and runs on Ray.

A column's ``against`` names what the cell's *effect* is measured from when
judging direction: another column of the same row, or a reference cell.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedpoison.errors import ConfigError
from fedpoison.registry import suggest

#: Folder holding the reproduction files shipped with fedpoison.
HERE = Path(__file__).resolve().parent
SCALES = ("smoke", "cpu", "paper")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PaperSource(_Strict):
    """Where the numbers come from."""

    citation: str
    table: str
    page: str
    #: ``error`` (1 - accuracy of the final global model) or ``accuracy``.
    metric: Literal["error", "accuracy"] = "error"
    #: Evaluations averaged into a run's value (1: the final global model only).
    last_k: int = Field(1, ge=1)
    #: What one cell means, in the paper's words.
    meaning: str


class Axis(_Strict):
    """A row or a column of the paper's table."""

    id: str
    label: str
    set: dict[str, Any] = Field(default_factory=dict)
    #: Column only: the column (same row) or reference cell the effect is measured from.
    against: str | None = None


class CellSettings(_Strict):
    """Settings of one cell beyond its row's and column's."""

    set: dict[str, Any] = Field(default_factory=dict)


class Reference(_Strict):
    """A number outside the table that the comparison uses (e.g. the no-attack FedAvg run)."""

    id: str
    label: str
    paper: float
    source: str
    set: dict[str, Any] = Field(default_factory=dict)


class Scale(_Strict):
    """How a scale changes the paper's protocol."""

    seeds: list[int] = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)
    #: The protocol changes this scale makes, for the report.
    changes: list[str] = Field(default_factory=list)


class Choice(_Strict):
    """A protocol detail the paper leaves open, and what fedpoison does."""

    what: str
    choice: str
    reason: str


class Reproduction(_Strict):
    """One published table as a runnable experiment (see the module docstring)."""

    name: str
    title: str
    paper: PaperSource
    tolerance: float = Field(gt=0.0)
    diverged_error: float = Field(0.9, ge=0.0, le=1.0)
    base: dict[str, Any]
    rows: list[Axis] = Field(min_length=1)
    columns: list[Axis] = Field(min_length=1)
    cells: dict[str, dict[str, CellSettings]] = Field(default_factory=dict)
    numbers: dict[str, list[float]]
    references: list[Reference] = Field(default_factory=list)
    scales: dict[str, Scale]
    choices: list[Choice] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_table(self) -> Reproduction:
        rows = [r.id for r in self.rows]
        cols = [c.id for c in self.columns]
        refs = [r.id for r in self.references]
        for ids, what in ((rows, "rows"), (cols, "columns"), (refs, "references")):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{what}: ids must be unique, got {ids}")
        if set(self.numbers) != set(rows):
            raise ValueError(f"numbers: expected one entry per row {rows}, got {sorted(self.numbers)}")
        for row, values in self.numbers.items():
            if len(values) != len(cols):
                raise ValueError(f"numbers.{row}: expected {len(cols)} values (columns {cols}), got {len(values)}")
        for row, by_col in self.cells.items():
            if row not in rows:
                raise ValueError(f"cells.{row}: not a row{suggest(row, rows)}")
            for col_id in by_col:
                if col_id not in cols:
                    raise ValueError(f"cells.{row}.{col_id}: not a column{suggest(col_id, cols)}")
        for axis in self.columns:
            if axis.against is not None and axis.against not in cols + refs:
                raise ValueError(f"columns.{axis.id}.against: expected a column or reference id, "
                                 f"got '{axis.against}'")
        missing = [s for s in SCALES if s not in self.scales]
        if missing:
            raise ValueError(f"scales: expected {', '.join(SCALES)}, missing {', '.join(missing)}")
        return self


@dataclass(frozen=True)
class Cell:
    """One cell to run: a table cell or a reference."""

    row: str
    column: str
    label: str
    paper: float
    settings: dict[str, Any]

    @property
    def id(self) -> str:
        """``row/column`` (references: ``ref/<id>``)."""
        return f"{self.row}/{self.column}"


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base`` (mappings merge, anything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def cells(rep: Reproduction) -> list[Cell]:
    """Every cell of the table, row by row, then the references."""
    out: list[Cell] = []
    for row in rep.rows:
        for j, col in enumerate(rep.columns):
            own = rep.cells.get(row.id, {}).get(col.id, CellSettings()).set
            settings = merge(merge(row.set, col.set), own)
            out.append(Cell(row.id, col.id, f"{row.label} / {col.label}", rep.numbers[row.id][j], settings))
    for ref in rep.references:
        out.append(Cell("ref", ref.id, ref.label, ref.paper, copy.deepcopy(ref.set)))
    return out


def reproduction_grid(rep: Reproduction, scale: str) -> dict[str, Any]:
    """The grid mapping (``fedpoison grid`` format) of ``rep`` at ``scale``.

    One zip group walks the cells, the references (such as the calibration
    run) first; the scale's seeds are the ``seed`` axis and
    its ``set`` goes into ``base`` (merged over the paper's protocol).
    """
    sc = scale_of(rep, scale)
    cs = cells(rep)
    cs = [c for c in cs if c.row == "ref"] + [c for c in cs if c.row != "ref"]  # references (calibration) first
    keys = sorted({k for c in cs for k in c.settings})
    group = {k: [c.settings.get(k, {}) for c in cs] for k in keys}
    for k, values in group.items():
        if not all(isinstance(v, Mapping) for v in values):
            raise ConfigError(f"reproduction {rep.name}: cell settings under '{k}' must be mappings (sections)")
    base = merge(rep.base, _nest(sc.set))
    grid: dict[str, Any] = {
        "name": f"{rep.name}-{scale}",
        "description": f"{rep.title} ({scale} scale)",
        "base": base,
        "axes": {"seed": list(sc.seeds)},
        "analysis": {"last_k": 1},
    }
    if group:
        grid["zip"] = [group]
    return grid


def cell_of_assignment(rep: Reproduction, assignment: Mapping[str, Any]) -> Cell | None:
    """The cell whose settings are the zip part of a grid run's ``assignment``."""
    zipped = {k: v for k, v in assignment.items() if k != "seed"}
    for cell in cells(rep):
        keys = set(zipped) | set(cell.settings)
        if all(zipped.get(k, {}) == cell.settings.get(k, {}) for k in keys):
            return cell
    return None


def scale_of(rep: Reproduction, scale: str) -> Scale:
    """``rep.scales[scale]`` or a clear error."""
    if scale not in rep.scales:
        raise ConfigError(f"--scale: expected one of {', '.join(SCALES)}, got '{scale}'")
    return rep.scales[scale]


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{'a.b': 1}`` -> ``{'a': {'b': 1}}`` (keys without dots kept)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


# ---- catalogue ---------------------------------------------------------------------
def available() -> dict[str, Path]:
    """Reproduction name -> file, for the files shipped with fedpoison."""
    return {p.stem: p for p in sorted(HERE.glob("*.yaml"))}


def load_reproduction(name_or_path: str | Path) -> Reproduction:
    """Read and validate a reproduction by name (``reproduce --list``) or from a YAML path."""
    files = available()
    path = files.get(str(name_or_path)) if str(name_or_path) in files else Path(name_or_path)
    if path is None or not path.is_file():
        names = list(files)
        raise ConfigError(f"reproduction: expected one of {', '.join(names)} or a YAML file, "
                          f"got '{name_or_path}'{suggest(str(name_or_path), names)}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"reproduction file {path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"reproduction file {path}: expected a mapping, got {type(data).__name__}")
    try:
        return Reproduction.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "file"
        raise ConfigError(f"reproduction file {path}: {where}: {err['msg']}") from None
