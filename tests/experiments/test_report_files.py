"""``fedpoison report``: figures as PNG and PDF, Markdown and LaTeX tables, a self-contained HTML page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from experiment_fakes import fake_history

from fedpoison.cli import main
from fedpoison.results import load
from fedpoison.results.report import CSP, write_report


def _valid_figure(png: Path, pdf: Path) -> None:
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def test_figures_tables_and_html_are_written(small_report: Any) -> None:
    names = [f.name for f in small_report.figures]
    assert names == ["accuracy_vs_round", "asr_vs_round", "heatmap_final_accuracy", "detection"] or \
        names[:3] == ["accuracy_vs_round", "asr_vs_round", "heatmap_final_accuracy"]
    for fig in small_report.figures:
        _valid_figure(fig.png, fig.pdf)
        assert fig.caption and fig.title
    tables = {t.name: t for t in small_report.tables}
    assert {"final_accuracy", "attack_success_rate", "summary"} <= set(tables)
    for t in tables.values():
        md, tex = t.markdown.read_text(), t.latex.read_text()
        assert "| --- |" not in md and "|---|" in md
        assert r"\toprule" in tex and r"\bottomrule" in tex and r"\begin{table}" in tex
    final = tables["final_accuracy"].frame
    assert final.index[-1] == "worst case" and list(final.columns) == ["mean", "median"]


def test_html_is_self_contained(small_report: Any) -> None:
    page = small_report.html.read_text()
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in page
    srcs = re.findall(r'\ssrc="([^"]*)"', page)
    assert len(srcs) == len(small_report.figures) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert page.count("<table>") == len(small_report.tables)
    assert "Findings" in page and "FedAvg collapses" in page


def test_sweep_figures(fake_store: Any, tmp_path: Path) -> None:
    runs = []
    for alpha, part in ((0.1, "dirichlet"), (None, "iid")):
        for frac in (0.1, 0.3):
            for defense in ("mean", "median"):
                for attack in ("none", "sign_flip"):
                    o: dict[str, Any] = {"partition.name": part, "attack.name": attack,
                                         "attack.fraction": frac, "defense.name": defense}
                    if alpha is not None:
                        o["partition.alpha"] = alpha
                    acc = 0.9 - (0.5 * frac if attack != "none" and defense == "mean" else 0.0)
                    runs.append((o, fake_history(4, acc), None))
    d = fake_store(runs)
    report = write_report(d, tmp_path / "rep")
    names = [f.name for f in report.figures]
    assert {"accuracy_vs_round", "heatmap_final_accuracy", "accuracy_vs_fraction", "accuracy_vs_alpha"} <= set(names)
    assert "asr_vs_round" not in names  # no targeted attack
    for fig in report.figures:
        _valid_figure(fig.png, fig.pdf)
    fixed = {f.name: f.caption for f in report.figures}
    assert "Fixed: attack.fraction = 0.1" in fixed["accuracy_vs_alpha"]
    assert "Fixed:" in fixed["accuracy_vs_round"] and "partition" in fixed["accuracy_vs_round"]
    r = load(d)
    assert r.runs.loc[r.runs["partition.name"] == "iid", "attack_label"].iloc[0] == "none"


def test_report_cli(fake_store: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = fake_store([
        ({"attack.name": "none"}, fake_history(3, 0.9), None),
        ({"attack.name": "backdoor", "attack.fraction": 0.2}, fake_history(3, 0.85, asr=0.9), None),
    ])
    assert main(["report", str(d), "-o", str(tmp_path / "r")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"report: {tmp_path / 'r' / 'report.html'}" in out
    assert "backdoor" in out and "0.525 (ASR 0.60)" in out  # means of the last 3 evaluations
    assert (tmp_path / "r" / "figures" / "asr_vs_round.pdf").is_file()
    assert main(["report", str(tmp_path / "empty")]) == 2
