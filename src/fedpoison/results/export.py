"""Tables out of results: CSV, Parquet, Markdown and LaTeX (booktabs), mean ± std over seeds.

The Markdown and LaTeX writers are small and dependency-free (pandas'
``to_markdown`` needs ``tabulate`` and ``Styler.to_latex`` needs ``jinja2``).
"""

from __future__ import annotations

import math
import re
import unicodedata
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
    "backdoor_lifespan_50": "rounds to ASR<0.5",
    "backdoor_lifespan_10": "rounds to ASR<0.1",
    "detection_precision": "det. precision",
    "detection_recall": "det. recall",
    "detection_fpr": "det. FPR",
    "detection_fpr_clean": "det. FPR clean",
    "detection_auc": "det. AUC",
    "detection_delay": "det. delay",
    "detection_undetected": "never flagged",
    "detection_exclusion_time": "time to excl.",
    "crfl_certified_accuracy": "certified acc.",
    "crfl_mean_radius": "cert. radius",
    "crfl_smoothed_attack_success_rate": "smoothed ASR",
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


def label_columns_only(summary: pd.DataFrame, labels: Sequence[str] = ("attack", "defense")) -> pd.DataFrame:
    """``summary`` without the configuration columns that the ``labels`` already determine.

    A summary lists both the short labels (``sign_flip(scale=4.0)``) and the
    config columns they come from (``attack.name``, ``attack.scale``). Where the
    labels tell the rows apart, the other configuration columns repeat them and
    are dropped (a column that varies within one label pair is kept).
    """
    metric_headings = set(SUMMARY_METRICS.values()) | {"seeds"}
    config_cols = [c for c in summary.columns if c not in metric_headings and c not in labels]
    if not set(labels) <= set(summary.columns) or summary.duplicated(list(labels)).any():
        return summary
    return summary.drop(columns=config_cols)


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


_LATEX_ESCAPES = {"±": r"$\pm$", "×": r"$\times$", "–": "--", "—": "---", "≤": r"$\leq$", "≥": r"$\geq$",
                  "…": r"\ldots{}", "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "$": r"\$",
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_GREEK = {ch: rf"$\{name}$" for ch, name in zip("αβγδεζηθικλμνξπρστυφχψω",
                                               ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
                                                "iota", "kappa", "lambda", "mu", "nu", "xi", "pi", "rho", "sigma",
                                                "tau", "upsilon", "phi", "chi", "psi", "omega"], strict=True)}

#: Text width of LaTeX's ``article`` class (pt), the budget a table's columns must fit in.
TEXTWIDTH_PT = 345.0
#: Width of one character of ``\small`` Computer Modern (pt), rounded up, and of a column's padding.
_CHAR_PT = 4.8
_COLSEP_PT = 12.0


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text, so that pdflatex prints it as written.

    Characters outside ASCII that LaTeX does not know without extra packages fall
    back to their closest ASCII form (``é`` -> ``e``), or ``?``.

    Example
    -------
    >>> print(latex_escape("sign_flip(scale=4.0) 100% ± [clip]"))
    sign\\_flip(scale=4.0) 100\\% $\\pm$ [clip]
    """
    return "".join(_LATEX_ESCAPES.get(ch) or _GREEK.get(ch) or _ascii_fallback(ch) for ch in text)


def _ascii_fallback(ch: str) -> str:
    if ch.isascii():
        return ch
    ascii_form = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return "".join(_LATEX_ESCAPES.get(c, c) for c in ascii_form) or "?"


def _visible_width(tex: str) -> float:
    """Estimated printed width (pt) of a cell's LaTeX text."""
    text = re.sub(r"\$\\[a-zA-Z]+\$", "x", tex)  # $\pm$, $\lambda$: one symbol
    text = re.sub(r"\\[a-zA-Z]+\{\}", "x", text)  # \textless{} and co.
    text = text.replace("---", "x").replace("--", "x").replace("\\", "")
    return len(text) * _CHAR_PT


def split_columns(widths: Sequence[float], keys: int, budget: float = TEXTWIDTH_PT) -> list[list[int]]:
    """Pack value columns into parts that fit ``budget`` next to the ``keys`` leading key columns.

    ``widths`` are the columns' widths (pt, padding included). Each part repeats
    the key columns and holds at least one value column; columns keep their order.

    Example
    -------
    >>> split_columns([50, 100, 100, 100], keys=1, budget=260)
    [[0, 1, 2], [0, 3]]
    """
    key_cols, key_width = list(range(keys)), sum(widths[:keys])
    parts: list[list[int]] = []
    current: list[int] = []
    used = key_width
    for j in range(keys, len(widths)):
        if current and used + widths[j] > budget:
            parts.append(key_cols + current)
            current, used = [], key_width
        current.append(j)
        used += widths[j]
    if current or not parts:
        parts.append(key_cols + current)
    return parts


