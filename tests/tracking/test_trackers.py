"""Experiment trackers: logged and read back with each backend's own reader, equal to history.csv.

TensorBoard is read with TensorBoard's event reader, MLflow with its client
over the local store, W&B (where installed) from its offline run folder.
Tracking only observes: the same run gives the same history.csv bytes with
and without it.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedpoison.cli import main
from fedpoison.errors import ConfigError
from fedpoison.experiments.executor import InlineExecutor
from fedpoison.experiments.grid import expand_grid
from fedpoison.experiments.runner import run_grid
from fedpoison.experiments.store import ResultStore
from fedpoison.tracking import GridTracking, RunTrackers, numeric_metrics, parse_track

SMALL = ["--set", "rounds=3", "--set", "clients.num=5", "--set", "dataset.limit=200", "--set", "eval.every=2"]


def _columns(history: pd.DataFrame) -> dict[str, dict[int, float]]:
    """history.csv as column -> {round: value}, numbers only (what a tracker may log)."""
    out: dict[str, dict[int, float]] = {}
    for row in history.to_dict("records"):
        for name, value in numeric_metrics(row).items():
            out.setdefault(name, {})[int(row["round"])] = value
    return out


def _tensorboard_scalars(logdir: Path) -> dict[str, dict[int, float]]:
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea_mod.EventAccumulator(str(logdir), size_guidance={ea_mod.SCALARS: 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _mlflow_runs(folder: Path) -> list[Any]:
    tracking = pytest.importorskip("mlflow.tracking")
    client = tracking.MlflowClient(tracking_uri=f"sqlite:///{(folder / 'mlflow.db').resolve()}")
    exps = client.search_experiments()
    runs = [r for e in exps for r in client.search_runs([e.experiment_id])]
    return [(client, r) for r in runs]


def _mlflow_series(client: Any, run_id: str, names: list[str]) -> dict[str, dict[int, float]]:
    return {n: {m.step: m.value for m in client.get_metric_history(run_id, n)} for n in names}


def test_numeric_metrics_keeps_finite_numbers_only() -> None:
    row = {"round": 3, "test_accuracy": 0.5, "kept": 4, "attack_active": True, "note": "x",
           "test_loss": float("nan"), "norm": np.float64(2.5), "flag": np.bool_(False), "gone": None,
           "big": float("inf"), "rows": [1, 2]}
    assert numeric_metrics(row) == {"test_accuracy": 0.5, "kept": 4.0, "attack_active": 1.0, "norm": 2.5,
                                    "flag": 0.0}


def test_tracker_names_are_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert parse_track("tensorboard, mlflow", ["mlflow"]) == ["tensorboard", "mlflow"]
    with pytest.raises(ConfigError, match=r"track: unknown trackers 'mlflw'.*did you mean 'mlflow'"):
        parse_track("mlflw")
    assert main(["run", *SMALL, "--track", "tensorbored", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "track: unknown trackers 'tensorbored'" in err and "Traceback" not in err


def test_a_missing_backend_package_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    monkeypatch.setitem(sys.modules, "mlflow.entities", None)
    with pytest.raises(ConfigError, match=r"track: mlflow needs the 'mlflow' package.*fedpoison\[mlflow\]"):
        RunTrackers.open(["mlflow"], folder=tmp_path, config={"rounds": 1})


def test_run_logged_to_tensorboard_and_mlflow_equals_history_and_changes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    tracked, plain = tmp_path / "tracked", tmp_path / "plain"
    assert main(["run", *SMALL, "--set", "attack.name=sign_flip", "--set", "attack.fraction=0.4",
                 "--out", str(tracked), "--quiet", "--track", "tensorboard,mlflow"]) == 0
    assert main(["run", *SMALL, "--set", "attack.name=sign_flip", "--set", "attack.fraction=0.4",
                 "--out", str(plain), "--quiet"]) == 0
    # an observer: the same bytes with and without tracking
    for name in ("history.csv", "audit.csv", "config.yaml"):
        assert (tracked / name).read_bytes() == (plain / name).read_bytes(), name
    history = pd.read_csv(tracked / "history.csv")
    expected = _columns(history)
    assert {"test_accuracy", "train_loss", "malicious_participants"} <= set(expected)
    assert sorted(expected["test_accuracy"]) == [0, 2]  # evaluated rounds only; NaN rounds are not logged
    summary = json.loads((tracked / "summary.json").read_text())

    # TensorBoard: one event folder; scalars are float32
    (logdir,) = list((tracked / "tensorboard").iterdir())
    scalars = _tensorboard_scalars(logdir)
    for name, series in expected.items():
        assert scalars[name] == pytest.approx({k: float(np.float32(v)) for k, v in series.items()}, rel=0, abs=0)
    assert scalars["summary/final_accuracy"][2] == pytest.approx(summary["final_accuracy"], rel=1e-6)

    # MLflow: exact doubles, the round as step; the config as params; the summary as metrics
    ((client, run),) = _mlflow_runs(tracked)
    assert run.info.status == "FINISHED" and run.data.tags["fedpoison.key"] == logdir.name.rsplit("-", 1)[-1]
    assert _mlflow_series(client, run.info.run_id, list(expected)) == expected
    assert run.data.params["attack.name"] == "sign_flip" and run.data.params["rounds"] == "3"
    assert run.data.metrics["summary.final_accuracy"] == summary["final_accuracy"]
    assert not math.isnan(run.data.metrics["summary.rounds"])


def test_grid_runs_are_logged_when_they_commit(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    grid = expand_grid({"name": "tracked", "base": {"rounds": 2, "clients": {"num": 5},
                                                    "dataset": {"limit": 200}},
                        "axes": {"seed": [0, 1]}})
    out = tmp_path / "grid"
    tracking = GridTracking(["tensorboard", "mlflow"], folder=out, experiment=grid.name)
    run_grid(grid, ResultStore(out), InlineExecutor(warm_up=False), on_event=tracking)
    runs = _mlflow_runs(out)
    assert sorted(r.info.run_name for _, r in runs) == sorted(run.label for run in grid.runs)
    for client, run in runs:
        key = run.data.tags["fedpoison.key"]
        expected = _columns(pd.read_csv(out / "runs" / key / "history.csv"))
        assert _mlflow_series(client, run.info.run_id, list(expected)) == expected
        (logdir,) = [p for p in (out / "tensorboard").iterdir() if p.name.endswith(key)]
        assert _tensorboard_scalars(logdir)["test_accuracy"] == pytest.approx(
            {k: float(np.float32(v)) for k, v in expected["test_accuracy"].items()}, rel=0, abs=0)
    assert client.get_experiment_by_name("tracked") is not None


def _wandb_records(path: Path) -> list[bytes]:
    """The records of a W&B offline run file (a LevelDB-style log: 32 KiB blocks of chunks)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, block, out, parts = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            out.append(chunk)
        elif kind == 2:  # first
            parts = chunk
        elif kind == 3:  # middle
            parts += chunk
        elif kind == 4:  # last
            out.append(parts + chunk)
    return out


