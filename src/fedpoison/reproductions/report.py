"""The comparison report of a reproduction: HTML, LaTeX, Markdown and JSON.

Every format carries the same content: per cell the paper's value,
fedpoison's mean, the difference, the spread over seeds and the verdict; the
tolerance (declared in the reproduction file before the run); the protocol
changes the scale made; and the protocol choices the paper leaves open.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpoison.reproductions.compare import DISAGREES, NOT_RUN, SAME_DIRECTION, WITHIN, CellResult
from fedpoison.reproductions.spec import Reproduction, scale_of

_COLOURS = {WITHIN: "#d9f2d9", SAME_DIRECTION: "#fff2cc", DISAGREES: "#f8d0d0", NOT_RUN: "#eeeeee"}
_SHORT = {WITHIN: "within", SAME_DIRECTION: "same dir.", DISAGREES: "disagrees", NOT_RUN: "not run"}


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the written report."""

    html: Path
    latex: Path
    markdown: Path
    json: Path


def _f(x: float, digits: int = 2) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:+.2f}"


def _ours(r: CellResult) -> str:
    if not r.values:
        return "–"
    text = _f(r.mean)
    if len(r.values) > 1:
        text += f" ± {_f(r.std)}"
    if r.diverged:
        text += f" ({r.diverged} diverged)"
    return text


def counts(results: Sequence[CellResult]) -> dict[str, int]:
    """Number of cells per verdict."""
    out = {v: 0 for v in (WITHIN, SAME_DIRECTION, DISAGREES, NOT_RUN)}
    for r in results:
        out[r.verdict] += 1
    return out


def markdown_table(rep: Reproduction, results: Sequence[CellResult]) -> str:
    """The comparison as a Markdown table, one line per cell."""
    lines = ["| cell | paper | fedpoison (mean ± std over seeds) | seeds | difference | verdict |",
             "|---|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r.label} | {_f(r.paper)} | {_ours(r)} | {len(r.values)} | {_signed(r.difference)} "
                     f"| {r.verdict} |")
    return "\n".join(lines)


def grid_markdown(rep: Reproduction, results: Sequence[CellResult]) -> str:
    """The paper's table layout, each cell ``fedpoison (paper) verdict``."""
    by = {(r.row, r.column): r for r in results}
    head = "| rule | " + " | ".join(c.label for c in rep.columns) + " |"
    lines = [head, "|---|" + "---:|" * len(rep.columns)]
    for row in rep.rows:
        cells = []
        for col in rep.columns:
            r = by[(row.id, col.id)]
            cells.append(f"{_f(r.mean)} ({_f(r.paper)}) {_SHORT[r.verdict]}")
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("–", "--"), ("->", r"$\to$")):
        text = text.replace(a, b)
    return text


