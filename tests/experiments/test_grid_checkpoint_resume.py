"""Long runs inside a grid: per-round progress, checkpoints, and resuming a run killed half-way.

The kill test runs the real command line, kills the grid with SIGKILL while a
long run is half done, reruns it, and checks that the run resumed from its last
checkpoint (fewer rounds computed again than the run has) and that its history
is byte-identical to the same grid run without interruption.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from experiment_fakes import CLI, TINY

from fedpoison.experiments.executor import InlineExecutor, RunTask, execute
from fedpoison.experiments.grid import expand_grid
from fedpoison.experiments.runner import GridEvent, run_grid
from fedpoison.experiments.store import CHECKPOINTS, ResultStore
from fedpoison.simulation.checkpoint import CHECKPOINT, run_with_checkpoints

#: Long enough that the kill lands mid-run: the grid learns of rounds in batches (every
#: ``LocalExecutor.POLL_S``), so the kill comes some 20 rounds after the one awaited; with 40
#: rounds the worker sometimes finished and checkpointed round 40 first, and nothing was resumed.
LONG_ROUNDS = 200
EVERY = 4


def _rounds_by_pid(store: ResultStore, key: str) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for e in store.events():
        if e["event"] == "round" and e["key"] == key:
            out.setdefault(e["pid"], []).append(e["round"])
    return out


def test_inline_grid_reports_every_round_and_cleans_its_checkpoints(tmp_path: Path) -> None:
    grid = expand_grid({"base": {**TINY, "rounds": 4}, "axes": {"seed": [0, 1]}})
    store = ResultStore(tmp_path / "out")
    events: list[GridEvent] = []
    progress = run_grid(grid, store, InlineExecutor(warm_up=False), on_event=events.append, checkpoint_every=2)
    assert progress.done == 2
    rounds = [(e.run.key, e.report["round"]) for e in events if e.kind == "round"]
    for run in grid.runs:
        assert [r for k, r in rounds if k == run.key] == [1, 2, 3, 4]
        assert list(_rounds_by_pid(store, run.key).values()) == [[1, 2, 3, 4]]
    # each run's round events come before its finish, and the bar's counts add up
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("run") == 2
    assert progress.rounds_total == progress.rounds_done == progress.rounds_computed == 8
    # checkpoints were written during the runs and removed when each committed
    assert not (store.staging_dir / CHECKPOINTS).exists()


class _Crash(Exception):
    pass


def test_a_run_resumes_from_its_checkpoint_folder_and_gives_the_same_run(tmp_path: Path) -> None:
    cfg = expand_grid({"base": {**TINY, "rounds": 6}}).runs[0].config
    key = cfg.key()
    whole = execute(RunTask(key, cfg.to_dict()), warm_up=False)
    # a run that crashed during round 5, with checkpoints every 2 rounds
    folder = tmp_path / "ckpt"

    def crash(record: dict[str, Any]) -> None:
        if record["round"] == 4:
            raise _Crash

    with pytest.raises(_Crash):
        run_with_checkpoints(cfg, out=folder, every=2, progress=crash)
    assert (folder / CHECKPOINT).is_file()
    reports: list[dict[str, Any]] = []
    task = RunTask(key, cfg.to_dict(), checkpoint_dir=str(folder), checkpoint_every=2)
    resumed = execute(task, warm_up=False, on_round=reports.append)
    assert resumed.ok, resumed.error
    assert resumed.files["history.csv"] == whole.files["history.csv"]
    assert resumed.files["audit.csv"] == whole.files["audit.csv"]
    assert [r["round"] for r in reports] == [5, 6] and reports[0]["resumed_from"] == 4
    # an unreadable checkpoint is thrown away and the run starts over, with the same result
    (folder / CHECKPOINT).write_bytes(b"not a checkpoint")
    reports.clear()
    again = execute(task, warm_up=False, on_round=reports.append)
    assert again.ok and again.files["history.csv"] == whole.files["history.csv"]
    assert [r["round"] for r in reports] == [1, 2, 3, 4, 5, 6]


def _grid(tmp_path: Path) -> Path:
    grid = {"name": "long", "base": {"rounds": LONG_ROUNDS, "clients": {"num": 5}, "dataset": {"limit": 300},
                                     "eval": {"every": 1}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _command(grid: Path, out: Path) -> list[str]:
    return [*CLI, "grid", str(grid), "--out", str(out), "--workers", "1", "--quiet",
            "--checkpoint-every", str(EVERY)]


def test_sigkill_mid_run_resumes_from_the_checkpoint_bit_identically(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    out = tmp_path / "killed"
    store = ResultStore(out)
    proc = subprocess.Popen(_command(grid, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    key = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            rounds = [e for e in store.events() if e["event"] == "round"]
            if rounds and rounds[-1]["round"] >= 3 * EVERY + 2:
                key = rounds[-1]["key"]
                break
            time.sleep(0.05)
        assert key is not None and proc.poll() is None, "the run never got far enough to be killed mid-way"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = max(max(r) for r in _rounds_by_pid(store, key).values())
    assert killed_at < LONG_ROUNDS, "the run finished before the kill"
    assert (store.checkpoint_dir(key) / CHECKPOINT).is_file(), "no checkpoint survived the kill"
    assert not store.is_finished(key)

    done = subprocess.run(_command(grid, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumes = [e for e in store.events() if e["event"] == "resume" and e["key"] == key]
    assert len(resumes) == 1
    resumed_at = resumes[0]["round"]
    assert resumed_at % EVERY == 0 and resumed_at >= 3 * EVERY
    by_pid = _rounds_by_pid(store, key)
    assert len(by_pid) == 2
    second = by_pid[resumes[0]["pid"]]
    assert second == list(range(resumed_at + 1, LONG_ROUNDS + 1))
    assert len(second) < LONG_ROUNDS, "the whole run was computed again"
    # the checkpoint is gone once the run committed
    assert not store.checkpoint_dir(key).exists() and not (store.staging_dir / CHECKPOINTS).exists()

    reference = tmp_path / "uninterrupted"
    ref = subprocess.run(_command(grid, reference), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    for name in ("history.csv", "audit.csv"):
        assert (out / "runs" / key / name).read_bytes() == (reference / "runs" / key / name).read_bytes(), name
    summary = json.loads((out / "runs" / key / "summary.json").read_text())
    assert summary["rounds"] == LONG_ROUNDS


def test_checkpoint_every_must_be_a_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fedpoison.cli import main

    assert main(["grid", str(_grid(tmp_path)), "--out", str(tmp_path / "o"), "--checkpoint-every", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint-every: expected an integer >= 0, got -1" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_the_bar_has_a_row_per_run_in_flight_with_its_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    import fedpoison.experiments.cli as grid_cli

    screen = io.StringIO()
    monkeypatch.setattr(grid_cli, "console", Console(file=screen, force_terminal=True, width=160,
                                                      color_system=None))
    grid = expand_grid({"name": "bar", "base": {**TINY, "rounds": 3}, "axes": {"seed": [0, 1]}})
    progress = grid_cli.run_grid_cli(grid, tmp_path / "out", workers=0, executor="local", retry_failed=False)
    assert progress.done == 2
    text = screen.getvalue()
    for seed in (0, 1):
        for r in (1, 2, 3):  # the run's own row, at each of its rounds
            assert re.search(rf"seed={seed}\s.*\s{r}/3 rounds", text), (seed, r)
    assert "2/2 runs" in text and "done   [2/2] seed=1" in text