def test_wandb_offline_run_equals_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'fedpoison[wandb]')")
    from wandb.proto import wandb_internal_pb2

    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--out", str(out), "--quiet", "--track", "wandb"]) == 0
    (run_file,) = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    # W&B's service process may still be writing the file when finish() returns: wait for its exit record
    deadline = time.monotonic() + 60
    records = [wandb_internal_pb2.Record.FromString(raw) for raw in _wandb_records(run_file)]
    while "exit" not in [r.WhichOneof("record_type") for r in records] and time.monotonic() < deadline:
        time.sleep(0.5)
        records = [wandb_internal_pb2.Record.FromString(raw) for raw in _wandb_records(run_file)]
    logged: dict[str, dict[int, float]] = {}
    config: dict[str, Any] = {}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            step = rec.history.step.num
            for item in rec.history.item:
                name = item.key or "/".join(item.nested_key)
                if not name.startswith("_"):
                    logged.setdefault(name, {})[step] = float(json.loads(item.value_json))
        elif kind == "run":
            config = {i.key: json.loads(i.value_json) for i in rec.run.config.update}
    kinds = [r.WhichOneof("record_type") for r in records]
    expected = _columns(pd.read_csv(out / "history.csv"))
    last = max(expected["test_accuracy"])
    # per-round detection columns are computed when the run ends; W&B's steps only go forward
    expected = {k: ({last: v[last]} if k.startswith("detection_") and last in v else v) for k, v in expected.items()}
    expected = {k: v for k, v in expected.items() if v}
    assert logged == expected, (kinds, run_file.stat().st_size)
    def value(v: Any) -> Any:  # W&B may wrap config values as {"value": ...}
        return v["value"] if isinstance(v, dict) and set(v) == {"value"} else v

    assert value(config["rounds"]) == 3 and value(config["attack"])["name"] == "none"


