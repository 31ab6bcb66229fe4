"""Kill a running ``fedpoison grid`` with SIGKILL at random moments, rerun it, and check the store.

What must hold after every kill and at the end:

* nothing half-written is read as finished: every run the store reports as
  finished has all its files, and they parse (history has one row per round);
* no finished result is lost or recomputed: a run seen finished keeps its
  ``run_id`` (and file mtimes) through every later invocation, and no later
  invocation starts it again;
* every run finishes exactly once: at the end every planned run is finished,
  with the run id it got when it first finished;
* the grid's worker processes die with it (no orphan keeps computing).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from experiment_fakes import CLI

from fedpoison.experiments.store import DONE, ResultStore

ROUNDS = 2


def _grid_file(tmp_path: Path, runs: int) -> Path:
    grid = {"name": "killme",
            "base": {"rounds": ROUNDS, "clients": {"num": 5}, "dataset": {"limit": 200}},
            "axes": {"seed": list(range(runs))}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.add(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _snapshot(store: ResultStore) -> dict[str, tuple[str, float]]:
    """Every finished run's id and summary mtime, after checking it is complete and readable."""
    snap = {}
    for d in store.runs_dir.iterdir():
        assert (d / DONE).is_file(), f"{d} is in runs/ without {DONE}: a half-written run is visible"
        done = json.loads((d / DONE).read_text())
        history = pd.read_csv(d / "history.csv")
        assert len(history) == ROUNDS and history["test_accuracy"].notna().all()
        summary = json.loads((d / "summary.json").read_text())
        assert summary["rounds"] == ROUNDS
        assert yaml.safe_load((d / "config.yaml").read_text())["seed"] == summary["seed"]
        snap[d.name] = (done["run_id"], (d / "summary.json").stat().st_mtime)
    return snap


def _invocations(store: ResultStore) -> list[dict[str, Any]]:
    """Per grid invocation (pid): the keys it started."""
    out: dict[int, dict[str, Any]] = {}
    for e in store.events():
        inv = out.setdefault(e["pid"], {"pid": e["pid"], "started": []})
        if e["event"] == "start":
            inv["started"].append(e["key"])
    return list(out.values())


def _kill_test(tmp_path: Path, *, runs: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    grid = _grid_file(tmp_path, runs)
    out = tmp_path / "out"
    store = ResultStore(out)
    cmd = [*CLI, "grid", str(grid), "--out", str(out), "--workers", "2", "--quiet"]
    seen: dict[str, tuple[str, float]] = {}
    finished_before: list[set[str]] = []
    kills_done = 0
    for _attempt in range(kills + 3):
        before = set(seen)
        finished_before.append(before)
        lines_before = len(store.events())
        remaining = runs - len(seen)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            if kills_done < kills and remaining > 0:
                # kill after a random number of this invocation's events (its grid line, then a start
                # or done line per run), before its last done line, plus jitter
                wanted = lines_before + rng.randint(1, max(1, 2 * remaining - 1))
                deadline = time.monotonic() + 120
                while proc.poll() is None and len(store.events()) < wanted and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.2))
                if proc.poll() is None:
                    kids = _children(proc.pid)
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    kills_done += 1
                    deadline = time.monotonic() + 15
                    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert not any(_alive(k) for k in kids), "a worker outlived the killed grid"
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if rc not in (0, -signal.SIGKILL):
            pytest.fail(f"grid exited with {rc}: {stderr}")
        snap = _snapshot(store)
        for key, ident in seen.items():
            assert key in snap, f"finished run {key} was lost"
            assert snap[key] == ident, f"finished run {key} was recomputed or rewritten"
        seen.update(snap)
        if rc == 0 and (kills_done >= kills or len(seen) == runs):
            break
    else:
        pytest.fail("the grid never completed")
    assert kills_done >= min(kills, 2), f"only {kills_done} kills landed while the grid ran"
    plan = [r["key"] for r in store.plan()]
    assert len(plan) == runs and set(seen) == set(plan) == store.finished_keys()
    assert store.failed_keys() == set()
    # no invocation started a run that had finished before it began
    invocations = _invocations(store)
    assert len(invocations) == len(finished_before)
    for inv, before in zip(invocations, finished_before, strict=True):
        assert not set(inv["started"]) & before, "a finished run was started again"
    # exactly one finished result per run, and no leftovers
    assert sorted(p.name for p in store.runs_dir.iterdir()) == sorted(plan)
    assert not list(store.staging_dir.iterdir()) or all(p.name.startswith(("run-", "trash-"))
                                                          for p in store.staging_dir.iterdir())


def test_sigkill_at_random_moments_then_rerun(tmp_path: Path) -> None:
    _kill_test(tmp_path, runs=5, kills=3, seed=int(os.environ.get("FEDPOISON_KILL_SEED", "1234")))


@pytest.mark.slow
def test_sigkill_many_times(tmp_path: Path) -> None:
    _kill_test(tmp_path, runs=12, kills=8, seed=99)
