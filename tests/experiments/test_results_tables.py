"""Summary metrics, tidy tables, seed aggregation and exports (csv, parquet, markdown, LaTeX)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from experiment_fakes import fake_history

from fedpoison.cli import main
from fedpoison.errors import ResultsError
from fedpoison.metrics.summary import accuracy_metrics, summarize
from fedpoison.results import aggregate_seeds, export, load, pivot_mean_std, to_latex, to_markdown
from fedpoison.results.findings import check_findings

# ---- summary metrics, by hand ------------------------------------------------------


def test_accuracy_metrics_by_hand() -> None:
    m = accuracy_metrics(np.array([0, 1, 2, 3, 4]), np.array([0.2, 0.5, 0.9, 0.7, 0.8]), last_k=3, target=0.85)
    assert m["final_accuracy"] == pytest.approx(0.8)
    assert m["best_accuracy"] == 0.9
    assert m["rounds_to_target"] == 3.0  # reached after round index 2, i.e. 3 rounds
    assert m["accuracy_std_last_k"] == pytest.approx(np.std([0.9, 0.7, 0.8]))
    assert m["max_accuracy_drop"] == pytest.approx(0.2)
    # trapezoid: (0.35 + 0.7 + 0.8 + 0.75) / 4
    assert m["accuracy_auc"] == pytest.approx(2.6 / 4)
    never = accuracy_metrics(np.array([0, 1]), np.array([0.1, 0.2]), target=0.9)
    assert math.isnan(never["rounds_to_target"])
    one = accuracy_metrics(np.array([4]), np.array([0.6]))
    assert (one["accuracy_auc"], one["max_accuracy_drop"], one["final_accuracy"]) == (0.6, 0.0, 0.6)
    with pytest.raises(ValueError, match="last_k: expected an integer >= 1, got 0"):
        accuracy_metrics(np.array([0]), np.array([0.5]), last_k=0)


def test_final_numbers_never_average_in_an_early_sparse_evaluation() -> None:
    """eval.every=50 over 50 rounds evaluates rounds 0 and 49: "final" is round 49's, not their mean."""
    m = accuracy_metrics(np.array([0, 49]), np.array([0.1, 0.58]), last_k=3)
    assert m["final_accuracy"] == pytest.approx(0.58)
    assert math.isnan(m["accuracy_std_last_k"]), "one evaluation in the window: no spread to report"
    every2 = accuracy_metrics(np.array([0, 2, 4, 6, 8, 9]), np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.8]), last_k=3)
    assert every2["final_accuracy"] == pytest.approx(0.7)  # rounds 8 and 9 lie in the last 3 rounds
    h = pd.DataFrame({"round": [0, 10, 19], "test_accuracy": [0.2, 0.6, 0.9],
                      "attack_success_rate": [0.0, 0.5, 0.8]})
    s = summarize(h, pd.DataFrame(), last_k=3)
    assert s["final_accuracy"] == pytest.approx(0.9) and s["attack_success_rate"] == pytest.approx(0.8)


def test_summarize_uses_evaluated_rounds_and_attack_rates() -> None:
    h = pd.DataFrame({"round": [0, 1, 2, 3], "test_accuracy": [0.5, np.nan, 0.7, 0.9],
                      "test_loss": [1.0, np.nan, 0.8, 0.5], "attack_success_rate": [0.1, np.nan, 0.9, 0.5]})
    t = pd.DataFrame({"round": [0, 1, 2, 3], "train_s": 1.0, "aggregate_s": 0.5, "eval_s": 0.5})
    s = summarize(h, t, last_k=2, target=0.7)
    assert s["evaluations"] == 3 and s["final_accuracy"] == pytest.approx(0.8)
    assert s["rounds_to_target"] == 3.0 and s["final_loss"] == 0.5
    assert s["attack_success_rate"] == pytest.approx(0.7) and s["max_attack_success_rate"] == 0.9
    assert s["clean_accuracy"] == s["final_accuracy"] and s["seconds_per_round"] == 2.0
    empty = summarize(pd.DataFrame({"round": [0]}), pd.DataFrame())
    assert math.isnan(empty["final_accuracy"]) and math.isnan(empty["seconds_per_round"])


# ---- tables from a real grid --------------------------------------------------------


