"""A full disk: the command fails with one line and exit 1, and a rerun after space is freed completes
with results identical to an uninterrupted run.

Promise (LIMITS.md, "Crash-safety"): a run, a checkpointed run and a grid that
fill their disk lose nothing finished; after space is freed, rerunning the
same command (``--resume`` for a checkpointed run) gives byte-identical
histories. Runs where the machine lets the test mount a small tmpfs; skipped
elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fedpoison.cli import main
from fedpoison.experiments.store import ResultStore

RUN = ["--set", "rounds=3", "--set", "clients.num=5", "--set", "dataset.limit=200"]
GRID = {"name": "full", "base": {"rounds": 2, "clients": {"num": 5}, "dataset": {"limit": 200}},
        "axes": {"seed": [0, 1, 2]}}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                              check=False)
    except OSError:
        pytest.skip("mount is not available here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until ``leave`` bytes are free; return the filler file."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))
    return filler


def test_a_run_that_fills_the_disk_resumes_to_the_same_history(small_disk: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    ref = tmp_path / "ref"
    assert main(["run", "--quiet", *RUN, "--out", str(ref)]) == 0
    out = small_disk / "run"
    filler = _fill(small_disk, 40_000)
    code = main(["run", "--quiet", *RUN, "--checkpoint-every", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "No space left" in err and not (out / "summary.json").exists()
    filler.unlink()
    resumed = main(["run", "--quiet", "--resume", str(out)]) if (out / "checkpoint.safetensors").exists() else \
        main(["run", "--quiet", *RUN, "--checkpoint-every", "1", "--out", str(out)])
    assert resumed == 0, capsys.readouterr().err
    for name in ("history.csv", "audit.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def test_a_plain_run_that_fills_the_disk_never_looks_finished(small_disk: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = small_disk / "run"
    assert main(["run", "--quiet", *RUN, "--out", str(out)]) == 0
    old_summary = (out / "summary.json").read_bytes()
    filler = _fill(small_disk, 8_000)
    assert main(["run", "--quiet", *RUN, "--set", "seed=1", "--out", str(out)]) == 1
    capsys.readouterr()
    assert not (out / "summary.json").exists(), "the old summary.json sits beside a half-written new run"
    filler.unlink()
    assert main(["run", "--quiet", *RUN, "--set", "seed=1", "--out", str(out)]) == 0
    assert (out / "summary.json").read_bytes() != old_summary


def test_a_grid_that_fills_the_disk_completes_identically_after_space_is_freed(
        small_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    ref = tmp_path / "ref"
    assert main(["grid", str(grid), "--out", str(ref), "--workers", "0", "--quiet"]) == 0
    out = small_disk / "grid"
    filler = _fill(small_disk, 90_000)
    code = main(["grid", str(grid), "--out", str(out), "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "No space left" in err, err
    store = ResultStore(out)
    before = {k: store.done_record(k)["run_id"] for k in store.finished_keys()}
    assert len(before) < 3 and store.damaged_keys() == {}
    filler.unlink()
    assert main(["grid", str(grid), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    capsys.readouterr()
    ref_store = ResultStore(ref)
    assert store.finished_keys() == ref_store.finished_keys()
    for key in store.finished_keys():
        assert (store.run_dir(key) / "history.csv").read_bytes() == (ref_store.run_dir(key) / "history.csv").read_bytes()
    for key, run_id in before.items():
        assert store.done_record(key)["run_id"] == run_id, "a run finished before the disk filled was recomputed"
    assert not list(store.staging_dir.iterdir())
    assert json.loads((out / "plan.json").read_text())["name"] == "full"
