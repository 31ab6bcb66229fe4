"""A crash-safe results store: one directory per run, keyed by the config hash.

Layout of a results directory ``DIR``::

    DIR/grid.yaml               the grid as run (base resolved, --set overrides included)
    DIR/plan.json               every run of the grid: key, index, axis values
    DIR/runs/<key>/             a finished run: config.yaml, history.csv, timings.csv,
                                audit.csv, summary.json and DONE.json
    DIR/failed/<key>/           a failed run: config.yaml, error.txt, FAILED.json
    DIR/events.jsonl            one line per start, finish and failure (append-only)
    DIR/.staging/               directories being written (removed at the next start)
    DIR/.staging/checkpoints/<key>/  the last checkpoint of a run in progress (kept across
                                invocations, so a killed grid resumes the run; removed when
                                the run commits)
    DIR/.lock                   held (flock) by the grid writing into DIR

**The invariant**: ``runs/<key>/`` exists only complete. A run's files are
written and fsynced into a fresh directory under ``.staging/``, ``DONE.json``
last, and the directory is then renamed to ``runs/<key>/`` in one
``rename(2)``. A process killed at any moment leaves either no ``runs/<key>/``
(the run is rerun) or a complete one (it is skipped); a leftover staging
directory is never read. A finished run is never replaced: the rename fails
when ``runs/<key>/`` exists. Failures go to ``failed/<key>/`` the same way and
are replaced when retried.

Only one process writes a store at a time (an ``flock`` on ``DIR/.lock``, which
the kernel releases when the holder dies, even by SIGKILL).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fedpoison.errors import ResultsError
from fedpoison.simulation.result import atomic_write_bytes as _atomic_write_bytes

RUNS = "runs"
FAILED = "failed"
STAGING = ".staging"
DONE = "DONE.json"
FAILED_MARK = "FAILED.json"
EVENTS = "events.jsonl"
LOCK = ".lock"
#: Folder under staging that holds the checkpoints of runs in progress.
CHECKPOINTS = "checkpoints"
#: Files every finished run has (besides DONE.json).
RUN_FILES = ("config.yaml", "history.csv", "summary.json")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Modes of what the store creates (mkstemp and mkdtemp would make them private).
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the store's file mode."""
    _atomic_write_bytes(path, data, mode=_FILE_MODE)


class StoreLocked(ResultsError):
    """Another process is writing into the same results directory."""


