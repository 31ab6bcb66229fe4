"""A grid sweeps auditors as it sweeps rules; the report shows each pair's detection metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from fedpoison.experiments.executor import InlineExecutor
from fedpoison.experiments.grid import expand_grid
from fedpoison.experiments.runner import run_grid
from fedpoison.experiments.store import ResultStore
from fedpoison.results import load
from fedpoison.results.report import write_report


def test_grid_sweeps_auditors_times_rules_on_digits(tmp_path: Path) -> None:
    grid = expand_grid({
        "name": "auditors-x-rules",
        # the attack starts in round 2: rounds 0 and 1 are clean, so fpr_clean is defined
        "base": {"rounds": 4, "clients": {"num": 8}, "dataset": {"name": "digits", "limit": 400},
                 "local": {"epochs": 1},
                 "attack": {"name": "sign_flip", "scale": 4.0, "fraction": 0.25, "start_round": 2}},
        "axes": {"audit.name": ["none", "norm_mad", "multi_signal"], "defense.name": ["mean", "median", "krum"]},
    })
    assert len(grid) == 9
    out = tmp_path / "runs"
    progress = run_grid(grid, ResultStore(out), InlineExecutor(warm_up=False))
    assert progress.done == 9 and progress.failed == 0
    results = load(out)
    runs = results.runs.set_index("defense_label")
    assert sorted(runs.index) == sorted(["mean", "median", "krum", "mean+norm_mad", "median+norm_mad",
                                          "krum+norm_mad", "mean+multi_signal", "median+multi_signal",
                                          "krum+multi_signal"])
    # the auditor in front of the rule is what detects: an auditor's AUC comes from its score
    for label in ("median+norm_mad", "krum+multi_signal"):
        summary = json.loads((out / "runs" / runs.loc[label, "key"] / "summary.json").read_text())
        assert summary["detection_auc_source"] == "score"
        assert summary["detection_clean_rounds"] == 2
        assert 0.0 <= summary["detection_fpr_clean"] <= 1.0
    # median selects every row and has no auditor: it detects nothing, flags nothing in clean rounds
    assert runs.loc["median", "detection_recall"] == 0.0 and runs.loc["median", "detection_fpr_clean"] == 0.0
    assert runs.loc["median", "detection_undetected"] == 2
    # a 4x sign flip is plain to norm_mad: caught on its first attack
    assert runs.loc["mean+norm_mad", "detection_recall"] == 1.0
    assert runs.loc["mean+norm_mad", "detection_delay"] == 0.0
    # per round in the history: the clean rounds carry fpr_clean, the attacked ones do not
    hist = pd.read_csv(out / "runs" / runs.loc["mean+norm_mad", "key"] / "history.csv")
    assert hist["detection_fpr_clean"].notna().tolist() == [True, True, False, False]
    assert hist["detection_attackers_seen"].tolist() == [0, 0, 2, 2]
    # the report has the timing tables, rows = attacks, columns = every rule+auditor pair
    report = write_report(out, tmp_path / "report", results=results)
    tables = {t.name: t for t in report.tables}
    for name in ("detection_fpr_clean", "detection_delay", "detection_auc"):
        assert name in tables, sorted(tables)
        assert set(tables[name].frame.columns) >= {"mean+norm_mad", "median+multi_signal"}
        assert r"\begin{table}" in tables[name].latex.read_text()
    delay = tables["detection_delay"].frame
    assert delay.loc[delay.index[0], "mean+norm_mad"].startswith("0.000")
    assert "Detection delay" in report.html.read_text()
    assert math.isnan(results.runs["detection_delay"].where(results.runs["defense_label"] == "median").max())

