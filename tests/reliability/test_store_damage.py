"""The results store under damage and hostile layouts.

Promises (LIMITS.md, "Results store"): the store never follows a symbolic link
and never writes or deletes outside its folder; every file of a finished run is
covered by a checksum in ``DONE.json``; ``fedpoison results`` names a damaged
run and never reads it as data; ``fedpoison store check`` names it and
``--repair`` moves it aside; a grid moves it aside and recomputes it; no
finished run is lost.

The fuzz suite builds a real store once (three tiny digits runs), then applies
one generated damage per case to a copy and checks every promise.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import yaml
from sentinel import tree_digest

from fedpoison.cli import main
from fedpoison.errors import ResultsError
from fedpoison.experiments.executor import Executor, InlineExecutor, RunOutcome, RunTask
from fedpoison.experiments.grid import expand_grid
from fedpoison.experiments.runner import run_grid
from fedpoison.experiments.store import DONE, ResultStore
from fedpoison.experiments.store_check import check_store
from fedpoison.results import load

TINY = {"rounds": 2, "clients": {"num": 5}, "dataset": {"name": "digits", "limit": 200}}
GRID = {"name": "tiny", "base": TINY, "axes": {"seed": [0, 1, 2]}}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pristine")
    progress = run_grid(expand_grid(GRID), ResultStore(out), InlineExecutor(warm_up=False))
    assert progress.done == 3
    return out


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    d = tmp_path / "sentinel"
    (d / "sub").mkdir(parents=True)
    (d / "notes.txt").write_text("precious\n")
    (d / "sub" / "plan.json").write_text('{"mine": true}\n')
    (d / "grid.yaml").write_text("mine: true\n")
    return d


class ReplayExecutor(Executor):
    """Hands back the pristine files of each run (no compute) and records what it was asked."""

    def __init__(self, pristine: Path) -> None:
        super().__init__(workers=1)
        self.pristine, self.seen = pristine, []

    def run(self, tasks: Iterable[RunTask]) -> Iterator[RunOutcome]:
        for t in tasks:
            self.seen.append(t.key)
            d = self.pristine / "runs" / t.key
            files = {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name != DONE}
            yield RunOutcome(t.key, True, files=files, wall_s=0.0)


# ---- damages ------------------------------------------------------------------------
Damage = Callable[[Path, random.Random, Path], set[str]]  # (store, rng, sentinel) -> damaged run keys


def _run(store: Path, rng: random.Random) -> tuple[str, Path]:
    key = rng.choice(sorted(p.name for p in (store / "runs").iterdir()))
    return key, store / "runs" / key


def _file(store: Path, rng: random.Random) -> tuple[str, Path]:
    key, d = _run(store, rng)
    return key, rng.choice(sorted(p for p in d.iterdir() if p.name != DONE))


def truncate(store: Path, rng: random.Random, s: Path) -> set[str]:
    key, f = _file(store, rng)
    data = f.read_bytes()
    f.write_bytes(data[: rng.randrange(len(data))])
    return {key}


def flip_byte(store: Path, rng: random.Random, s: Path) -> set[str]:
    key, f = _file(store, rng)
    data = bytearray(f.read_bytes())
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    f.write_bytes(bytes(data))
    return {key}


def delete_file(store: Path, rng: random.Random, s: Path) -> set[str]:
    key, f = _file(store, rng)
    f.unlink()
    return {key}


def extra_file(store: Path, rng: random.Random, s: Path) -> set[str]:
    key, d = _run(store, rng)
    (d / rng.choice(["summary.json.bak", "notes.txt", "history2.csv"])).write_text("stray\n")
    return {key}


def file_to_link(store: Path, rng: random.Random, s: Path) -> set[str]:
    key, f = _file(store, rng)
    f.unlink()
    f.symlink_to(s / "notes.txt")
    return {key}


def file_to_dir(store: Path, rng: random.Random, s: Path) -> set[str]:
    key, f = _file(store, rng)
    f.unlink()
    f.mkdir()
    return {key}


def drop_done(store: Path, rng: random.Random, s: Path) -> set[str]:
    key, d = _run(store, rng)
    (d / DONE).unlink()
    return {key}


def corrupt_done(store: Path, rng: random.Random, s: Path) -> set[str]:
    key, d = _run(store, rng)
    done = d / DONE
    record = json.loads(done.read_text())
    choice = rng.randrange(7)
    if choice == 0:
        done.write_bytes(done.read_bytes()[: rng.randrange(1, 40)])
    elif choice == 1:
        done.write_bytes(b"\xff\xfe\x00garbage")
    elif choice == 2:
        done.write_text("[" * 100_000 + "]" * 100_000)
    elif choice == 3:
        done.write_text(json.dumps([1, 2, 3]))
    elif choice == 4:
        record["files"] = "all of them"
        done.write_text(json.dumps(record))
    elif choice == 5:
        record.pop("format")
        done.write_text(json.dumps(record))
    else:
        name = rng.choice(sorted(record["files"]))
        record["files"][name]["sha256"] = "0" * 64
        done.write_text(json.dumps(record))
    return {key}


def run_to_link(store: Path, rng: random.Random, s: Path) -> set[str]:
    key, d = _run(store, rng)
    shutil.rmtree(d)
    d.symlink_to(s, target_is_directory=True)
    return {key}


def stray_entry(store: Path, rng: random.Random, s: Path) -> set[str]:
    name = rng.choice(["junk", "0123456789abcdef", "x.txt"])
    p = store / "runs" / name
    if rng.random() < 0.5:
        p.write_text("not a run\n")
    else:
        p.mkdir()
        (p / "config.yaml").write_text("seed: 0\n")
    return {name}


def own_path_to_link(store: Path, rng: random.Random, s: Path) -> set[str]:
    name = rng.choice([".staging", "failed", "runs", "damaged", ".lock", "events.jsonl", "plan.json", "grid.yaml"])
    p = store / name
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)
    target = s / "sub" if name in (".staging", "failed", "runs", "damaged") else s / "sub" / "plan.json"
    p.symlink_to(target)
    return {"*"}  # the store refuses to be written until repaired


def garbage_meta(store: Path, rng: random.Random, s: Path) -> set[str]:
    name = rng.choice(["plan.json", "grid.yaml", "events.jsonl"])
    payload = rng.choice([b"\xff\xfe\xfa", b"{", b"- [", b"a: &a [*a, *a]", b"[" * 5000, b"runs: 3\n", b"null"])
    (store / name).write_bytes(payload)
    return set()


def bad_failure(store: Path, rng: random.Random, s: Path) -> set[str]:
    d = store / "failed" / "deadbeefdeadbeef"
    d.mkdir(parents=True, exist_ok=True)
    if rng.random() < 0.5:
        (d / "FAILED.json").write_bytes(rng.choice([b"{", b"\xff", b"[]"]))
    (d / "error.txt").write_bytes(b"\xff\xfe boom")
    return set()


DAMAGES: list[Damage] = [truncate, flip_byte, delete_file, extra_file, file_to_link, file_to_dir, drop_done,
                         corrupt_done, run_to_link, stray_entry, own_path_to_link, garbage_meta, bad_failure]


def _no_traceback(argv: list[str]) -> int:
    code = main(argv)  # an exception here is a traceback for the user: the test fails on it
    assert code in (0, 1, 2), (argv, code)
    return code


@pytest.mark.parametrize("case", range(56))
def test_store_damage_fuzz(case: int, pristine: Path, sentinel: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(case)
    store = tmp_path / "store"
    shutil.copytree(pristine, store, symlinks=True)
    accuracy = {k: json.loads((pristine / "runs" / k / "summary.json").read_text())["final_accuracy"]
                for k in ResultStore(pristine).finished_keys()}
    done_ids = {k: json.loads((pristine / "runs" / k / DONE).read_text())["run_id"] for k in accuracy}
    damage = DAMAGES[case % len(DAMAGES)]
    damaged = damage(store, rng, sentinel)
    before = tree_digest(sentinel)

    # readers: never a traceback; a damaged run is named, never read as data
    code = _no_traceback(["results", str(store)])
    err = capsys.readouterr().err
    if code == 0:
        results = load(store)
        for key, acc in zip(results.runs["key"], results.runs["final_accuracy"], strict=True):
            assert key not in damaged and acc == pytest.approx(accuracy[key]), key
        for key in damaged - {"*"}:
            if key in accuracy:
                assert key in err, f"damaged run {key} not named: {err}"
    else:
        assert code == 2 and err.count("\n") <= 3 and "Traceback" not in err

    # store check names it; --repair moves it aside; then the store is clean
    code = _no_traceback(["store", "check", str(store)])
    report = capsys.readouterr().out
    if damaged:
        assert code == 1, report
        for key in damaged - {"*"}:
            assert key in report
    assert _no_traceback(["store", "check", str(store), "--repair"]) == 0
    capsys.readouterr()
    assert check_store(store).problems == []

    # a grid recomputes exactly the runs lost to damage, and keeps every other finished run
    ex = ReplayExecutor(pristine)
    run_grid(expand_grid(GRID), ResultStore(store), ex)
    assert set(ex.seen) == damaged & set(accuracy) or "*" in damaged
    final = ResultStore(store)
    assert final.finished_keys() == set(accuracy)
    for key in set(accuracy) - damaged:
        assert final.done_record(key)["run_id"] == done_ids[key], "a finished, undamaged run was replaced"
    results = load(store)
    assert dict(zip(results.runs["key"], results.runs["final_accuracy"], strict=True)) == pytest.approx(accuracy)
    assert tree_digest(sentinel) == before, "something outside the results folder changed"


@pytest.mark.parametrize("case", range(13))
def test_grid_without_repair_moves_damage_aside_or_refuses(case: int, pristine: Path, sentinel: Path,
                                                           tmp_path: Path) -> None:
    rng = random.Random(1000 + case)
    store = tmp_path / "store"
    shutil.copytree(pristine, store, symlinks=True)
    damaged = DAMAGES[case](store, rng, sentinel)
    before = tree_digest(sentinel)
    ex = ReplayExecutor(pristine)
    try:
        progress = run_grid(expand_grid(GRID), ResultStore(store), ex)
    except ResultsError as exc:
        assert "*" in damaged and "symbolic link" in str(exc)
    else:
        assert "*" not in damaged
        assert {k for k, _ in progress.damaged} == damaged
        assert progress.skipped + progress.done == 3 and set(ex.seen) <= damaged
        assert ResultStore(store).damaged_keys() == {}
    assert tree_digest(sentinel) == before


# ---- the cases the red team reported, through the real command line ---------------------
def _grid_file(tmp_path: Path, name: str) -> Path:
    g = tmp_path / "g.yaml"
    g.write_text(yaml.safe_dump({**GRID, "name": name, "axes": {"seed": [0]}}))
    return g


def test_staging_symlink_never_deletes_the_link_target(tmp_path: Path, sentinel: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".staging").symlink_to(sentinel, target_is_directory=True)
    before = tree_digest(sentinel)
    assert main(["grid", str(_grid_file(tmp_path, "tiny")), "--out", str(out), "--workers", "0", "--quiet"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert tree_digest(sentinel) == before


@pytest.mark.parametrize("name", ["../x", "/abs/path", "a/b", "..", ".hidden", "~user", "x\0y", ""])
def test_grid_name_must_be_a_plain_name(name: str, tmp_path: Path, sentinel: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    work = sentinel / "sub"  # `runs/<name>` would resolve next to the sentinel's own plan.json
    monkeypatch.chdir(work)
    g = tmp_path / "g.yaml"
    g.write_text(json.dumps({**GRID, "name": name.replace("/abs", str(sentinel))}))
    before = tree_digest(sentinel)
    assert main(["grid", str(g), "--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "name" in err and "plain name" in err and err.count("\n") <= 3
    assert tree_digest(sentinel) == before


def test_truncated_history_is_recomputed_not_read(pristine: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    shutil.copytree(pristine, store)
    key = expand_grid({**GRID, "axes": {"seed": [0]}}).runs[0].key  # the run the grid file below holds
    history = store / "runs" / key / "history.csv"
    original = history.read_bytes()
    history.write_bytes(original[: len(original) // 2])
    assert main(["results", str(store)]) == 0
    assert f"run {key} is damaged" in capsys.readouterr().err
    assert main(["grid", str(_grid_file(tmp_path, "tiny")), "--out", str(store),
                 "--workers", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"damaged run {key}" in " ".join(out.split()) and "1/1 runs finished" in out  # named even with --quiet
    assert history.read_bytes() == original  # recomputed: same config, same seed, same bytes
    assert any((store / "damaged").iterdir())


def test_run_folder_without_done_is_recomputed_and_counted(pristine: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(pristine, store)
    key = sorted(ResultStore(store).finished_keys())[1]
    (store / "runs" / key / DONE).unlink()
    ex = ReplayExecutor(pristine)
    progress = run_grid(expand_grid(GRID), ResultStore(store), ex)
    assert ex.seen == [key] and progress.done == 1 and progress.skipped == 2
    assert ResultStore(store).is_finished(key)


@pytest.mark.parametrize("command", [["results", "--format", "csv"], ["report"]])
def test_default_outputs_inside_the_folder_are_never_written_through_a_link(
        command: list[str], pristine: Path, sentinel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    shutil.copytree(pristine, store)
    (store / ("tables" if command[0] == "results" else "report")).symlink_to(sentinel, target_is_directory=True)
    before = tree_digest(sentinel)
    assert main([command[0], str(store), *command[1:]]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert tree_digest(sentinel) == before


def test_report_names_a_damaged_run_and_leaves_it_out(pristine: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A run whose history was rewritten with better numbers: the report's tables equal those of the
    store without that run at all.
    """
    damaged, without = tmp_path / "damaged", tmp_path / "without"
    shutil.copytree(pristine, damaged)
    shutil.copytree(pristine, without)
    key = sorted(ResultStore(damaged).finished_keys())[2]
    history = damaged / "runs" / key / "history.csv"
    lines = history.read_text().splitlines()
    col = lines[0].split(",").index("test_accuracy")
    rows = [",".join("0.999" if i == col else v for i, v in enumerate(r.split(","))) for r in lines[1:]]
    history.write_text("\n".join([lines[0], *rows]) + "\n")
    shutil.rmtree(without / "runs" / key)
    assert main(["report", str(damaged)]) == 0
    assert f"run {key} is damaged" in capsys.readouterr().err
    assert main(["report", str(without)]) == 0
    tables = sorted(p.name for p in (without / "report" / "tables").iterdir())
    assert tables
    for name in tables:
        assert (damaged / "report" / "tables" / name).read_bytes() == (without / "report" / "tables" / name).read_bytes()


@pytest.mark.parametrize("where", ["checkpoints", "checkpoints/<key>"])
def test_run_checkpoints_are_never_written_through_a_link(where: str, tmp_path: Path, sentinel: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    g = _grid_file(tmp_path, "tiny")
    key = expand_grid({**GRID, "axes": {"seed": [0]}}).runs[0].key
    out = tmp_path / "out"
    link = out / ".staging" / where.replace("<key>", key)
    link.parent.mkdir(parents=True)
    link.symlink_to(sentinel / "sub", target_is_directory=True)
    before = tree_digest(sentinel)
    assert main(["grid", str(g), "--out", str(out), "--workers", "0", "--quiet", "--checkpoint-every", "1"]) == 0
    capsys.readouterr()
    assert tree_digest(sentinel) == before, "a checkpoint was written through a link, outside the results folder"
    assert ResultStore(out).finished_keys() == {key}