def test_load_gives_one_row_per_run_with_every_config_field(small_grid_dir: Path) -> None:
    r = load(small_grid_dir)
    assert len(r.runs) == 12 and r.runs["key"].is_unique and r.planned == 12
    for col in ("seed", "rounds", "clients.num", "dataset.limit", "attack.name", "attack.fraction", "defense.name",
                "defense.pre", "audit.name", "local.lr", "partition.min_samples"):
        assert col in r.config_columns and col in r.runs
    assert set(r.axes) == {"attack.name", "attack.scale", "defense.name", "seed"}
    for col in ("final_accuracy", "best_accuracy", "rounds_to_target", "accuracy_auc", "accuracy_std_last_k",
                "max_accuracy_drop", "seconds_per_round", "detection_precision", "detection_recall",
                "detection_fpr", "accuracy_drop", "rounds_to_target_relative"):
        assert col in r.runs, col
    assert r.analysis == {"last_k": 2, "target_accuracy": 0.5}
    assert (r.runs["last_k"] == 2).all()
    assert list(dict.fromkeys(r.runs["attack_label"])) == ["none", "sign_flip", "model_replacement"]
    assert set(r.runs["defense_label"]) == {"mean", "median"}
    mr = r.runs[r.runs["attack.name"] == "model_replacement"]
    assert mr["attack_success_rate"].notna().all() and r.runs.loc[r.runs["attack.name"] == "none",
                                                                  "attack_success_rate"].isna().all()


def test_rounds_table_is_tidy(small_grid_dir: Path) -> None:
    r = load(small_grid_dir)
    assert len(r.rounds) == 12 * 3
    assert r.rounds.groupby("key")["round"].apply(list).map(lambda x: x == [0, 1, 2]).all()
    for col in ("key", "attack_label", "defense_label", "seed", "test_accuracy", "train_loss"):
        assert col in r.rounds


def test_baseline_relative_metrics(small_grid_dir: Path) -> None:
    r = load(small_grid_dir).runs
    base = r[(r["attack.name"] == "none") & (r["defense.name"] == "mean") & (r["seed"] == 0)]
    hit = r[(r["attack.name"] == "sign_flip") & (r["defense.name"] == "mean") & (r["seed"] == 0)]
    assert hit["baseline_final_accuracy"].iloc[0] == pytest.approx(base["final_accuracy"].iloc[0])
    assert hit["accuracy_drop"].iloc[0] == pytest.approx(base["final_accuracy"].iloc[0] - hit["final_accuracy"].iloc[0])
    assert (r.loc[r["attack.name"] == "none", "accuracy_drop"] == 0).all()


def test_load_overrides_analysis_settings(small_grid_dir: Path) -> None:
    r = load(small_grid_dir, last_k=1, target=0.99)
    last = r.rounds.dropna(subset=["test_accuracy"]).groupby("key")["test_accuracy"].last()
    assert np.allclose(r.runs.set_index("key")["final_accuracy"].loc[last.index], last)
    assert r.runs["rounds_to_target"].isna().all()


def test_seed_aggregation_mean_std(small_grid_dir: Path) -> None:
    r = load(small_grid_dir)
    agg = aggregate_seeds(r, ["final_accuracy"])
    assert len(agg) == 6 and (agg["n_seeds"] == 2).all()
    row = agg[(agg["attack_label"] == "none") & (agg["defense_label"] == "mean")].iloc[0]
    vals = r.runs[(r.runs["attack_label"] == "none") & (r.runs["defense_label"] == "mean")]["final_accuracy"]
    assert row["final_accuracy_mean"] == pytest.approx(vals.mean())
    assert row["final_accuracy_std"] == pytest.approx(vals.std(ddof=1))


def test_pivot_and_writers(small_grid_dir: Path) -> None:
    r = load(small_grid_dir)
    t = pivot_mean_std(r, "final_accuracy", worst_case=True)
    assert list(t.columns) == ["mean", "median"] and t.index[-1] == "worst case" and t.index.name == "attack"
    assert " ± " in t.loc["none", "mean"]
    md = to_markdown(t)
    assert md.splitlines()[0] == "| attack | mean | median |" and md.count("\n") == 6
    tex = to_latex(pivot_mean_std(r, "final_accuracy", latex=True, worst_case=True), caption="A ± B", label="tab:x")
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrr}", r"$\pm$",
                  r"sign\_flip", r"\caption{A $\pm$ B}", r"\label{tab:x}"):
        assert token in tex
    with pytest.raises(ResultsError, match="metric 'nope': not in the results"):
        pivot_mean_std(r, "nope")


