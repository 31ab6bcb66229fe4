"""Cell-by-cell comparison of a reproduction's results with the paper's numbers.

For each cell, over the seeds that finished: the mean of the metric
(error = 1 - final accuracy for error tables), its sample standard deviation,
and a verdict with the tolerance :math:`\\tau` declared in the reproduction
file:

- **within tolerance**: :math:`|m - p| \\le \\tau` (fedpoison's mean :math:`m`,
  the paper's value :math:`p`);
- **same direction, different size**: outside the tolerance, but the cell's
  *effect* moves the same way in both: with the cell's baseline (its column's
  ``against``: the same row's NoAttack cell, or a reference such as FedAvg)
  at :math:`m_0` and :math:`p_0`, :math:`\\mathrm{dir}(m - m_0) =
  \\mathrm{dir}(p - p_0)`, where :math:`\\mathrm{dir}(x)` is up for
  :math:`x > \\tau`, down for :math:`x < -\\tau`, flat otherwise;
- **disagrees**: otherwise;
- **not run**: no finished seed yet.

A diverged run counts as the file's ``diverged_error``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from fedpoison.reproductions.spec import Cell, Reproduction, cells

WITHIN = "within tolerance"
SAME_DIRECTION = "same direction, different size"
DISAGREES = "disagrees"
NOT_RUN = "not run"


@dataclass
class CellResult:
    """One compared cell."""

    row: str
    column: str
    label: str
    paper: float
    values: list[float] = field(default_factory=list)
    diverged: int = 0
    baseline: str | None = None
    verdict: str = NOT_RUN

    @property
    def mean(self) -> float:
        """Mean over seeds (NaN when none finished)."""
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (NaN below two seeds)."""
        n = len(self.values)
        if n < 2:
            return math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (n - 1))

    @property
    def difference(self) -> float:
        """The difference: fedpoison's mean minus the paper's value."""
        return self.mean - self.paper

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record with mean, std, difference and verdict."""
        out = asdict(self)
        out.update(mean=_num(self.mean), std=_num(self.std), difference=_num(self.difference), seeds=len(self.values))
        return out


def direction(x: float, tol: float) -> int:
    """+1 above ``tol``, -1 below ``-tol``, 0 in between."""
    return 1 if x > tol else -1 if x < -tol else 0


def verdict(ours: float, paper: float, tol: float, *, ours_base: float | None = None,
            paper_base: float | None = None) -> str:
    """The verdict of one cell (see the module docstring).

    Example
    -------
    >>> verdict(0.12, 0.10, 0.05)
    'within tolerance'
    >>> verdict(0.60, 0.90, 0.05, ours_base=0.20, paper_base=0.16)
    'same direction, different size'
    >>> verdict(0.20, 0.90, 0.05, ours_base=0.20, paper_base=0.16)
    'disagrees'
    """
    if math.isnan(ours):
        return NOT_RUN
    if abs(ours - paper) <= tol:
        return WITHIN
    if ours_base is None or paper_base is None or math.isnan(ours_base):
        return DISAGREES
    same = direction(ours - ours_base, tol) == direction(paper - paper_base, tol)
    return SAME_DIRECTION if same else DISAGREES


def compare(rep: Reproduction, values: Mapping[str, list[float]], diverged: Mapping[str, int] | None = None,
            ) -> list[CellResult]:
    """Compare per-cell metric values (cell id -> one value per finished seed) with the paper."""
    diverged = diverged or {}
    all_cells = cells(rep)
    by_id: dict[str, CellResult] = {}
    for c in all_cells:
        by_id[c.id] = CellResult(c.row, c.column, c.label, c.paper, list(values.get(c.id, [])), diverged.get(c.id, 0))
    against = {col.id: col.against for col in rep.columns}
    refs = {r.id for r in rep.references}
    for c in all_cells:
        res = by_id[c.id]
        base_id = _baseline_id(c, against.get(c.column), refs)
        base = by_id.get(base_id) if base_id else None
        res.baseline = base_id
        res.verdict = verdict(res.mean, res.paper, rep.tolerance,
                              ours_base=base.mean if base else None, paper_base=base.paper if base else None)
    return [by_id[c.id] for c in all_cells]


def _baseline_id(cell: Cell, against: str | None, refs: set[str]) -> str | None:
    if cell.row == "ref" or against is None:
        return None
    return f"ref/{against}" if against in refs else f"{cell.row}/{against}"


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)
