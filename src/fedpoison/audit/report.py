"""The detection summary as a rich table, for the CLI to print at the end of a run.

Returns a table and prints nothing: printing is the CLI's job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.table import Table

#: (summary key, label, kind) in display order; kind: ratio, count, rounds.
_ROWS: tuple[tuple[str, str, str], ...] = (
    ("detection_precision", "precision", "ratio"),
    ("detection_recall", "recall", "ratio"),
    ("detection_fpr", "false-positive rate", "ratio"),
    ("detection_fpr_clean", "false-positive rate, clean rounds", "ratio"),
    ("detection_f1", "F1", "ratio"),
    ("detection_auc", "ROC AUC (suspicion score)", "ratio"),
    ("detection_malicious_reached", "malicious rows aggregated", "ratio"),
    ("detection_honest_excluded", "honest rows excluded", "ratio"),
    ("detection_max_rounds_to_detect", "rounds to detection (max)", "rounds"),
    ("detection_mean_rounds_to_detect", "rounds to detection (mean)", "rounds"),
    ("detection_undetected", "attackers never flagged", "count"),
    ("detection_delay", "detection delay (mean, caught)", "rounds"),
    ("detection_exclusion_time", "time to exclusion (mean)", "rounds"),
    ("detection_exclusion_time_max", "time to exclusion (max)", "rounds"),
    ("detection_never_excluded", "attackers never excluded", "count"),
)


def _cell(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if kind == "count":
        return str(int(value))
    if kind == "rounds":
        return f"{float(value):.1f}"
    return f"{float(value):.3f}"


def format_detection(summary: Mapping[str, Any], *, title: str = "Detection") -> Table:
    """A two-column table (metric, value) of the ``detection_*`` keys present in ``summary``.

    Undefined values (NaN or ``None``, e.g. recall without an attack) show as
    ``n/a``; keys absent from ``summary`` are left out. The confusion counts
    go in the caption (rows; positive = attacked this round).

    Example
    -------
    >>> t = format_detection({"detection_precision": 0.8, "detection_recall": float("nan")})
    >>> list(t.columns[1].cells)
    ['0.800', 'n/a']
    """
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, kind in _ROWS:
        if key in summary:
            table.add_row(label, _cell(summary[key], kind))
    if all(f"detection_{k}" in summary for k in ("tp", "fp", "tn", "fn")):
        counts = {k: int(summary[f"detection_{k}"] or 0) for k in ("tp", "fp", "tn", "fn")}
        table.caption = "rows: TP {tp}  FP {fp}  TN {tn}  FN {fn}".format(**counts)
    return table
