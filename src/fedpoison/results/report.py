"""``fedpoison report``: a self-contained HTML report, the figures, and the tables.

``write_report(DIR, OUT)`` writes:

* ``OUT/report.html``: one file, figures embedded as base64 PNG, inline CSS,
  no script, and a Content-Security-Policy (``default-src 'none'; img-src
  data:; style-src 'unsafe-inline'``) under which the browser refuses any
  network request, so it renders the same offline, attached to an e-mail;
* ``OUT/figures/<name>.png`` and ``.pdf`` (:mod:`fedpoison.results.figures`);
* ``OUT/tables/<name>.md`` and ``.tex`` (booktabs), mean ± std (or the standard error, or a 95 % t
  interval) over seeds.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fedpoison.experiments.store import atomic_write_bytes
from fedpoison.results.durability import durability_table, has_durability
from fedpoison.results.export import (
    label_columns_only,
    latex_escape,
    pivot_mean_std,
    summary_table,
    to_latex,
    to_markdown,
)
from fedpoison.results.figures import FigureFile, make_figures
from fedpoison.results.findings import Finding
from fedpoison.results.stats import STAT_LABELS, check_stat
from fedpoison.results.tables import Results, load

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta{color:#666}figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:.92em;margin-top:.4em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th{border-bottom:2px solid #444;background:#fafafa}td:first-child,th:first-child{text-align:left}
tr.worst td{border-top:2px solid #444;font-weight:600}.pass{color:#186a18}.fail{color:#a31515}.na{color:#666}
.scroll{overflow-x:auto}code{background:#f4f4f4;padding:0 .2em}
"""


@dataclass(frozen=True)
class TableFile:
    """A written table: its name, title, caption, the frame, and the Markdown and LaTeX paths."""

    name: str
    title: str
    caption: str
    frame: pd.DataFrame
    markdown: Path
    latex: Path


@dataclass
class Report:
    """What :func:`write_report` wrote."""

    html: Path
    figures: list[FigureFile]
    tables: list[TableFile]
    findings: list[Finding] = field(default_factory=list)


