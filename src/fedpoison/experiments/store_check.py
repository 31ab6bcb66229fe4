"""``fedpoison store check DIR [--repair]``: find, and move aside, what is damaged in a results store.

A results store (:mod:`fedpoison.experiments.store`) is damaged where:

* one of its own paths (``runs/``, ``failed/``, ``.staging/``, ``damaged/``,
  ``.lock``, ``events.jsonl``, ``grid.yaml``, ``plan.json``) is a symbolic link
  or of the wrong kind;
* an entry of ``runs/`` is not a whole finished run (:meth:`ResultStore.verify`);
* an entry of ``failed/`` lacks a readable ``FAILED.json``;
* ``plan.json`` or ``grid.yaml`` does not parse.

Repairing never deletes data: links are removed (their targets are never
touched) and everything else is renamed into ``DIR/damaged/``, so the next
grid recomputes those runs and rewrites those files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fedpoison.errors import ResultsError
from fedpoison.experiments.store import DAMAGED, EVENTS, FAILED, FAILED_MARK, LOCK, RUNS, STAGING, ResultStore
from fedpoison.safe_fs import is_link


@dataclass(frozen=True)
class Problem:
    """One damaged entry: its path and why it is damaged."""

    path: Path
    reason: str


@dataclass
class StoreReport:
    """What :func:`check_store` found: verified runs and damaged entries."""

    finished: int = 0
    problems: list[Problem] = field(default_factory=list)


_FOLDERS = (RUNS, FAILED, STAGING, DAMAGED)
_FILES = (LOCK, EVENTS, "grid.yaml", "plan.json")


def check_store(directory: str | Path) -> StoreReport:
    """List every damaged entry of the results store at ``directory`` (reads only)."""
    root = Path(directory)
    if not root.is_dir():
        raise ResultsError(f"results directory {root}: expected a folder, found {'a file' if root.exists() else 'nothing'}")
    store = ResultStore(root)
    report = StoreReport()
    for name in (*_FOLDERS, *_FILES):
        p = root / name
        if is_link(p):
            report.problems.append(Problem(p, "a symbolic link (fedpoison never follows links in a store)"))
        elif name in _FOLDERS and p.exists() and not p.is_dir():
            report.problems.append(Problem(p, "should be a folder, found a file"))
        elif name in _FILES and p.exists() and not p.is_file():
            report.problems.append(Problem(p, "should be a file, found a folder"))
    bad = {pr.path.name for pr in report.problems}
    if RUNS not in bad:
        finished, damaged = store.scan()
        report.finished = len(finished)
        report.problems += [Problem(store.runs_dir / k, reason) for k, reason in sorted(damaged.items())]
    if FAILED not in bad and store.failed_dir.is_dir():
        for p in sorted(store.failed_dir.iterdir()):
            if is_link(p) or not p.is_dir():
                report.problems.append(Problem(p, "not a failed run's folder"))
                continue
            try:
                store.failure(p.name)
            except ResultsError as exc:
                report.problems.append(Problem(p, f"no readable {FAILED_MARK} ({str(exc).split(': ', 1)[-1]})"))
    if "plan.json" not in bad and (root / "plan.json").is_file():
        try:
            store.plan()
        except ResultsError as exc:
            report.problems.append(Problem(root / "plan.json", str(exc).split(": ", 1)[-1]))
    grid = root / "grid.yaml"
    if "grid.yaml" not in bad and grid.is_file():
        try:
            data = yaml.safe_load(grid.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"expected a mapping, got {type(data).__name__}")
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError) as exc:
            report.problems.append(Problem(grid, f"does not parse ({str(exc).splitlines()[0]})"))
    return report


def repair_store(directory: str | Path) -> list[tuple[Path, Path | None]]:
    """Move every damaged entry aside (links are removed); return ``(from, to)`` pairs (``to`` None: removed).

    Takes the store's lock, so it never races a grid writing into the store.
    """
    root = Path(directory)
    moved: list[tuple[Path, Path | None]] = []
    for name in (*_FOLDERS, *_FILES):  # links first: the lock refuses them
        p = root / name
        if is_link(p):
            p.unlink()
            moved.append((p, None))
    store = ResultStore(root)
    for name in _FOLDERS[:3]:
        p = root / name
        if p.exists() and not p.is_dir():
            with _locked(store):
                moved.append((p, store._move_to_damaged(p)))
    with store.writing():
        for problem in check_store(root).problems:
            if problem.path.exists() or is_link(problem.path):
                moved.append((problem.path, store._move_to_damaged(problem.path)))
    return moved


class _locked:
    """The store's flock alone (for moving a file that sits where a store folder belongs)."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        import fcntl
        import os

        self.fd = os.open(self.store.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        import os

        os.close(self.fd)
