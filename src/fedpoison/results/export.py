"""Tables out of results: CSV, Parquet, Markdown and LaTeX (booktabs), mean ± std over seeds.

The Markdown and LaTeX writers are small and dependency-free (pandas'
``to_markdown`` needs ``tabulate`` and ``Styler.to_latex`` needs ``jinja2``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from fedpoison.errors import ResultsError
from fedpoison.results.stats import STAT_LABELS, check_stat, spread
from fedpoison.results.tables import Results, aggregate_seeds, as_text, group_columns

FORMATS = ("csv", "parquet", "markdown")

#: Metrics shown in the summary table, with their headings.
SUMMARY_METRICS: dict[str, str] = {
    "final_accuracy": "final acc.",
    "best_accuracy": "best acc.",
    "accuracy_auc": "acc. AUC",
    "rounds_to_target": "rounds to target",
    "accuracy_std_last_k": "std last k",
    "max_accuracy_drop": "max drop",
    "attack_success_rate": "ASR",
    "max_attack_success_rate": "max ASR",
    "targeted_misclassification": "targeted miscl.",
    "detection_precision": "det. precision",
    "detection_recall": "det. recall",
    "detection_fpr": "det. FPR",
    "seconds_per_round": "s / round",
}


def format_mean_std(mean: float, std: float, *, digits: int = 3, latex: bool = False) -> str:
    """``0.912 ± 0.004``; ``0.912`` with one seed; ``–`` for NaN."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–" if not latex else "--"
    sep = " $\\pm$ " if latex else " ± "
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}{sep}{std:.{digits}f}"


def pivot_mean_std(results: Results, metric: str, *, rows: str = "attack_label", cols: str = "defense_label",
                   digits: int = 3, latex: bool = False, worst_case: bool = False,
                   where: dict[str, Any] | None = None, stat: str = "std") -> pd.DataFrame:
    """A ``rows`` x ``cols`` table of ``metric`` as mean ± spread over seeds (and other axes, if any vary).

    ``stat`` is the spread: ``std`` (default), ``sem`` or ``ci95``
    (:mod:`fedpoison.results.stats`). ``where`` keeps only runs whose columns
    equal the given values. ``worst_case`` adds a last row with each column's
    minimum mean over the rows.
    """
    check_stat(stat)
    runs = results.runs
    if metric not in runs:
        raise ResultsError(f"metric '{metric}': not in the results (have: {', '.join(results.metric_columns)})")
    if where:
        for k, v in where.items():
            runs = runs[as_text(runs[k]) == as_text(pd.Series([v])).iloc[0]]
    row_order = list(dict.fromkeys(runs[rows]))
    col_order = list(dict.fromkeys(runs[cols]))
    stats = runs.groupby([rows, cols], sort=False)[metric].agg(
        mean="mean", spread=lambda col: spread(pd.to_numeric(col, errors="coerce"), stat))
    table = pd.DataFrame(index=row_order, columns=col_order, dtype=object)
    for (r, c), s in stats.iterrows():
        table.loc[r, c] = format_mean_std(s["mean"], s["spread"], digits=digits, latex=latex)
    table = table.fillna("--" if latex else "–")
    if worst_case:
        means = stats["mean"].unstack(cols)
        worst = {c: means[c].min() if c in means else math.nan for c in col_order}
        table.loc["worst case"] = [format_mean_std(worst[c], math.nan, digits=digits, latex=latex) for c in col_order]
    table.index.name = {"attack_label": "attack", "defense_label": "defense"}.get(rows, rows)
    return table


def summary_table(results: Results, metrics: Sequence[str] | None = None, *, digits: int = 3,
                  latex: bool = False, stat: str = "std") -> pd.DataFrame:
    """One row per configuration, one ``mean ± spread`` column per metric present in the results.

    ``stat`` is the spread: ``std`` (default), ``sem`` or ``ci95``.
    """
    check_stat(stat)
    wanted = [m for m in (metrics or SUMMARY_METRICS) if m in results.runs and results.runs[m].notna().any()]
    agg = aggregate_seeds(results, wanted)
    by = group_columns(results)
    out = agg[by].copy()
    for m in wanted:
        out[SUMMARY_METRICS.get(m, m)] = [format_mean_std(a, b, digits=digits, latex=latex)
                                          for a, b in zip(agg[f"{m}_mean"], agg[f"{m}_{stat}"], strict=True)]
    out["seeds"] = agg["n_seeds"]
    return out.rename(columns={"attack_label": "attack", "defense_label": "defense"})


def to_markdown(df: pd.DataFrame, *, index: bool = True) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    frame = df.reset_index() if index and df.index.name is not None else df
    if index and df.index.name is None and not isinstance(df.index, pd.RangeIndex):
        frame = df.reset_index()
    headers = [str(c) for c in frame.columns]
    cells = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"±": r"$\pm$", "×": r"$\times$", "–": "--", "≤": r"$\leq$", "≥": r"$\geq$",
                  "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "$": r"\$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(df: pd.DataFrame, *, caption: str = "", label: str = "", index: bool = True,
             raw_cells: bool = True) -> str:
    """A booktabs ``table`` environment (``\\toprule``, ``\\midrule``, ``\\bottomrule``).

    Headers and index are escaped; cells are escaped unless ``raw_cells`` (for
    cells already holding LaTeX such as ``$\\pm$``). Needs ``\\usepackage{booktabs}``.
    """
    frame = df.reset_index() if index else df
    headers = [latex_escape(str(c)) for c in frame.columns]
    align = "l" * (1 if index else 0) + "r" * (len(headers) - (1 if index else 0))
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(headers) + r" \\", r"\midrule"]
    for row in frame.itertuples(index=False):
        cells = []
        for j, v in enumerate(row):
            text = _cell(v, latex=True)
            cells.append(text if raw_cells and not (index and j == 0) else latex_escape(text))
        if index and str(row[0]) == "worst case":
            lines.append(r"\midrule")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _cell(v: Any, latex: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "--" if latex else "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def export(results: Results, fmt: Literal["csv", "parquet", "markdown"], out: str | Path | None = None, *,
           stat: str = "std") -> list[Path] | str:
    """Write the tables in ``fmt``.

    ``csv`` and ``parquet`` write ``runs``, ``rounds`` and ``seeds`` (mean,
    std, standard error and 95 % CI half-width over seeds) into the folder
    ``out`` and return the paths; ``markdown`` returns the summary table
    (mean ± ``stat``, said in a first line) as text, also written to ``out``
    when given.
    """
    if fmt not in FORMATS:
        raise ResultsError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "markdown":
        text = f"{STAT_LABELS[check_stat(stat)]}\n\n" + to_markdown(summary_table(results, stat=stat), index=False)
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(text)
        return text
    if out is None:
        raise ResultsError(f"--format {fmt}: expected an output folder (--out)")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    tables = {"runs": results.runs, "rounds": results.rounds, "seeds": aggregate_seeds(results)}
    paths = []
    for name, df in tables.items():
        path = folder / f"{name}.{fmt}"
        if fmt == "csv":
            df.to_csv(path, index=False)
        else:
            try:
                df.to_parquet(path, index=False)
            except ImportError as exc:
                raise ResultsError(f"--format parquet: needs pyarrow ({exc}); pip install pyarrow") from None
        paths.append(path)
    return paths