# ---- tables -------------------------------------------------------------------------
def make_tables(results: Results, folder: Path, *, stat: str = "std") -> list[TableFile]:
    """Write the report's tables (Markdown and LaTeX) into ``folder``; cells are mean ± ``stat``."""
    folder.mkdir(parents=True, exist_ok=True)
    spread = STAT_LABELS[check_stat(stat)]
    specs: list[tuple[str, str, str, Any]] = []
    k = results.analysis.get("last_k", 3)
    specs.append(("final_accuracy", "Final accuracy: attack x defense",
                  f"Final clean test accuracy (mean of the evaluations in the last {k} rounds), {spread}; "
                  "the last row is each defense's worst case over the attacks (of the means).",
                  lambda latex: pivot_mean_std(results, "final_accuracy", latex=latex, worst_case=True, stat=stat)))
    runs = results.runs
    if "attack_success_rate" in runs and runs["attack_success_rate"].notna().any():
        targeted = runs[runs["attack_success_rate"].notna()]["attack_label"].unique().tolist()
        specs.append(("attack_success_rate", "Attack success rate: targeted attack x defense",
                      f"Backdoor success rate (mean of the last {k} evaluations), {spread}.",
                      lambda latex: pivot_mean_std(results, "attack_success_rate", latex=latex, stat=stat).loc[
                          lambda t: t.index.isin(targeted)]))
    if has_durability(results):
        specs.append(("backdoor_durability", "Backdoor durability: targeted attack x defense",
                      f"ASR (last {k} evaluations), peak ASR, ASR after the attacker's last round, rounds from "
                      f"that round until ASR falls below 0.5 and 0.1 (a mean marked as a lower bound includes runs "
                      f"that ended with the ASR still above), and the clean-accuracy cost against the matching no-attack run, "
                      f"{spread}.",
                      lambda latex: durability_table(results, latex=latex, stat=stat)))
    if "detection_recall" in runs and runs["detection_recall"].notna().any():
        for metric, what in (("detection_precision", "precision"), ("detection_recall", "recall"),
                             ("detection_fpr", "false-positive rate")):
            if metric in runs and runs[metric].notna().any():
                specs.append((metric, f"Detection {what}: attack x defense",
                              f"Detection {what} of the attacking rows over all rounds, {spread} "
                              "('–': undefined, e.g. nothing flagged or no attacker).",
                              lambda latex, m=metric: pivot_mean_std(results, m, latex=latex, stat=stat).loc[
                                  lambda t: ~t.index.astype(str).str.startswith("none")]))
        specs.extend(_detection_timing_specs(results, spread, stat))
    if "crfl_certified_accuracy" in runs and pd.to_numeric(runs["crfl_certified_accuracy"], errors="coerce").notna().any():
        specs.append(("crfl_certified_accuracy", "Certified accuracy (CRFL): attack x defense",
                      f"Share of the certified test inputs whose parameter-smoothed prediction is correct and "
                      f"certified (radius > 0), {spread}; only runs of a certifying rule have one.",
                      lambda latex: pivot_mean_std(results, "crfl_certified_accuracy", latex=latex, stat=stat)))
    specs.append(("summary", "All metrics per configuration",
                  f"Every summary metric per configuration, {spread}.",
                  lambda latex: label_columns_only(summary_table(results, latex=latex, stat=stat)) if latex
                  else summary_table(results, stat=stat)))
    out = []
    for name, title, caption, build in specs:
        plain = build(False)
        tex_frame = build(True)
        has_index = name not in ("summary", "backdoor_durability")
        md = folder / f"{name}.md"
        tex = folder / f"{name}.tex"
        atomic_write_bytes(md, (f"<!-- {title}: {caption} -->\n" + to_markdown(plain, index=has_index)).encode())
        atomic_write_bytes(tex, to_latex(tex_frame, caption=f"{title}. {caption}", label=f"tab:{name}",
                                         index=has_index, keys=1 if has_index else 2).encode())
        out.append(TableFile(name, title, caption, plain, md, tex))
    return out


#: Detection metrics beyond precision/recall/FPR: (summary key, title, caption), in report order.
DETECTION_TIMING: tuple[tuple[str, str, str], ...] = (
    ("detection_fpr_clean", "Detection false-positive rate in clean rounds",
     "False-positive rate over the rounds in which no participant attacked"),
    ("detection_auc", "Detection ROC AUC",
     "ROC AUC of the auditor's suspicion score (of the binary flag for a filtering rule) over all rows"),
    ("detection_delay", "Detection delay (rounds)",
     "Rounds from an attacker's first attack to its first flag, mean over the attackers caught "
     "(see 'attackers never flagged' in the summary table)"),
    ("detection_exclusion_time", "Time to exclusion (rounds)",
     "Rounds from an attacker's first attack until it was first kept out of the aggregate, mean over the "
     "attackers excluded"),
)


def _detection_timing_specs(results: Results, spread: str, stat: str) -> list[tuple[str, str, str, Any]]:
    """Report tables (attack x defense) of ``fpr_clean``, AUC, detection delay and time to exclusion."""
    runs = results.runs
    specs: list[tuple[str, str, str, Any]] = []
    for metric, title, what in DETECTION_TIMING:
        if metric in runs and pd.to_numeric(runs[metric], errors="coerce").notna().any():
            # without an attack every round is clean: fpr_clean keeps the "none" row, the others drop it
            keep_none = metric == "detection_fpr_clean"
            specs.append((metric, f"{title}: attack x defense", f"{what}, {spread} ('–': undefined).",
                          lambda latex, m=metric, k=keep_none: pivot_mean_std(results, m, latex=latex, stat=stat).loc[
                              lambda t: k | ~t.index.astype(str).str.startswith("none")]))
    return specs


