"""Spreads across seeds: std, standard error and the 95 % t interval, by hand and through the tables."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from experiment_fakes import fake_history

from fedpoison.cli import main
from fedpoison.errors import ConfigError
from fedpoison.results import aggregate_seeds, load, pivot_mean_std, summary_table
from fedpoison.results.stats import spread, t_quantile

FINALS = [0.5, 0.6, 0.7, 0.8, 0.9]  # five seeds of one configuration


def test_spreads_by_hand() -> None:
    # mean 0.7; squared deviations 0.04+0.01+0+0.01+0.04 = 0.1; s^2 = 0.1/4
    s = math.sqrt(0.025)
    assert spread(FINALS, "std") == pytest.approx(s)
    assert spread(FINALS, "sem") == pytest.approx(s / math.sqrt(5))
    # Student's t, 4 degrees of freedom, two-sided 95 %: 2.776 (printed tables)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert spread(FINALS, "ci95") == pytest.approx(2.7764451 * s / math.sqrt(5))
    # NaNs are left out; fewer than two values: no spread
    assert spread([0.5, float("nan"), 0.7], "std") == pytest.approx(math.sqrt(0.02))
    assert math.isnan(spread([0.5], "ci95")) and math.isnan(spread([], "sem"))
    with pytest.raises(ConfigError, match="--stat: expected one of std, sem, ci95, got 'var'"):
        spread(FINALS, "var")


def _store(fake_store) -> Path:  # type: ignore[no-untyped-def]
    runs = [({"seed": i, "rounds": 3}, fake_history(3, final), None) for i, final in enumerate(FINALS)]
    runs += [({"seed": i, "rounds": 3, "defense.name": "median"}, fake_history(3, 0.8), None) for i in range(2)]
    return fake_store(runs)


def test_tables_show_the_chosen_spread(fake_store) -> None:  # type: ignore[no-untyped-def]
    results = load(_store(fake_store), last_k=1)
    agg = aggregate_seeds(results, ["final_accuracy"]).set_index("defense_label")
    s = math.sqrt(0.025)
    assert agg.loc["mean", "final_accuracy_std"] == pytest.approx(s)
    assert agg.loc["mean", "final_accuracy_sem"] == pytest.approx(s / math.sqrt(5))
    assert agg.loc["mean", "final_accuracy_ci95"] == pytest.approx(2.7764451 * s / math.sqrt(5))
    assert agg.loc["median", "final_accuracy_std"] == 0.0
    expected = {"std": f"0.700 ± {s:.3f}", "sem": f"0.700 ± {s / math.sqrt(5):.3f}",
                "ci95": f"0.700 ± {2.7764451 * s / math.sqrt(5):.3f}"}
    for stat, cell in expected.items():
        assert pivot_mean_std(results, "final_accuracy", stat=stat).loc["none", "mean"] == cell
        assert summary_table(results, ["final_accuracy"], stat=stat)["final acc."].iloc[0] == cell
    assert pivot_mean_std(results, "final_accuracy").loc["none", "mean"] == expected["std"]  # the default


def test_results_and_report_commands_take_stat(fake_store, tmp_path: Path,  # type: ignore[no-untyped-def]
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _store(fake_store)
    assert main(["results", str(folder), "--stat", "ci95", "--last-k", "1"]) == 0
    out = capsys.readouterr().out
    s = math.sqrt(0.025)
    assert out.startswith("mean ± 95 % CI half-width over seeds (Student's t)\n")
    assert f"0.700 ± {2.7764451 * s / math.sqrt(5):.3f}" in out
    assert main(["report", str(folder), "-o", str(tmp_path / "rep"), "--stat", "sem"]) == 0
    capsys.readouterr()
    md = (tmp_path / "rep" / "tables" / "final_accuracy.md").read_text()
    tex = (tmp_path / "rep" / "tables" / "final_accuracy.tex").read_text()
    assert "mean ± standard error over seeds" in md and "standard error over seeds" in tex
    with pytest.raises(SystemExit) as exit_:
        main(["results", str(folder), "--stat", "var"])
    assert exit_.value.code == 2 and "invalid choice: 'var'" in capsys.readouterr().err