def test_track_in_the_config_selects_trackers_and_is_not_part_of_the_run(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from fedpoison.plugins import load_config

    config = tmp_path / "cfg.yaml"
    config.write_text("rounds: 2\nclients: {num: 5}\ndataset: {limit: 200}\ntrack: [tensorboard]\n")
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    (logdir,) = list((out / "tensorboard").iterdir())
    expected = _columns(pd.read_csv(out / "history.csv"))
    assert _tensorboard_scalars(logdir)["train_loss"] == pytest.approx(
        {k: float(np.float32(v)) for k, v in expected["train_loss"].items()}, rel=0, abs=0)
    # an observer: same key and the same resolved config.yaml as without it
    cfg = load_config(config)
    assert cfg.track == ["tensorboard"] and "track" not in (out / "config.yaml").read_text()
    assert cfg.key() == load_config(config, ["track=[]"]).key()


class _Crash(Exception):
    pass


def test_a_resumed_run_logs_its_restored_rounds_too(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from fedpoison.plugins import load_config
    from fedpoison.simulation.checkpoint import run_with_checkpoints

    cfg = load_config({"rounds": 4, "clients": {"num": 5}, "dataset": {"limit": 200}})
    out = tmp_path / "run"

    def crash(record: dict[str, Any]) -> None:
        if record["round"] == 2:
            raise _Crash

    with pytest.raises(_Crash):
        run_with_checkpoints(cfg, out=out, every=2, progress=crash)
    assert main(["run", "--resume", str(out), "--quiet", "--track", "tensorboard"]) == 0
    (logdir,) = list((out / "tensorboard").iterdir())
    expected = _columns(pd.read_csv(out / "history.csv"))
    assert sorted(expected["train_loss"]) == [0, 1, 2, 3]
    assert _tensorboard_scalars(logdir)["train_loss"] == pytest.approx(
        {k: float(np.float32(v)) for k, v in expected["train_loss"].items()}, rel=0, abs=0)


def test_a_run_that_cannot_be_logged_warns_and_the_grid_goes_on(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import fedpoison.tracking as tracking

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(tracking, "track_run_files", broken)
    grid = expand_grid({"name": "g", "base": {"rounds": 1, "clients": {"num": 5}, "dataset": {"limit": 200}},
                        "axes": {"seed": [0, 1]}})
    observer = GridTracking(["tensorboard"], folder=tmp_path, experiment="g")
    with pytest.warns(tracking.TrackingWarning) as caught:
        progress = run_grid(grid, ResultStore(tmp_path), InlineExecutor(warm_up=False), on_event=observer)
    assert progress.done == 2 and len(observer.errors) == 2
    assert [str(w.message) for w in caught] == observer.errors
    assert observer.errors[0].startswith("track: could not log run seed=0 (")
    assert observer.errors[0].endswith("): No space left on device")