class ResultStore:
    """A results directory (see the module docstring for its layout and guarantees).

    Parameters
    ----------
    root:
        The results directory; created on first write.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / RUNS
        self.failed_dir = self.root / FAILED
        self.staging_dir = self.root / STAGING
        self._lock_fd: int | None = None

    # ---- locking and housekeeping ------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[ResultStore]:
        """Hold the store's write lock, create its folders and clear stale staging."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLocked(f"results directory {self.root}: another fedpoison grid is writing "
                                  "into it; wait for it to finish or use another --out") from None
            raise
        self._lock_fd = fd
        try:
            for d in (self.runs_dir, self.failed_dir, self.staging_dir):
                d.mkdir(exist_ok=True)
            for stale in self.staging_dir.iterdir():
                if stale.name == CHECKPOINTS:
                    continue  # the runs in progress resume from these
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
            yield self
        finally:
            self._lock_fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("ResultStore: writes need the lock; use `with store.writing():`")

    # ---- reading -------------------------------------------------------------------
    def is_finished(self, key: str) -> bool:
        """Whether ``runs/<key>/`` holds a finished run."""
        return (self.runs_dir / key / DONE).is_file()

    def finished_keys(self) -> set[str]:
        """Keys of every finished run."""
        if not self.runs_dir.is_dir():
            return set()
        return {p.name for p in self.runs_dir.iterdir() if not p.name.startswith(".") and (p / DONE).is_file()}

    def failed_keys(self) -> set[str]:
        """Keys of failed runs that have not finished since."""
        if not self.failed_dir.is_dir():
            return set()
        failed = {p.name for p in self.failed_dir.iterdir() if (p / FAILED_MARK).is_file()}
        return failed - self.finished_keys()

    def run_dir(self, key: str) -> Path:
        """The folder of a finished run; :class:`ResultsError` when it is not finished."""
        if not self.is_finished(key):
            raise ResultsError(f"results directory {self.root}: run {key} has not finished")
        return self.runs_dir / key

    def done_record(self, key: str) -> dict[str, Any]:
        """The ``DONE.json`` of a finished run (run id, finish time, wall seconds, ...)."""
        return _read_json(self.run_dir(key) / DONE)

    def failure(self, key: str) -> dict[str, Any]:
        """The ``FAILED.json`` of a failed run, with the error text under ``error``."""
        d = self.failed_dir / key
        rec = _read_json(d / FAILED_MARK)
        err = d / "error.txt"
        rec["error"] = err.read_text() if err.is_file() else rec.get("error", "")
        return rec

    def checkpoint_dir(self, key: str) -> Path:
        """Where a run in progress keeps its checkpoint: ``.staging/checkpoints/<key>/``.

        It survives a killed grid (the next invocation resumes the run from it)
        and is removed when the run commits.
        """
        return self.staging_dir / CHECKPOINTS / key

    def plan(self) -> list[dict[str, Any]]:
        """The grid's runs as stored in ``plan.json`` (empty when there is none)."""
        p = self.root / "plan.json"
        return list(_read_json(p)["runs"]) if p.is_file() else []

    def events(self) -> list[dict[str, Any]]:
        """Parsed lines of ``events.jsonl``; a line cut short by a crash is skipped."""
        p = self.root / EVENTS
        out = []
        if p.is_file():
            for line in p.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    # ---- writing -------------------------------------------------------------------
    def write_meta(self, name: str, text: str) -> None:
        """Atomically write a top-level file such as ``grid.yaml`` or ``plan.json``."""
        self._require_lock()
        atomic_write_bytes(self.root / name, text.encode())

    def log(self, event: str, **fields: Any) -> None:
        """Append one event line (``start``, ``done``, ``failed``, ...) to ``events.jsonl``."""
        self._require_lock()
        line = json.dumps({"t": round(time.time(), 3), "event": event, "pid": os.getpid(), **fields})
        fd = os.open(self.root / EVENTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def _stage(self, files: Mapping[str, bytes], marker: str, record: Mapping[str, Any]) -> Path:
        stage = Path(tempfile.mkdtemp(dir=self.staging_dir, prefix="run-"))
        os.chmod(stage, _DIR_MODE)
        for name, data in files.items():
            if "/" in name or name.startswith(".") or name in (DONE, FAILED_MARK):
                raise ResultsError(f"run file name {name!r}: expected a plain file name")
            _write_file(stage / name, data)
        _write_file(stage / marker, json.dumps(dict(record), indent=2).encode())
        _fsync_dir(stage)
        return stage

    def commit(self, key: str, files: Mapping[str, bytes], **info: Any) -> bool:
        """Store a finished run's files as ``runs/<key>/`` in one rename.

        Returns ``False`` (and stores nothing) when the run had already finished:
        a finished result is never replaced. A failure record of the same key is
        removed afterwards.
        """
        self._require_lock()
        missing = [f for f in RUN_FILES if f not in files]
        if missing:
            raise ResultsError(f"run {key}: expected files {', '.join(RUN_FILES)}, missing {', '.join(missing)}")
        record = {"key": key, "run_id": uuid.uuid4().hex, "finished_at": time.time(),
                  "host": socket.gethostname(), **info}
        stage = self._stage(files, DONE, record)
        target = self.runs_dir / key
        try:
            os.rename(stage, target)
        except OSError as exc:
            shutil.rmtree(stage, ignore_errors=True)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or target.exists():
                self.drop_checkpoint(key)
                return False
            raise
        _fsync_dir(self.runs_dir)
        old = self.failed_dir / key
        if old.exists():
            self._remove(old)
        self.drop_checkpoint(key)
        return True

    def drop_checkpoint(self, key: str) -> None:
        """Remove a run's checkpoint folder, if any (its run has committed)."""
        ckpt = self.checkpoint_dir(key)
        if ckpt.exists():
            self._remove(ckpt)

    def tidy_checkpoints(self) -> None:
        """Remove the checkpoints folder when no run in progress has one left."""
        with contextlib.suppress(OSError):
            (self.staging_dir / CHECKPOINTS).rmdir()

    def record_failure(self, key: str, *, config_yaml: str, error: str, **info: Any) -> None:
        """Store a failed run's config and error text as ``failed/<key>/`` (replacing an older one)."""
        self._require_lock()
        previous = self.failure(key).get("attempts", 0) if (self.failed_dir / key / FAILED_MARK).is_file() else 0
        last_line = next((ln for ln in reversed(error.strip().splitlines()) if ln.strip()), "")
        record = {"key": key, "failed_at": time.time(), "attempts": int(previous) + 1, "error": last_line, **info}
        stage = self._stage({"config.yaml": config_yaml.encode(), "error.txt": error.encode()}, FAILED_MARK, record)
        target = self.failed_dir / key
        if target.exists():
            self._remove(target)
        os.rename(stage, target)
        _fsync_dir(self.failed_dir)

    def _remove(self, path: Path) -> None:
        """Move ``path`` into staging (one rename), then delete it."""
        trash = self.staging_dir / f"trash-{uuid.uuid4().hex}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