def test_results_cli_exports_csv_parquet_markdown(small_grid_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    r = load(small_grid_dir)
    paths = export(r, "parquet", tmp_path / "pq")
    runs = pd.read_parquet(tmp_path / "pq" / "runs.parquet")
    assert len(paths) == 3 and len(runs) == 12 and "attack.name" in runs
    assert len(pd.read_parquet(tmp_path / "pq" / "rounds.parquet")) == 36
    assert main(["results", str(small_grid_dir), "--format", "csv", "-o", str(tmp_path / "csv")]) == 0
    assert "runs.csv" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "csv" / "seeds.csv")) == 6
    assert main(["results", str(small_grid_dir)]) == 0
    md = capsys.readouterr().out
    assert md.startswith("mean ± std over seeds\n\n| attack | defense |") and "final acc." in md.splitlines()[2]
    assert len(md.strip().splitlines()) == 2 + 2 + 6
    assert main(["results", str(small_grid_dir), "--format", "markdown", "-o", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text() == md
    assert main(["results", str(tmp_path / "nothing")]) == 2
    assert "no runs/ folder" in " ".join(capsys.readouterr().err.split())


# ---- hand-made results: sweeps, divergence, findings --------------------------------


def test_diverged_runs_have_no_final_accuracy_and_count_as_collapse(fake_store) -> None:  # type: ignore[no-untyped-def]
    d = fake_store([
        ({"attack.name": "none", "defense.name": "mean"}, fake_history(5, 0.9), None),
        ({"attack.name": "scaling", "attack.fraction": 0.2, "defense.name": "mean"},
         fake_history(5, 0.9, diverge_at=2), {"diverged": True, "diverged_round": 2}),
        ({"attack.name": "scaling", "attack.fraction": 0.2, "defense.name": "median"}, fake_history(5, 0.85), None),
        ({"attack.name": "none", "defense.name": "median"}, fake_history(5, 0.88), None),
    ])
    r = load(d)
    div = r.runs[r.runs["diverged"].astype(bool)]
    assert len(div) == 1 and math.isnan(div["final_accuracy"].iloc[0])
    findings = check_findings(r)
    assert [f.status for f in findings] == ["holds", "not applicable", "holds"]
    assert "scaling 0.000" in findings[0].measured
    assert "no targeted attack in the grid" in findings[1].measured


def test_findings_fail_when_the_claims_do_not_hold(fake_store) -> None:  # type: ignore[no-untyped-def]
    d = fake_store([
        ({"attack.name": "none", "defense.name": "mean"}, fake_history(5, 0.9), None),
        ({"attack.name": "sign_flip", "attack.fraction": 0.2, "defense.name": "mean"}, fake_history(5, 0.3), None),
        ({"attack.name": "sign_flip", "attack.fraction": 0.2, "defense.name": "median"}, fake_history(5, 0.4), None),
        ({"attack.name": "backdoor", "attack.fraction": 0.2, "defense.name": "mean"},
         fake_history(5, 0.9, asr=0.2), None),
    ])
    holds = [f.status for f in check_findings(load(d))]
    assert holds == ["holds", "does not hold", "does not hold"]


def test_findings_without_defenses_or_attacks_are_not_applicable(fake_store) -> None:  # type: ignore[no-untyped-def]
    d = fake_store([
        ({"attack.name": "none", "defense.name": "mean"}, fake_history(5, 0.9), None),
        ({"attack.name": "sign_flip", "attack.fraction": 0.2, "defense.name": "mean"}, fake_history(5, 0.3), None),
    ])
    findings = check_findings(load(d))
    assert [f.status for f in findings] == ["holds", "not applicable", "not applicable"]
    assert findings[2].measured == "no defense besides FedAvg in the grid" and not findings[2].holds
    d2 = fake_store([
        ({"attack.name": "none", "defense.name": "mean"}, fake_history(5, 0.9), None),
        ({"attack.name": "sign_flip", "attack.fraction": 0.2, "defense.name": "mean"}, fake_history(5, 0.8), None),
        ({"attack.name": "sign_flip", "attack.fraction": 0.2, "defense.name": "median"}, fake_history(5, 0.85), None),
    ], name="nocollapse")
    assert [f.status for f in check_findings(load(d2))] == ["does not hold", "not applicable", "not applicable"]


def test_missing_results_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no runs/ folder"):
        load(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ResultsError, match="no finished run yet"):
        load(tmp_path)
