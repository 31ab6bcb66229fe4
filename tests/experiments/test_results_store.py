"""The results store: atomic commits, failures, retries, the lock; and the grid runner on top of it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from experiment_fakes import TINY

from fedpoison.errors import ResultsError
from fedpoison.experiments.executor import EXECUTORS, Executor, InlineExecutor, RunOutcome, RunTask, execute
from fedpoison.experiments.grid import expand_grid
from fedpoison.experiments.runner import GridEvent, run_grid
from fedpoison.experiments.store import DONE, ResultStore, StoreLocked

FILES = {"config.yaml": b"seed: 0\n", "history.csv": b"round,test_accuracy\n0,0.5\n", "summary.json": b"{}"}


def test_commit_round_trip_and_done_marker(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r")
    with store.writing():
        assert store.commit("k1", FILES, wall_s=1.5, label="x")
    assert store.finished_keys() == {"k1"} and store.is_finished("k1")
    d = store.run_dir("k1")
    assert {p.name for p in d.iterdir()} == {*FILES, DONE}
    assert all((d / n).read_bytes() == b for n, b in FILES.items())
    done = store.done_record("k1")
    assert done["key"] == "k1" and done["wall_s"] == 1.5 and done["label"] == "x" and len(done["run_id"]) == 32
    assert oct(d.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode
    with pytest.raises(ResultsError, match="run k2 has not finished"):
        store.run_dir("k2")


def test_a_finished_run_is_never_replaced(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    with store.writing():
        store.commit("k", FILES)
        first = store.done_record("k")["run_id"]
        assert not store.commit("k", {**FILES, "summary.json": b'{"other": 1}'})
    assert store.done_record("k")["run_id"] == first
    assert (store.run_dir("k") / "summary.json").read_bytes() == b"{}"
    assert not list(store.staging_dir.iterdir())


def test_commit_refuses_incomplete_runs_and_bad_names(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    with store.writing():
        with pytest.raises(ResultsError, match=r"missing history\.csv"):
            store.commit("k", {"config.yaml": b"", "summary.json": b"{}"})
        with pytest.raises(ResultsError, match="expected a plain file name"):
            store.commit("k", {**FILES, "../x": b""})
    assert store.finished_keys() == set()


def test_writes_need_the_lock_and_the_lock_is_exclusive(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    with pytest.raises(RuntimeError, match="writes need the lock"):
        store.commit("k", FILES)
    with store.writing():
        with pytest.raises(StoreLocked, match="another fedpoison grid is writing into it"), \
                ResultStore(tmp_path).writing():
            pass
    with ResultStore(tmp_path).writing():  # released
        pass


def test_staging_leftovers_and_unmarked_dirs_are_never_read_as_finished(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    with store.writing():
        store.commit("good", FILES)
    half = store.staging_dir / "run-crashed"
    half.mkdir()
    (half / "config.yaml").write_text("seed: 0\n")
    (store.runs_dir / "partial").mkdir()  # a directory without DONE.json (never made by the store)
    assert store.finished_keys() == {"good"}
    with store.writing():
        assert not half.exists()  # cleared at the next start


def test_failures_are_recorded_counted_and_cleared_by_success(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    with store.writing():
        store.record_failure("k", config_yaml="seed: 0\n", error="Traceback...\nValueError: boom\n", label="x")
        store.record_failure("k", config_yaml="seed: 0\n", error="Traceback...\nValueError: again\n")
    assert store.failed_keys() == {"k"}
    rec = store.failure("k")
    assert rec["attempts"] == 2 and rec["error"].endswith("ValueError: again\n")
    with store.writing():
        store.commit("k", FILES)
    assert store.failed_keys() == set() and not (store.failed_dir / "k").exists()


def test_events_skip_a_line_cut_short(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    with store.writing():
        store.log("start", key="a")
    with open(tmp_path / "events.jsonl", "a") as fh:
        fh.write('{"event": "do')
    assert [e["event"] for e in store.events()] == ["start"]


class ScriptedExecutor(Executor):
    """Fails the tasks whose key is in ``fail``; finishes the rest with small fake files."""

    def __init__(self, fail: set[str], *, workers: int = 1) -> None:
        super().__init__(workers=workers)
        self.fail, self.seen = fail, []

    def run(self, tasks: Iterable[RunTask]) -> Iterator[RunOutcome]:
        for t in tasks:
            self.seen.append(t.key)
            if t.key in self.fail:
                yield RunOutcome(t.key, False, error="Traceback\nRuntimeError: scripted failure")
            else:
                yield RunOutcome(t.key, True, files=dict(FILES), wall_s=0.01)


def test_runner_skips_finished_records_failures_goes_on_and_retries(tmp_path: Path) -> None:
    grid = expand_grid({"base": TINY, "axes": {"seed": [0, 1, 2, 3]}})
    keys = [r.key for r in grid.runs]
    store = ResultStore(tmp_path)
    events: list[GridEvent] = []
    ex = ScriptedExecutor({keys[1]})
    p = run_grid(grid, store, ex, on_event=events.append)
    assert (p.done, p.failed, p.to_run, p.skipped) == (3, 1, 4, 0)
    assert ex.seen == keys  # the failure did not stop the grid
    assert [e.kind for e in events] == ["start", "run", "run", "run", "run", "end"]
    assert store.failed_keys() == {keys[1]} and "scripted failure" in store.failure(keys[1])["error"]
    assert store.plan()[1]["key"] == keys[1] and (tmp_path / "grid.yaml").is_file()

    ex = ScriptedExecutor(set())
    p = run_grid(grid, store, ex)
    assert ex.seen == [] and (p.skipped, p.failed_before, p.to_run) == (3, 1, 0)

    p = run_grid(grid, store, ex, retry_failed=True)
    assert ex.seen == [keys[1]] and p.done == 1
    assert store.finished_keys() == set(keys) and store.failed_keys() == set()
    starts = [e["key"] for e in store.events() if e["event"] == "start"]
    assert sorted(starts) == sorted([*keys, keys[1]])


def test_inline_grid_computes_real_runs_and_records_a_real_failure(tmp_path: Path) -> None:
    grid = expand_grid({"base": TINY, "axes": {"dataset": [
        {"name": "digits"}, {"name": "fashion-mnist", "path": str(tmp_path / "missing"), "limit": None}]}})
    store = ResultStore(tmp_path / "out")
    p = run_grid(grid, store, InlineExecutor())
    assert (p.done, p.failed) == (1, 1)
    ok, bad = grid.runs
    summary = json.loads((store.run_dir(ok.key) / "summary.json").read_text())
    assert summary["rounds"] == 2 and 0 <= summary["final_accuracy"] <= 1
    assert "fashion-mnist" in store.failure(bad.key)["error"] or "missing" in store.failure(bad.key)["error"]


def test_execute_reports_errors_instead_of_raising() -> None:
    out = execute(RunTask("0" * 16, {"rounds": 1, "clients": {"num": 3}, "dataset": {"limit": 100}}))
    assert not out.ok and "config key mismatch" in out.error and out.worker.endswith(f":{os.getpid()}")


def test_executors_are_a_registry() -> None:
    assert {"local", "inline"} <= set(EXECUTORS.names())
    from fedpoison.errors import ConfigError
    from fedpoison.experiments.executor import make_executor

    with pytest.raises(ConfigError, match="--executor: unknown executors 'rayy'"):
        make_executor("rayy", workers=1)