def latex_table(rep: Reproduction, scale: str, results: Sequence[CellResult]) -> str:
    """A ``tabular`` (booktabs) with one line per cell, and the scale's changes as a footnote."""
    sc = scale_of(rep, scale)
    lines = [
        r"% fedpoison reproduction " + rep.name + f" ({scale} scale); needs \\usepackage{{booktabs}}",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _latex_escape(f"{rep.title}: paper vs fedpoison ({scale} scale), tolerance "
                                     f"{rep.tolerance:g}") + "}",
        r"\begin{tabular}{lrrrrl}",
        r"\toprule",
        r"cell & paper & fedpoison & seeds & difference & verdict \\",
        r"\midrule",
    ]
    for r in results:
        lines.append(" & ".join(_latex_escape(x) for x in (r.label, _f(r.paper), _ours(r), str(len(r.values)),
                                                            _signed(r.difference), r.verdict)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if sc.changes:
        lines.append(r"\par\smallskip\footnotesize Protocol changes at this scale: "
                     + _latex_escape("; ".join(sc.changes)) + ".")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render_html(rep: Reproduction, scale: str, results: Sequence[CellResult], meta: Mapping[str, Any]) -> str:
    """A standalone HTML page: the table layout, the per-cell table, changes and choices."""
    sc = scale_of(rep, scale)
    e = html.escape
    by = {(r.row, r.column): r for r in results}
    grid = ["<table><tr><th>rule</th>" + "".join(f"<th>{e(c.label)}</th>" for c in rep.columns) + "</tr>"]
    for row in rep.rows:
        tds = []
        for col in rep.columns:
            r = by[(row.id, col.id)]
            tds.append(f'<td style="background:{_COLOURS[r.verdict]}" title="{e(r.verdict)}">'
                       f"<b>{e(_f(r.mean))}</b> <small>(paper {e(_f(r.paper))})</small></td>")
        grid.append(f"<tr><th>{e(row.label)}</th>{''.join(tds)}</tr>")
    grid.append("</table>")
    rows = ["<table><tr><th>cell</th><th>paper</th><th>fedpoison (mean ± std)</th><th>seeds</th>"
            "<th>difference</th><th>verdict</th></tr>"]
    for r in results:
        rows.append(f'<tr style="background:{_COLOURS[r.verdict]}"><td>{e(r.label)}</td><td>{_f(r.paper)}</td>'
                    f"<td>{e(_ours(r))}</td><td>{len(r.values)}</td><td>{_signed(r.difference)}</td>"
                    f"<td>{e(r.verdict)}</td></tr>")
    rows.append("</table>")
    n = counts(results)
    changes = "".join(f"<li>{e(c)}</li>" for c in sc.changes) or "<li>none (the paper's protocol)</li>"
    choices = "".join(f"<tr><td>{e(c.what)}</td><td>{e(c.choice)}</td><td>{e(c.reason)}</td></tr>"
                      for c in rep.choices)
    info = "".join(f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in meta.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(rep.name)} ({e(scale)})</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:left}}small{{color:#555}}</style></head><body>
<h1>{e(rep.title)}</h1>
<p>{e(rep.paper.citation)}<br>{e(rep.paper.table)}; {e(rep.paper.page)}</p>
<p><b>Each cell:</b> {e(rep.paper.meaning)}</p>
<p><b>Scale:</b> {e(scale)}. <b>Tolerance</b> (declared in the reproduction file before the run):
{rep.tolerance:g}. Verdicts: {n[WITHIN]} within tolerance, {n[SAME_DIRECTION]} same direction with a different
size, {n[DISAGREES]} disagree, {n[NOT_RUN]} not run.</p>
<ul>{info}</ul>
<h2>The paper's table</h2>{''.join(grid)}
<h2>Cell by cell</h2>{''.join(rows)}
<h2>Protocol changes made by this scale</h2><ul>{changes}</ul>
<h2>Protocol choices the paper leaves open</h2>
<table><tr><th>what</th><th>fedpoison</th><th>why</th></tr>{choices}</table>
</body></html>
"""


def write_report(rep: Reproduction, scale: str, results: Sequence[CellResult], folder: str | Path,
                 meta: Mapping[str, Any] | None = None) -> ReportFiles:
    """Write ``comparison.{html,tex,md,json}`` into ``folder``."""
    from fedpoison.experiments.store import atomic_write_bytes

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    files = ReportFiles(out / "comparison.html", out / "comparison.tex", out / "comparison.md", out / "comparison.json")
    atomic_write_bytes(files.html, render_html(rep, scale, results, meta).encode())
    atomic_write_bytes(files.latex, latex_table(rep, scale, results).encode())
    sc = scale_of(rep, scale)
    md = [f"# {rep.title} ({scale} scale)", "", grid_markdown(rep, results), "", markdown_table(rep, results), "",
          f"Tolerance {rep.tolerance:g}; protocol changes: " + ("; ".join(sc.changes) or "none"), ""]
    atomic_write_bytes(files.markdown, "\n".join(md).encode())
    record = {"name": rep.name, "scale": scale, "tolerance": rep.tolerance, "changes": sc.changes, "meta": meta,
              "counts": counts(results), "cells": [r.to_dict() for r in results]}
    atomic_write_bytes(files.json, json.dumps(record, indent=2).encode())
    return files