def to_latex(df: pd.DataFrame, *, caption: str = "", label: str = "", index: bool = True,
             raw_cells: bool = True, keys: int = 1, max_width: float = TEXTWIDTH_PT) -> str:
    """One or more booktabs ``table`` environments (``\\toprule``, ``\\midrule``, ``\\bottomrule``).

    Parameters
    ----------
    df:
        The table; with ``index``, its index becomes the first column.
    caption, label:
        The caption (escaped) and ``\\label``; a split table's later parts get
        ``"(continued, part i of k)"`` and the label ``<label>-i``.
    index:
        Whether to print ``df``'s index as the first column.
    raw_cells:
        Keep value cells as they are (for cells already holding LaTeX such as
        ``$\\pm$``); headers and the ``keys`` leading columns are always escaped.
    keys:
        How many leading columns identify a row (the index counts as one); they
        are repeated in every part when the table is split.
    max_width:
        Width budget in pt (default: ``article``'s text width). A table wider than
        this is split into parts by columns, so every part fits.

    Notes
    -----
    The document needs ``\\usepackage{booktabs}``.
    """
    frame = df.reset_index() if index else df
    keys = max(1, min(keys, frame.shape[1]))
    headers = [latex_escape(str(c)) for c in frame.columns]
    body = [[latex_escape(_cell(v)) if j < keys or not raw_cells else _cell(v, latex=True) for j, v in enumerate(row)]
            for row in frame.itertuples(index=False)]
    widths = [max(_visible_width(t) for t in [h] + [r[j] for r in body]) + _COLSEP_PT
              for j, h in enumerate(headers)]
    wrap = _wrap_keys(widths[:keys], [[r[j] for r in body] + [headers[j]] for j in range(keys)], max_width)
    if wrap is not None:  # key columns too wide: wrap them in fixed-width paragraph columns
        widths[:keys] = [w + _COLSEP_PT for w in wrap]
        body = [[_breakable(c) if j < keys else c for j, c in enumerate(r)] for r in body]
        headers = [_breakable(h) if j < keys else h for j, h in enumerate(headers)]
    parts = split_columns(widths, keys, max_width)
    blocks = []
    for i, cols in enumerate(parts, start=1):
        lines = [r"\begin{table}[t]", r"\centering", r"\small"]
        more = f" (continued, part {i} of {len(parts)})" if i > 1 else ""
        if caption:
            lines.append(rf"\caption{{{latex_escape(caption)}{more}}}")
        if label:
            lines.append(rf"\label{{{label if i == 1 else f'{label}-{i}'}}}")
        align = "".join(("l" if wrap is None else rf"p{{{wrap[j]:.0f}pt}}") if j < keys else "r" for j in cols)
        lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(headers[j] for j in cols) + r" \\",
                  r"\midrule"]
        for row, raw in zip(body, frame.itertuples(index=False), strict=True):
            if index and str(raw[0]) == "worst case":
                lines.append(r"\midrule")
            lines.append(" & ".join(row[j] for j in cols) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


#: Share of the width budget the key columns may take before they are wrapped.
_KEY_SHARE = 0.45


def _breakable(tex: str) -> str:
    """``tex`` with line-break points after ``_ ( , = +`` and ragged-right text, for a ``p`` column."""
    return r"\raggedright " + re.sub(r"(\\_|[(,=+])", lambda m: m.group(1) + r"\allowbreak{}", tex)


def _wrap_keys(widths: Sequence[float], cells: Sequence[Sequence[str]], budget: float) -> list[float] | None:
    """Paragraph widths (pt) for the key columns when they take more than their share, else None."""
    if sum(widths) <= budget * _KEY_SHARE:
        return None
    share = budget * _KEY_SHARE / sum(widths)
    out = []
    for w, column in zip(widths, cells, strict=True):
        pieces = [p for c in column for p in re.split(r"\\_|[(,=+ ]", c)]
        longest = max((_visible_width(p) for p in pieces), default=0.0) + _CHAR_PT
        out.append(max((w - _COLSEP_PT) * share, longest))
    return out


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
