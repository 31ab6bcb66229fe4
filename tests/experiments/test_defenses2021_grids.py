"""The Fashion-MNIST grids of examples/defenses2021 (rlr, crfl and detection against backdoors) expand and validate."""

from __future__ import annotations

from pathlib import Path

from fedpoison.experiments.grid import load_grid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "defenses2021"


def test_backdoor_grids_expand_to_the_documented_runs() -> None:
    asr = load_grid(EXAMPLES / "backdoor_asr_rlr_crfl.yaml")
    assert len(asr) == 6
    labels = {(r.config.attack.name, r.config.defense.name) for r in asr.runs}
    assert labels == {(a, d) for a in ("none", "backdoor") for d in ("mean", "rlr", "crfl")}
    cfg = asr.runs[0].config
    setting = (cfg.dataset.name, cfg.model.name, cfg.partition.name, cfg.clients.num)
    assert setting == ("fashion-mnist", "cnn28", "fang", 30)
    assert cfg.attack.fraction == 0.2 and cfg.attack.start_round == 3
    grid = load_grid(EXAMPLES / "backdoor_attacks_x_defenses.yaml")
    assert len(grid) == 5
    pairs = {(r.config.attack.name, r.config.defense.name, r.config.audit.name) for r in grid.runs}
    assert ("backdoor", "mean", "none") not in pairs  # that run comes from the first grid
    assert ("backdoor", "mean", "norm_mad") in pairs and ("model_replacement", "flame", "none") in pairs


def test_crfl_schedule_grid_runs_the_growing_threshold_scaled_to_cnn28() -> None:
    grid = load_grid(EXAMPLES / "backdoor_asr_crfl_schedule.yaml")
    assert len(grid) == 12 and {r.config.seed for r in grid.runs} == {0, 1, 2}
    crfl = [r.config.defense.params_dict() for r in grid.runs if r.config.defense.name == "crfl"]
    assert all((p["crfl_clip_start"], p["crfl_clip_growth"], p["crfl_clip"], p["crfl_sigma"]) == (8.0, 0.4, 60.0, 0.01)
               for p in crfl)
    # the grid of the recorded constant-rho figures keeps its constant rho
    old = load_grid(EXAMPLES / "backdoor_asr_rlr_crfl_patch.yaml")
    assert all(r.config.defense.params_dict()["crfl_clip_start"] is None for r in old.runs
               if r.config.defense.name == "crfl")


def test_crfl_sigma_sweep_shares_the_schedule_grids_crfl_run_at_sigma_001() -> None:
    sweep = load_grid(EXAMPLES / "backdoor_asr_crfl_sigma.yaml")
    assert len(sweep) == 18
    assert sorted({r.config.defense.params_dict()["crfl_sigma"] for r in sweep.runs}) == [0.01, 0.02, 0.05]
    assert all(r.config.defense.params_dict()["crfl_clip_start"] == 8.0 for r in sweep.runs)
    # the sigma = 0.01 runs are those of backdoor_asr_crfl_schedule.yaml, so its FedAvg runs are the comparison
    schedule = {r.key for r in load_grid(EXAMPLES / "backdoor_asr_crfl_schedule.yaml").runs
                if r.config.defense.name == "crfl"}
    assert {r.key for r in sweep.runs if r.config.defense.params_dict()["crfl_sigma"] == 0.01} == schedule
