"""Every LaTeX table a report writes compiles with pdflatex + booktabs and fits the page.

Each ``.tex`` file is ``\\input`` into a plain ``article`` document; the test fails on
a LaTeX error and on any "Overfull \\hbox" (a table wider than the text).
``.ci/run`` installs Debian's TeX Live; without ``pdflatex`` the compile tests skip.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fedpoison.results.export import latex_escape, split_columns, to_latex

PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed (.ci/run installs TeX Live)")

#: ``\\tracinglostchars=2`` logs every character the font cannot print ("Missing character").
DOCUMENT = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\tracinglostchars=2\n"
            "\\begin{document}\n\\input{%s}\n\\end{document}\n")


def compile_tex(table: Path, workdir: Path) -> str:
    """Compile ``table`` inside an article; return the log. Fails the test on an error or an overfull box."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(table, workdir / "table.tex")
    (workdir / "doc.tex").write_text(DOCUMENT % "table")
    proc = subprocess.run([str(PDFLATEX), "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=workdir, capture_output=True, text=True, timeout=120)
    log = (workdir / "doc.log").read_text(errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert proc.returncode == 0, f"{table.name} does not compile: {errors[:3]}"
    assert "Overfull \\hbox" not in log, f"{table.name} is wider than the text width"
    assert (workdir / "doc.pdf").stat().st_size > 0
    return log


@needs_pdflatex
def test_every_table_of_a_report_compiles(small_report: Any, tmp_path: Path) -> None:
    tex_files = sorted(Path(small_report.html).parent.glob("tables/*.tex"))
    assert {t.latex for t in small_report.tables} == set(tex_files) and len(tex_files) >= 3
    for tex in tex_files:
        compile_tex(tex, tmp_path / tex.stem)


def hostile_frame(columns: int = 19) -> pd.DataFrame:
    """A wide summary whose labels hold every character LaTeX treats specially."""
    labels = ["sign_flip(scale=4.0) 100% & #1 $x$ {a} ~^ \\ <b> |c| [clip] λ=0.5 café",
              "model_replacement"]
    data: dict[str, Any] = {"attack": labels, "defense": ["mean+norm_mad", "trimmed_mean(beta=0.1)"]}
    for j in range(columns - 2):
        data[f"metric_{j} ± x"] = [f"0.{j:03d} ± 0.001", math.nan]
    return pd.DataFrame(data)


@needs_pdflatex
def test_wide_table_with_special_characters_is_split_and_compiles(tmp_path: Path) -> None:
    frame = hostile_frame()
    tex = to_latex(frame, caption="Caption with under_score & 50%", label="tab:x", index=False, raw_cells=False,
                   keys=2)
    parts = tex.count("\\begin{tabular}")
    assert parts >= 3, "19 columns of 'x.xxx ± y.yyy' cannot fit 345pt in fewer than 3 parts"
    assert tex.count("\\label{tab:x}") == 1 and "\\label{tab:x-2}" in tex and f"part {parts} of {parts}" in tex
    # every part repeats the two key columns; every metric column appears exactly once
    lines = tex.splitlines()
    header_rows = [lines[i + 1] for i, line in enumerate(lines) if line == "\\toprule"]
    assert len(header_rows) == parts
    for row in header_rows:
        assert [c.replace("\\raggedright ", "").strip() for c in row.split(" & ")[:2]] == ["attack", "defense"]
    for j in range(17):
        assert tex.count(latex_escape(f"metric_{j} ± x")) == 1
    path = tmp_path / "wide.tex"
    path.write_text(tex)
    compile_tex(path, tmp_path / "build")


@needs_pdflatex
def test_special_characters_print_without_missing_glyphs(tmp_path: Path) -> None:
    """Every escaped character has a glyph in the default fonts; plain words pass through unchanged."""
    assert latex_escape("plain words 0.5") == "plain words 0.5"
    path = tmp_path / "t.tex"
    path.write_text(to_latex(hostile_frame(4), index=False, raw_cells=False, keys=2))
    log = compile_tex(path, tmp_path / "build")
    assert "Missing character" not in log


def test_split_columns_packs_in_order_and_repeats_keys() -> None:
    assert split_columns([40, 100, 100, 100, 100], keys=1, budget=245) == [[0, 1, 2], [0, 3, 4]]
    assert split_columns([40, 10, 300], keys=1, budget=100) == [[0, 1], [0, 2]]  # an oversize column stands alone
    assert split_columns([40], keys=1) == [[0]]
    assert split_columns([30, 30, 10, 10], keys=2, budget=1000) == [[0, 1, 2, 3]]


def test_key_columns_are_escaped_even_with_raw_value_cells() -> None:
    frame = pd.DataFrame({"attack": ["sign_flip"], "defense": ["a&b"], "acc": ["0.9 $\\pm$ 0.1"]})
    tex = to_latex(frame, index=False, keys=2)
    assert "sign\\_flip & a\\&b & 0.9 $\\pm$ 0.1 \\\\" in tex