# ---- HTML ---------------------------------------------------------------------------
def _html_table(df: pd.DataFrame, *, index: bool = True) -> str:
    frame = df.reset_index() if index else df
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cls = ' class="worst"' if index and str(row[0]) == "worst case" else ""
        cells = "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _img(fig: FigureFile) -> str:
    data = base64.b64encode(fig.png.read_bytes()).decode()
    return (f'<figure id="fig-{fig.name}"><img src="data:image/png;base64,{data}" alt="{html.escape(fig.title)}">'
            f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)} "
            f"Files: <code>figures/{fig.name}.png</code>, <code>figures/{fig.name}.pdf</code>.</figcaption></figure>")


def render_html(results: Results, figures: Sequence[FigureFile], tables: Sequence[TableFile],
                findings: Sequence[Finding] = (), *, title: str | None = None) -> str:
    """The report as one self-contained HTML page."""
    from fedpoison import __version__

    title = title or f"fedpoison report: {results.name}"
    runs = results.runs
    seeds = sorted(runs["seed"].unique().tolist()) if "seed" in runs else []
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if results.description:
        parts.append(f"<p>{html.escape(results.description)}</p>")
    axes = ", ".join(a for a in results.axes if a != "seed") or "none"
    planned = f" of {results.planned} planned" if results.planned else ""
    parts.append(
        f'<p class="meta">{len(runs)} finished runs{planned}, {len(results.failed)} failed; seeds '
        f"{html.escape(', '.join(map(str, seeds)))}; axes: {html.escape(axes)}. Final numbers are the mean of "
        f"the evaluations in the last {results.analysis.get('last_k')} rounds; rounds to target use accuracy "
        f"{results.analysis.get('target_accuracy')}. fedpoison {__version__}, generated {now}.</p>")
    if findings:
        parts.append("<h2>Findings</h2><ul>")
        for f in findings:
            cls = {"holds": "pass", "does not hold": "fail"}.get(f.status, "na")
            parts.append(f'<li><span class="{cls}">[{f.status}]</span> {html.escape(f.claim)}: '
                         f"{html.escape(f.measured)}</li>")
        parts.append("</ul>")
    parts.append("<h2>Figures</h2>")
    parts += [_img(fig) for fig in figures]
    parts.append("<h2>Tables</h2>")
    for t in tables:
        parts.append(f'<section id="table-{t.name}"><h3>{html.escape(t.title)}</h3>'
                     f"<p>{html.escape(t.caption)} Files: <code>tables/{t.name}.md</code>, "
                     f"<code>tables/{t.name}.tex</code>.</p>{_html_table(t.frame, index=t.name != 'summary')}"
                     "</section>")
    if len(results.failed):
        parts.append('<h2>Failed runs</h2><section id="table-failed">')
        parts.append(_html_table(results.failed[["key", "label", "attempts", "error"]], index=False))
        parts.append("<p>Rerun them with <code>fedpoison grid ... --retry-failed</code>.</p></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(directory: str | Path, out: str | Path, *, results: Results | None = None,
                 findings: Sequence[Finding] = (), title: str | None = None, stat: str = "std") -> Report:
    """Load ``directory`` (unless ``results`` is given) and write the report into ``out``.

    Table cells show the mean ± ``stat`` over seeds: ``std`` (default), ``sem`` or ``ci95``.
    """
    results = results if results is not None else load(directory)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = make_figures(results, out / "figures")
    tables = make_tables(results, out / "tables", stat=stat)
    page = render_html(results, figures, tables, findings, title=title)
    path = out / "report.html"
    atomic_write_bytes(path, page.encode())
    return Report(path, figures, tables, list(findings))


__all__ = ["CSP", "Finding", "Report", "TableFile", "latex_escape", "make_tables", "render_html", "write_report"]
