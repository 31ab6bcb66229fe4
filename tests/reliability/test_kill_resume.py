"""Checkpoint, SIGKILL mid-round, resume: the history equals an uninterrupted run's.

Promise (LIMITS.md, "Crash-safety"): a run started with ``--checkpoint-every k``
and killed at any moment resumes with ``fedpoison run --resume DIR`` and
produces the same ``history.csv`` and ``audit.csv``, byte for byte, as the same
config run without interruption.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedpoison.cli import main
from fedpoison.simulation.checkpoint import CHECKPOINT

ARGS = ["--set", "rounds=40", "--set", "clients.per_round=10", "--set", "partition.name=dirichlet",
        "--set", "attack.name=none"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from fedpoison.cli import main; sys.exit(main())", *args]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    assert main(["run", "--quiet", *ARGS, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("attempt", range(3))
def test_sigkill_mid_run_then_resume_reproduces_history(reference: Path, tmp_path: Path, attempt: int) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli("run", "--quiet", *ARGS, "--checkpoint-every", "1", "--out", str(out)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT).exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.01)
    time.sleep(random.Random(attempt).uniform(0.0, 0.6))  # somewhere inside a later round
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the kill landed mid-run, before the run finished"
    assert main(["run", "--quiet", "--resume", str(out)]) == 0
    for name in ("history.csv", "audit.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(out.glob(".*.tmp")), "no temp file left behind"


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "--checkpoint-every" in capsys.readouterr().err


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / CHECKPOINT).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["run", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a readable fedpoison checkpoint" in err and "Traceback" not in err


@pytest.mark.parametrize("rule", ["centered_clipping", "foolsgold"])
def test_stateful_rules_resume_to_the_same_model(tmp_path: Path, rule: str) -> None:
    """Rules that keep state across rounds put it in the checkpoint: two rounds, checkpoint,
    a fresh process's worth of objects restored from it, two more rounds == four rounds.
    """
    import torch

    import fedpoison
    from fedpoison.simulation.checkpoint import restore, save_checkpoint
    from fedpoison.simulation.federation import build_federation
    from fedpoison.simulation.loop import LoopState, run_round

    cfg = fedpoison.load_config(overrides=["rounds=4", f"defense.name={rule}", "clients.per_round=8"])
    full = fedpoison.run(cfg)
    fed = build_federation(cfg)
    state = LoopState(params=fed.init_params.clone())
    for _ in range(2):
        run_round(fed, state)
    save_checkpoint(fed, state, tmp_path)
    fresh = build_federation(cfg)
    resumed = restore(fresh, tmp_path)
    assert fresh.defense.state_dict(), "the rule's state came back"
    while resumed.round < cfg.rounds:
        run_round(fresh, resumed)
    assert torch.equal(resumed.params.cpu(), full.final_params)


def test_resume_removes_the_temp_file_of_a_write_killed_midway(tmp_path: Path) -> None:
    """A SIGKILL during the checkpoint's write leaves ``.checkpoint.<random>.tmp``; resuming
    finishes the run and leaves no such file (seen when the random kill above hit the write).
    """
    out = tmp_path / "run"
    args = ["--set", "rounds=3", "--set", "clients.per_round=5", "--set", "attack.name=none"]
    assert main(["run", "--quiet", *args, "--set", "rounds=2", "--checkpoint-every", "1", "--out", str(out)]) == 0
    (out / "summary.json").unlink()
    ckpt = out / CHECKPOINT
    half = out / ".checkpoint.k1ll3d.tmp"
    half.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert main(["run", "--quiet", "--resume", str(out)]) == 0
    assert (out / "summary.json").exists()
    assert not list(out.glob(".*.tmp"))
