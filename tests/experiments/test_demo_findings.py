"""``fedpoison demo``: the README's main job, and the claims its report must show, asserted on its tables."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fedpoison.cli import main
from fedpoison.results import load
from fedpoison.results.findings import check_findings


def _check(out: Path, runs: int) -> None:
    results = load(out)
    assert len(results.runs) == runs and len(results.failed) == 0
    findings = check_findings(results)
    assert [f.claim for f in findings] == [
        "FedAvg collapses under at least one untargeted attack",
        "A backdoor succeeds under FedAvg",
        "Robust rules and auditing recover most of the accuracy",
    ]
    assert all(f.holds for f in findings), "\n".join(f"{f.claim}: {f.measured}" for f in findings)
    acc = results.runs.groupby(["attack_label", "defense_label"])["final_accuracy"].mean()
    clean = acc["none", "mean"]
    assert clean > 0.8
    assert acc["sign_flip", "mean"] < 0.5 * clean
    for defense in ("median", "mean+norm_mad"):
        assert acc["sign_flip", defense] > 0.85 * clean
    asr = results.runs.groupby(["attack_label", "defense_label"])["attack_success_rate"].mean()
    assert asr["model_replacement", "mean"] > 0.8
    assert asr["model_replacement", "median"] < 0.2 and asr["model_replacement", "mean+norm_mad"] < 0.2
    page = (out / "report" / "report.html").read_text()
    assert "Findings" in page and page.count("[holds]") == 3


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo exactly as the README runs it (about a minute on two cores)."""
    start = time.perf_counter()
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    took = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "attack \\ defense" in out and "sign_flip" in out and "(ASR" in out
    assert out.count("holds ") == 3 and "18/18 runs" in out
    assert f"report: {tmp_path / 'demo' / 'report' / 'report.html'}" in out
    _check(tmp_path / "demo", runs=18)
    assert took < 600


def test_demo_resumes_and_checks_its_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--seeds", "0"]) == 2
    assert "--seeds: expected an integer >= 1, got 0" in capsys.readouterr().err
