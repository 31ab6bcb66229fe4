"""Reproductions: files, grids, verdicts, and the smoke scale of each shipped reproduction end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fedpoison.cli import main
from fedpoison.errors import ConfigError
from fedpoison.experiments.grid import expand_grid
from fedpoison.reproductions import available, cells, load_reproduction, reproduction_grid, verdict
from fedpoison.reproductions.collect import final_metric
from fedpoison.reproductions.compare import DISAGREES, NOT_RUN, SAME_DIRECTION, WITHIN, compare
from fedpoison.reproductions.spec import cell_of_assignment

NAMES = sorted(available())


def test_both_reproductions_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert {"fang2020_t2c", "fang2025_foundationfl_t1b"} <= set(NAMES)
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out


@pytest.mark.parametrize("name", NAMES)
def test_smoke_scale_runs_and_compares_every_cell_of_the_paper(name: str, tmp_path: Path) -> None:
    rep = load_reproduction(name)
    out = tmp_path / name
    assert main(["reproduce", name, "--scale", "smoke", "--out", str(out), "--workers", "0", "--quiet"]) == 0
    record = json.loads((out / "reproduction" / "comparison.json").read_text())
    got = {(c["row"], c["column"]): c for c in record["cells"]}
    for row in rep.rows:
        for j, col in enumerate(rep.columns):
            cell = got[(row.id, col.id)]
            assert cell["paper"] == rep.numbers[row.id][j]
            assert cell["seeds"] == len(rep.scales["smoke"].seeds) and cell["verdict"] != NOT_RUN
            assert 0.0 <= cell["mean"] <= 1.0
            assert cell["difference"] == pytest.approx(cell["mean"] - cell["paper"], abs=1e-6)
    assert len(got) == len(rep.rows) * len(rep.columns) + len(rep.references)
    assert record["changes"] == rep.scales["smoke"].changes
    html = (out / "reproduction" / "comparison.html").read_text()
    tex = (out / "reproduction" / "comparison.tex").read_text()
    for row in rep.rows:
        assert row.label in html and row.label in tex
    assert r"\begin{tabular}" in tex and tex.count(r" \\") == len(got) + 1  # header + one line per cell
    # Resumable: a second call finds every run finished and computes nothing.
    before = sorted(p.name for p in (out / "runs").iterdir())
    assert main(["reproduce", name, "--scale", "smoke", "--out", str(out), "--workers", "0", "--quiet"]) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == before


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_every_grid_run_maps_to_exactly_one_cell(name: str, scale: str) -> None:
    rep = load_reproduction(name)
    grid = expand_grid(reproduction_grid(rep, scale))
    found = [cell_of_assignment(rep, run.assignment) for run in grid.runs]
    assert all(c is not None for c in found)
    assert len({c.id for c in found if c}) == len(cells(rep)), "no two cells merged into one config"
    assert len(grid) == len(cells(rep)) * len(rep.scales[scale].seeds)


def test_fang_table_is_the_papers() -> None:
    rep = load_reproduction("fang2020_t2c")
    assert [c.label for c in rep.columns] == ["NoAttack", "Gaussian", "LabelFlip", "Partial", "Full"]
    assert rep.numbers == {"krum": [0.16, 0.16, 0.16, 0.90, 0.91], "trimmed_mean": [0.10, 0.10, 0.12, 0.26, 0.28],
                           "median": [0.09, 0.12, 0.12, 0.21, 0.29]}
    grid = expand_grid(reproduction_grid(rep, "paper"))
    by_cell = {cell_of_assignment(rep, r.assignment).id: r.config for r in grid.runs if r.config.seed == 0}
    full = by_cell["krum/full"]
    assert (full.attack.name, full.attack.knowledge, full.attack.count, full.defense.f) == ("fang_krum", "omniscient",
                                                                                           20, 20)
    assert full.rounds == 2000 and full.local.steps == 1 and full.local.batch_size == 64
    assert full.model.name == "fang_dnn" and full.partition.name == "fang" and full.partition.bias == 0.5
    assert by_cell["median/partial"].attack.name == "fang_trim"
    assert by_cell["median/partial"].attack.model_extra["variant"] == "partial"
    assert by_cell["trimmed_mean/none"].attack.name == "none" and by_cell["trimmed_mean/none"].defense.f == 20


def test_foundationfl_table_is_the_papers() -> None:
    """Table I(b) of FoundationFL (Fashion-MNIST), its protocol as Sec. VI-A states it."""
    rep = load_reproduction("fang2025_foundationfl_t1b")
    assert [c.label for c in rep.columns] == ["No attack", "LF attack", "Gaussian attack", "Trim attack",
                                              "Krum attack", "Min-Max attack", "Min-Sum attack"]
    assert rep.numbers == {"fedavg": [0.18, 0.21, 0.21, 0.38, 0.21, 0.30, 0.32],
                           "trimmed_mean": [0.21, 0.29, 0.26, 0.47, 0.32, 0.24, 0.23],
                           "median": [0.23, 0.27, 0.27, 0.35, 0.29, 0.31, 0.29],
                           "ffl_trimmed_mean": [0.18, 0.18, 0.18, 0.19, 0.20, 0.19, 0.18],
                           "ffl_median": [0.18, 0.20, 0.18, 0.18, 0.21, 0.19, 0.20]}
    grid = expand_grid(reproduction_grid(rep, "paper"))
    by_cell = {cell_of_assignment(rep, r.assignment).id: r.config for r in grid.runs if r.config.seed == 0}
    trim = by_cell["fedavg/trim"]
    assert (trim.attack.name, trim.attack.knowledge, trim.attack.count) == ("fang_trim", "omniscient", 20)
    assert trim.attack.model_extra["space"] == "update" and trim.defense.name == "mean"
    assert trim.rounds == 3000 and trim.local.steps == 1 and trim.local.batch_size == 32
    assert trim.model.name == "fang_dnn" and trim.model.model_extra["hidden"] == 100
    assert trim.partition.name == "fang" and trim.partition.bias == 0.5 and trim.clients.num == 100
    gauss = by_cell["median/gaussian"].attack
    assert gauss.model_extra["std"] ** 2 == pytest.approx(200.0, rel=1e-6) and gauss.model_extra["mode"] == "random"
    assert by_cell["trimmed_mean/none"].defense.f == 20 and by_cell["trimmed_mean/none"].attack.name == "none"
    ffl = by_cell["ffl_median/min_max"].defense
    assert ffl.name == "median" and ffl.pre == ["foundation_fl"] and ffl.model_extra["ffl_synthetic"] == 50
    assert by_cell["median/min_max"].defense.pre == []


def test_verdicts_by_hand() -> None:
    tol = 0.05
    assert verdict(0.14, 0.10, tol) == WITHIN
    assert verdict(0.15, 0.10, tol) == WITHIN  # the boundary counts
    # Krum collapses in both, by a different amount: up against the no-attack cell in both.
    assert verdict(0.60, 0.91, tol, ours_base=0.20, paper_base=0.16) == SAME_DIRECTION
    # The attack does nothing here, the paper says it does a lot.
    assert verdict(0.21, 0.91, tol, ours_base=0.20, paper_base=0.16) == DISAGREES
    # Both flat (effect within tolerance) but the levels differ: same direction, different size.
    assert verdict(0.30, 0.10, tol, ours_base=0.29, paper_base=0.10) == SAME_DIRECTION
    assert verdict(math.nan, 0.10, tol) == NOT_RUN


def test_compare_uses_the_row_baseline_and_the_reference() -> None:
    rep = load_reproduction("fang2020_t2c")
    values = {"krum/none": [0.30], "krum/full": [0.85, 0.95], "ref/fedavg": [0.20], "median/full": [0.31]}
    res = {f"{r.row}/{r.column}": r for r in compare(rep, values)}
    assert res["krum/full"].mean == pytest.approx(0.90) and res["krum/full"].std == pytest.approx(0.0707107, 1e-5)
    assert res["krum/full"].verdict == WITHIN and res["krum/full"].baseline == "krum/none"
    assert res["krum/none"].baseline == "ref/fedavg" and res["krum/none"].verdict == SAME_DIRECTION
    assert res["median/full"].verdict == WITHIN
    assert res["median/none"].verdict == NOT_RUN and math.isnan(res["median/none"].mean)


def test_final_metric_is_the_last_evaluation() -> None:
    history = pd.DataFrame({"round": [0, 1, 2, 3], "test_accuracy": [0.1, None, 0.7, None]})
    assert final_metric(history, "error") == pytest.approx(0.3)
    assert final_metric(history, "accuracy") == pytest.approx(0.7)
    assert final_metric(history, "accuracy", last_k=2) == pytest.approx(0.4)
    assert math.isnan(final_metric(pd.DataFrame({"round": [0]}), "error"))


def test_a_bad_reproduction_file_gets_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(available()["fang2020_t2c"].read_text())
    data["numbers"]["krum"] = [0.16, 0.16]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"numbers.krum: expected 5 values"):
        load_reproduction(bad)
    assert main(["reproduce", str(bad), "--scale", "smoke", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "numbers.krum" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists(), "nothing written for a bad file"
    assert main(["reproduce", "fang2020_t2", "--scale", "smoke"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["reproduce", "fang2020_t2c", "--scale", "smoke", "--set", "bogus.key=1", "--dry-run"]) == 2
    assert "bogus.key" in capsys.readouterr().err
